"""The per-image worst case over attacks, the `strong` suite, and their validation in the CLI."""

import json
import math
from types import SimpleNamespace

import pytest
import torch

from hf_ssl_robust.attack_suites import SUITES, attacks_for_task, check_plan, expand_attacks
from hf_ssl_robust.benchmark import BenchmarkConfig
from hf_ssl_robust.cli import main as cli_main
from hf_ssl_robust.data import get_dataset_spec
from hf_ssl_robust.metrics.functional import MeanIoUMeter, depth_stats, segmentation_stats
from hf_ssl_robust.results import load_records, markdown_tables
from hf_ssl_robust.worst_case import worst_predictions

SPEC = SimpleNamespace(ignore_index=255, max_depth=10.0, num_classes=4)


def test_worst__classification_wrong_if_any_attack_is():
    target = torch.tensor([0, 1, 2, 3])
    preds = {"a": torch.tensor([0, 0, 2, 3]), "b": torch.tensor([1, 1, 2, 0])}
    worst, picked = worst_predictions("classification", preds, target, SPEC)
    assert (worst != target).tolist() == [True, True, False, True]
    assert picked.tolist() == [1, 0, 0, 1]  # ties (image 2: both right) keep the first attack


def test_worst__segmentation_lowest_pixel_accuracy_enters_miou():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 4, (5, 6, 6), generator=g)
    target[0, :3] = 255
    preds = {n: torch.where(torch.rand(5, 6, 6, generator=g) < p, target.clamp(max=3), torch.randint(0, 4, (5, 6, 6), generator=g))
             for n, p in [("a", 0.3), ("b", 0.6), ("c", 0.5)]}
    worst, picked = worst_predictions("segmentation", preds, target, SPEC)
    # plain re-implementation: per image, the attack with the fewest correct labelled pixels
    names = list(preds)
    meter = MeanIoUMeter(num_labels=4)
    for i in range(5):
        labelled = target[i] != 255
        acc = [float((preds[n][i] == target[i])[labelled].float().mean()) for n in names]
        best = min(range(len(names)), key=lambda k: (acc[k], k))
        assert picked[i] == best and torch.equal(worst[i], preds[names[best]][i])
        meter.update(preds[names[best]][i : i + 1], target[i : i + 1])
    ours = MeanIoUMeter(num_labels=4)
    ours.update(worst, target)
    assert ours.compute() == meter.compute()
    stats = segmentation_stats(worst, target, 4)
    assert int(stats["intersection"].sum()) == sum(int((preds[names[int(picked[i])]][i] == target[i]).sum()) for i in range(5))


def test_worst__depth_highest_rmse():
    target = torch.full((3, 4, 4), 2.0)
    target[2] = 0.0  # no valid pixel: nothing to hurt, first attack kept
    preds = {"a": torch.full((3, 4, 4), 2.5), "b": torch.full((3, 4, 4), 2.0)}
    preds["b"][1] = 4.0
    worst, picked = worst_predictions("depth", preds, target, SPEC)
    assert picked.tolist() == [0, 1, 0]
    rmse = depth_stats(worst, target)["rmse"]
    assert rmse[:2].tolist() == [0.5, 2.0] and math.isnan(rmse[2])


def test_attack_names__apgd_losses_and_the_strong_suite():
    assert attacks_for_task(["embed", "apgd", "apgd:dlr", "segpgd"], "classification") == ["embed", "apgd:ce", "apgd:dlr"]
    assert attacks_for_task(["apgd"], "depth") == ["apgd:depth"]
    strong = {t: attacks_for_task(["strong"], t) for t in ("classification", "segmentation", "depth")}
    assert strong == {"classification": ["embed", "pgd", "apgd:ce", "apgd:dlr"],
                      "segmentation": ["embed", "segpgd", "apgd:masked_ce", "apgd:balanced_masked_ce", "apgd:js",
                                       "apgd:masked_spherical"],
                      "depth": ["embed", "depth_pgd", "apgd:depth", "apgd:depth_tol"]}
    # APGD-T joins `strong` only for a dataset with >= 10 classes (AutoAttack's 9 targets); by name it always applies
    assert attacks_for_task(["strong"], "classification", num_classes=10) == strong["classification"] + ["apgd_t"]
    assert attacks_for_task(["strong"], "classification", num_classes=6) == strong["classification"]
    assert attacks_for_task(["strong"], "segmentation", num_classes=150) == strong["segmentation"]
    assert attacks_for_task(["apgd_t", "square"], "classification", num_classes=6) == ["apgd_t", "square"]
    assert attacks_for_task(["square", "square:js"], "segmentation") == ["square", "square:js"]
    assert attacks_for_task(["square:js"], "depth") == []
    assert expand_attacks(["strong", "pgd"]) == [n for n in SUITES["strong"] if n != "apgd_t"]  # duplicates dropped
    assert expand_attacks(["strong", "pgd"], num_classes=10) == SUITES["strong"]
    assert BenchmarkConfig(encoders=["x"], attacks=["strong"]).worst_case is True
    cfg = BenchmarkConfig(encoders=["x"], attacks=["strong"], tasks=["depth"])  # members for other tasks are fine
    assert cfg.attack_plan == {"depth": ["embed", "depth_pgd", "apgd:depth", "apgd:depth_tol"]}


@pytest.mark.parametrize("kwargs,match", [
    (dict(attacks=["apgd:cw"]), r"Unknown attack loss 'cw'; available per task: classification: ce, dlr"),
    (dict(attacks=["pgd:ce"]), r"Only apgd and square take a loss"),
    (dict(attacks=["square:dlr"], tasks=["depth"]), r"'square:dlr' is a classification loss but the tasks are \['depth'\]"),
    (dict(attacks=["apgd:dlr"], tasks=["segmentation"]), r"'apgd:dlr' is a classification loss but the tasks are \['segmentation'\]; losses for them: segmentation: \['masked_ce'"),
    (dict(attacks=["embed", "pgd"], worst_case=True), r"--worst_case .* \{'segmentation': \['embed'\], 'depth': \['embed'\]\}"),
    (dict(attacks=["pgd"], tasks=["classification"], worst_case=True), r"fewer than two"),
    (dict(attacks=["apgd"], tasks=["classification", "depth"], progressive=True), r"--progressive .* add --tasks segmentation"),
    (dict(attacks=["segpgd", "embed"], progressive=True), r"--progressive .*none is run"),
])
def test_check_plan__bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        check_plan(kwargs["attacks"], kwargs.get("tasks", ["classification", "segmentation", "depth"]), kwargs.get("worst_case", False),
                   kwargs.get("progressive", False))


def test_progressive__segmentation_apgd_only_and_in_the_cell_key():
    from hf_ssl_robust.attack_suites import build_attack
    from hf_ssl_robust.benchmark import _cell_key
    from hf_ssl_robust.tasks import get_task

    cfg = BenchmarkConfig(encoders=["x"], attacks=["strong"], progressive=True)
    for task in cfg.tasks:
        spec = get_dataset_spec("shapes", task=task)
        for name in cfg.attack_plan[task]:
            attack = build_attack(name, get_task(task), spec, eps=8 / 255, steps=4, progressive=cfg.progressive)
            assert getattr(attack, "progressive", False) == (task == "segmentation" and name.startswith("apgd")), (task, name)
    plain = BenchmarkConfig(encoders=["x"], attacks=["strong"])
    # cells computed without the schedule are not reused for it (and other tasks' cells are unaffected)
    assert _cell_key(cfg, "x", "segmentation", "shapes", 8 / 255) != _cell_key(plain, "x", "segmentation", "shapes", 8 / 255)
    assert _cell_key(cfg, "x", "depth", "shapes", 8 / 255) == _cell_key(plain, "x", "depth", "shapes", 8 / 255)


@pytest.mark.parametrize("argv,match", [
    (["--attacks", "apgd:dlr", "--tasks", "depth"], "is a classification loss"),
    (["--attacks", "pgd", "--worst_case"], "--worst_case takes"),
    (["--attacks", "apgd:nope"], "Unknown attack loss 'nope'"),
    (["--attacks", "pgd", "segpgd", "--progressive"], "--progressive is SEA's radius schedule"),
])
def test_cli__bad_attack_settings_exit_2_before_any_work(argv, match, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli_main(["benchmark", "--encoders", str(tmp_path / "missing"), "--output_dir", str(out), *argv]) == 2
    assert match in capsys.readouterr().err
    assert not out.exists()  # nothing was started


def test_benchmark__strong_suite_worst_rows_without_extra_forwards(tiny_dinov2_path, tmp_path, monkeypatch, capsys):
    import hf_ssl_robust.evaluation as evaluation

    seen = []  # every evaluated batch: predictions of each attack and of the worst case
    real = evaluation.evaluate

    def spy(*args, **kwargs):
        user = kwargs.get("on_batch")
        kwargs["on_batch"] = lambda batch, preds: (seen.append((batch, preds)), user and user(batch, preds))
        return real(*args, **kwargs)

    monkeypatch.setattr("hf_ssl_robust.benchmark.evaluate", spy)
    argv = ["benchmark", "--encoders", tiny_dinov2_path, "--attacks", "strong", "--eps", "8/255", "--steps", "2",
            "--max_eval_samples", "4", "--num_train_samples", "16", "--head_epochs", "1", "--image_size", "32",
            "--batch_size", "4", "--num_examples", "0", "--output_dir", str(tmp_path)]
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert "Attacks per task (+ per-image worst case): classification: embed pgd apgd:ce apgd:dlr;" in printed
    assert "Worst case" in printed and "APGD-DLR" in printed and "APGD-JS" in printed
    records = load_records(tmp_path / "results.json")
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["worst_case"] is True and info["attacks_per_task"]["depth"] == ["embed", "depth_pgd", "apgd:depth", "apgd:depth_tol"]
    value = lambda task, attack, metric: next(r["value"] for r in records  # noqa: E731
                                              if (r["task"], r["attack"], r["metric"]) == (task, attack, metric))
    plan = info["attacks_per_task"]
    # classification: wrong under any attack -> the worst accuracy is at most every attack's
    assert value("classification", "worst", "accuracy") <= min(value("classification", a, "accuracy") for a in plan["classification"])
    # depth: per image the highest RMSE -> mean RMSE at least every attack's
    assert value("depth", "worst", "rmse") >= max(value("depth", a, "rmse") for a in plan["depth"]) - 1e-12
    # segmentation: recompute the worst row from the predictions the evaluation made
    (batch, preds), = [(b, p) for b, p in seen if "mask" in b]
    spec = get_dataset_spec("shapes", task="segmentation")
    pool = ["none", *plan["segmentation"]]  # the clean prediction is a candidate too
    worst, _ = worst_predictions("segmentation", {a: preds[a] for a in pool}, batch["mask"], spec)
    assert torch.equal(worst, preds["worst"])
    meter = MeanIoUMeter(num_labels=spec.num_classes, ignore_index=spec.ignore_index)
    meter.update(worst, batch["mask"])
    bound = min([meter.compute()["mean_iou"]] + [value("segmentation", a, "mean_iou") for a in pool])
    assert value("segmentation", "worst", "mean_iou") == pytest.approx(bound)


def test_evaluate__worst_case_needs_no_extra_forward(tiny_encoder):
    from hf_ssl_robust.attacks import make_attack
    from hf_ssl_robust.evaluation import evaluate
    from hf_ssl_robust.heads import SSLForImageClassification
    from hf_ssl_robust.tasks import get_task

    model = SSLForImageClassification.from_encoder(tiny_encoder, num_labels=4, image_size=32).eval()
    calls = []
    model.encoder.register_forward_hook(lambda *a: calls.append(1))
    g = torch.Generator().manual_seed(0)
    loader = [{"pixel_values": torch.rand(4, 3, 32, 32, generator=g), "labels": torch.randint(0, 4, (4,), generator=g)} for _ in range(2)]
    attacks = {"embed": make_attack("embed", steps=2, seed=0), "apgd:dlr": make_attack("apgd", loss="dlr", steps=2, seed=0)}
    counts, results = [], []
    for worst_case in (False, True):
        calls.clear()
        results.append(evaluate(model, loader, get_task("classification"), SPEC, attacks=attacks, worst_case=worst_case))
        counts.append(len(calls))
    assert counts[0] == counts[1] and "worst" in results[1] and "worst" not in results[0]
    assert {k: v for k, v in results[1].items() if k != "worst"} == results[0]
    assert results[1]["worst"]["accuracy"] <= min(results[0][a]["accuracy"] for a in attacks)


def test_tables_and_space__show_apgd_and_worst_rows(tmp_path):
    from hf_ssl_robust.results import plot_robustness_curves
    from hf_ssl_robust.space_backend import leaderboard

    base = dict(encoder="enc", task="classification", dataset="shapes", steps=20, metric="accuracy", num_samples=8)
    values = {("none", 0.0): 0.9, ("worst", 8 / 255): 0.1, ("apgd:dlr", 8 / 255): 0.2, ("pgd", 8 / 255): 0.3, ("embed", 8 / 255): 0.05}
    records = [dict(base, attack=a, eps=e, value=v) for (a, e), v in values.items()]
    md = markdown_tables(records)
    assert "| Dataset | Encoder | Clean | EmbedAttack | PGD | APGD-DLR | Worst case |" in md
    assert "| shapes | enc | 0.90 | 0.05 | 0.30 | 0.20 | 0.10 |" in md
    headers, rows = leaderboard(records)
    assert rows[0][headers.index("attack")] == "worst" and rows[0][headers.index("attacked (worst)")] == 0.1
    assert plot_robustness_curves(records, tmp_path / "curves.png").is_file()


def test_build_attack__square_apgd_t_and_sea_losses_get_the_dataset_settings():
    from hf_ssl_robust.attack_suites import build_attack
    from hf_ssl_robust.data import get_dataset_spec
    from hf_ssl_robust.tasks import get_task

    seg, dep = get_dataset_spec("shapes", task="segmentation"), get_dataset_spec("shapes", task="depth")
    sq = build_attack("square", get_task("segmentation"), seg, eps=4 / 255, steps=20, seed=0, square_queries=500)
    assert (sq.name, sq.loss, sq.steps, sq.ignore_index, sq.eps) == ("square", "pixel_margin", 500, seg.ignore_index, 4 / 255)
    sq = build_attack("square", get_task("depth"), dep, steps=20)
    assert (sq.loss, sq.steps, sq.max_depth) == ("depth", 20, float(dep.max_depth))
    assert build_attack("square:js", get_task("segmentation"), seg).loss == "js"
    cls = get_dataset_spec("shapes", task="classification")  # 6 classes: 5 runner-ups to target
    t = build_attack("apgd_t", get_task("classification"), cls, steps=3)
    assert (t.name, t.target_classes, t.track_best) == ("apgd_t", cls.num_classes - 1, True)
    sph = build_attack("apgd:masked_spherical", get_task("segmentation"), seg, progressive=True)
    assert (sph.loss, sph.progressive, sph.ignore_index) == ("masked_spherical", True, seg.ignore_index)

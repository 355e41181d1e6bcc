"""hf_ssl_robust.flags_cost: the warnings' evidence and cost on a tiny encoder, and its Markdown."""

import json
import math

import pytest

from hf_ssl_robust import evaluation, flags_cost
from hf_ssl_robust.data import get_dataset_spec
from hf_ssl_robust.data.synthetic import render_scenes
from hf_ssl_robust.encoders import load_encoder
from hf_ssl_robust.tasks import get_task


@pytest.fixture(scope="module")
def report(tiny_dinov2_path):
    return flags_cost.measure(tiny_dinov2_path, num_images=16, tasks=["classification"], square_queries=3, train_scenes=64)


def test_flags_cost__report_of_one_task(report):
    t = report["tasks"]["classification"]
    assert report["square_queries"] == 3 and t["images"] == 16 and t["same_metrics"]
    assert t["cpu_seconds_without_checks"] > 0 and t["cpu_seconds_with_checks"] > 0
    assert math.isclose(t["cost_share"], (t["cpu_seconds_with_checks"] - t["cpu_seconds_without_checks"]) / t["cpu_seconds_without_checks"], abs_tol=0.01)
    assert set(t["attacks"]) == {"none", "embed@20", "pgd@20", "worst", "pgd@2", "apgd:ce@100"}
    assert set(t["attacks"]["pgd@20"]["checkpoints"]) == {"5", "10", "15", "20"}
    assert set(t["square_check_flags"]) == {"embed", "pgd"}
    assert set(t["logits_x1e4"]) == {"none", "pgd", "apgd:dlr"}


def test_flags_cost__render_quotes_the_report(report):
    text = flags_cost.render(report)
    t = report["tasks"]["classification"]
    assert f"| classification | {t['cpu_seconds_without_checks']:.2f} | {t['cpu_seconds_with_checks']:.2f} | {100 * t['cost_share']:.1f} % |" in text
    assert "+ Square check (3 queries, 16 images)" in text
    pgd2 = t["attacks"]["pgd@2"]
    row = next(line for line in text.splitlines() if line.startswith("| classification | PGD-2 |"))
    assert f"{pgd2['checkpoints']['1']:.2f} → {pgd2['checkpoints']['2']:.2f}" in row
    assert "| classification | PGD-20 (logits × 1e4) |" in text
    assert json.loads(json.dumps(report)) == report  # what main writes reads back the same


def test_flags_cost__checks_off_switches_every_check_off(tiny_dinov2_path):
    task, spec = get_task("classification"), get_dataset_spec("shapes", task="classification")
    scenes = render_scenes(32, 64, seed=1)
    model = flags_cost.fit_head(load_encoder(tiny_dinov2_path), "classification", spec, scenes, epochs=1)
    loader = [{"pixel_values": scenes["pixel_values"][:8], "labels": scenes["labels"][:8]}]
    attack = {"pgd": flags_cost.build_attack("pgd", task, spec, eps=8 / 255, step_size=2 / 255, steps=4, seed=0)}
    on, _ = flags_cost.timed_eval(model, loader, task, spec, attack)
    off, _ = flags_cost.timed_eval(model, loader, task, spec, attack, checks=False)
    assert "checkpoints" in on["pgd"] and "flags" in on["pgd"]
    assert "checkpoints" not in off["pgd"] and "flags" not in off["pgd"] and "zero_gradient_share" not in off["pgd"]
    assert off["pgd"]["accuracy"] == on["pgd"]["accuracy"]
    again, _ = flags_cost.timed_eval(model, loader, task, spec, attack)  # the patches are undone afterwards
    assert "checkpoints" in again["pgd"] and evaluation.observe_steps is not None


def test_flags_cost_main__bad_arguments_are_refused():
    with pytest.raises(SystemExit):
        flags_cost.main(["--num_images", "10"])
    with pytest.raises(SystemExit):
        flags_cost.main(["--square_queries", "0"])


def test_sync_readme__rewrites_and_checks_both_blocks(report, tmp_path):
    from hf_ssl_robust.strength import readme_block, sync_readme

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "strength.md").write_text("| a | b |\n")
    (docs / "flags_cost.json").write_text(json.dumps(report))
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- strength-results -->\nold\n<!-- /strength-results -->\nmid\n<!-- flags-cost -->\n"
                      "| classification | 9.99 |\n<!-- /flags-cost -->\nend\n")
    assert sync_readme(readme, docs, check=True) == ["strength-results", "flags-cost"]
    assert "old" in readme.read_text()  # --check writes nothing
    assert sync_readme(readme, docs) == ["strength-results", "flags-cost"]
    text = readme.read_text()
    assert readme_block(text, "strength-results") == "| a | b |\n"
    assert readme_block(text, "flags-cost") == flags_cost.render(report)
    assert text.startswith("intro\n") and "\nmid\n" in text and text.endswith("end\n")
    assert sync_readme(readme, docs, check=True) == []
    with pytest.raises(ValueError, match="lacks the block <!-- flags-cost -->"):
        readme_block("no markers", "flags-cost")
    (docs / "flags_cost.json").unlink()
    with pytest.raises(ValueError, match="flags_cost.json is missing"):
        sync_readme(readme, docs, check=True)


def test_flags_cost_render__last_quarter_share_by_hand():
    def task(metric, higher, clean, ckpt, flags):
        return {"metric": metric, "higher_is_better": higher, "images": 32, "cpu_seconds_without_checks": 10.0,
                "cpu_seconds_with_checks": 10.4, "cost_share": 0.04, "cpu_seconds_with_square_check": 25.4, "square_check_share": 1.5,
                "attacks": {"none": {metric: clean, "flags": []},
                            "pgd@20": {metric: ckpt["20"], "flags": flags, "checkpoints": ckpt, "zero_gradient_share": 0.0}}}

    report = {"encoder": "enc", "eps": "8/255", "steps": 20, "square_queries": 1000, "black_box_samples": 16, "train_scenes": 512,
              "tasks": {"classification": task("accuracy", True, 0.9, {"5": 0.6, "10": 0.4, "15": 0.3, "20": 0.2}, ["not_converged"]),
                        "depth": task("rmse", False, 1.0, {"5": 1.5, "10": 1.8, "15": 2.0, "20": 2.5}, [])}}
    lines = flags_cost.render(report).splitlines()
    assert "| classification | 10.00 | 10.40 | 4.0 % | 25.40 | 150 % |" in lines
    assert "| classification | PGD-20 | 0.20 | 0.30 → 0.20 | 14.3 % | 0.00 | not_converged ⚠N |" in lines  # 0.1 of 0.7
    assert "| depth | PGD-20 | 2.500 | 2.000 → 2.500 | 33.3 % | 0.00 | – |" in lines  # 0.5 m of 1.5 m

"""README's embedded-default figures are the committed run's, and the command still prints them."""

import json
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from hf_ssl_robust import embedded_report
from hf_ssl_robust.benchmark import BenchmarkConfig, run_benchmark
from hf_ssl_robust.encoders import ASSETS_DIR
from hf_ssl_robust.results import display_name, format_eps, load_records

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "docs" / "embedded_default"


def committed_records() -> list[dict]:
    return load_records(RESULTS_DIR / "results.json")


@pytest.mark.parametrize("name", sorted(embedded_report.BLOCKS))
def test_readme__blocks_are_the_committed_results(name):
    readme = (REPO / "README.md").read_text()
    assert embedded_report.block(readme, name) == embedded_report.rendered(RESULTS_DIR)[name], (
        f"README's embedded-default {name} block differs from docs/embedded_default/: run python scripts/readme_results.py"
    )


def test_readme__check_mode_catches_an_edited_number(tmp_path):
    readme = (REPO / "README.md").read_text()
    block = embedded_report.block(readme, "results")
    first = next(r for r in committed_records() if r["attack"] == "none" and r["metric"] == "accuracy")
    shown = f"{first['value']:.2f}"
    edited = block.replace(f"| {shown} ", f"| {float(shown) + 0.5:.2f} ", 1)  # the value, with or without its ±
    assert edited != block
    (tmp_path / "README.md").write_text(readme.replace(block, edited))
    check = ["--check", "--results_dir", str(RESULTS_DIR)]
    assert embedded_report.main([*check, "--readme", str(tmp_path / "README.md")]) == 1
    assert embedded_report.main([*check, "--readme", str(REPO / "README.md")]) == 0


@pytest.mark.parametrize("card", sorted(p.name for p in ASSETS_DIR.iterdir() if (p / "README.md").is_file()))
def test_cards__model_index_is_the_committed_results(card):
    """Every number in a bundled encoder's card (and its copy in model_cards/) is a committed record."""
    mine = {
        (r["task"], r["metric"], r["attack"], format_eps(float(r["eps"]))): r["value"]
        for r in committed_records()
        if display_name(r["encoder"]) == card
    }
    assert mine, f"docs/embedded_default/results.json has no records of the bundled encoder {card}"
    for path in (ASSETS_DIR / card / "README.md", REPO / "model_cards" / f"{card}.md"):
        results = ModelCard.load(path).data.eval_results
        tasks = {r["task"] for r in committed_records() if display_name(r["encoder"]) == card}
        assert len({res.task_type for res in results}) == len(tasks), path  # every task has its numbers in the card
        for res in results:
            task = {"image-classification": "classification", "image-segmentation": "segmentation", "depth-estimation": "depth"}[res.task_type]
            args = res.metric_args
            key = (task, res.metric_type, args["attack"], str(args["eps"]))
            assert res.metric_value == pytest.approx(mine[key], abs=1e-6), (path, key)


def test_embedded_default__clean_accuracy_reproduces(tmp_path):
    """Re-run the committed run's clean classification cell for its first encoder: same number.

    Head training and scoring are seeded; the tolerance is one image, for float differences between
    machines. This fails when code changes move the embedded default's numbers without a re-run."""
    info = json.loads((RESULTS_DIR / "run_info.json").read_text())
    encoder = info["encoders"][0]
    committed = [
        r for r in committed_records()
        if r["encoder"] == encoder and r["task"] == "classification" and r["attack"] == "none" and r["metric"] == "accuracy"
    ]  # fmt: skip
    assert len(committed) == 1
    cfg = {k: v for k, v in info["config"].items() if k in BenchmarkConfig.__dataclass_fields__}
    cfg.update(encoders=[encoder], tasks=["classification"], attacks=["pgd"], steps=1, eps=["8/255"], num_examples=0,
               output_dir=str(tmp_path), heads_dir=None)  # fmt: skip
    records = run_benchmark(BenchmarkConfig(**cfg))
    clean = [r for r in records if r["attack"] == "none" and r["metric"] == "accuracy"]
    assert clean[0]["num_samples"] == committed[0]["num_samples"]
    assert clean[0]["value"] == pytest.approx(committed[0]["value"], abs=1.01 / committed[0]["num_samples"])


def test_step_table__names_the_earlier_run_of_a_resumed_step():
    """The making-of table reports the last revision's run, and for a step that run resumed as finished (or
    skipped), the earlier run that did the work."""
    line = lambda step, rev, sec: dict(step=step, revision=rev, started="2026-01-01T00:00:00Z", seconds=sec, exit=0)  # noqa: E731
    steps = [line("pretraining", "a" * 40, 1600), line("pretraining", "b" * 40, 4), line("supervised_ceiling", "a" * 40, 260),
             line("benchmark", "b" * 40, 300)]
    table = embedded_report.step_table(steps)
    assert "at revision bbbbbbb" in table
    assert "| pretraining | 0 min 4 s | 26 min 40 s at aaaaaaa" in table
    assert "| supervised_ceiling | kept | 4 min 20 s at aaaaaaa" in table
    assert "| benchmark | 5 min 0 s | |" in table

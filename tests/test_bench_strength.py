"""hf_ssl_robust.strength (and its shim scripts/bench_strength.py) on the tiny encoder: it runs the strong
suite and Square, counts passes per image, writes its tables with the Square and Flags columns."""

import json
import runpy
import sys
from pathlib import Path

from hf_ssl_robust import strength
from hf_ssl_robust.diagnostics import flag_marker
from hf_ssl_robust.results import load_records

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_strength.py"
SMOKE = ["--eps", "8/255", "--steps", "2", "--square_queries", "5", "--max_eval_samples", "4", "--num_train_samples", "16",
         "--head_epochs", "1", "--image_size", "32", "--batch_size", "4", "--cost_images", "2"]


def test_strength__tables_flags_square_and_pass_counts(tiny_dinov2_path, tmp_path):
    report = strength.main(["--encoder", tiny_dinov2_path, *SMOKE, "--output_dir", str(tmp_path)])
    assert report == json.loads((tmp_path / "strength.json").read_text())
    assert report["square_queries"] == 5
    cost = {(r["task"], r["attack"]): r for r in report["cost"]}
    assert set(cost) == {(t, a) for t, names in report["attacks_per_task"].items() for a in names}
    assert all("square" in names for names in report["attacks_per_task"].values())
    # T = 2 steps: two differentiated passes each; EmbedAttack embeds the clean images once more,
    # track_best (APGD) evaluates the final iterate once more
    assert (cost["classification", "pgd"]["forward_backward"], cost["classification", "pgd"]["forward_only"]) == (2, 0)
    assert (cost["segmentation", "embed"]["forward_backward"], cost["segmentation", "embed"]["forward_only"]) == (2, 1)
    assert (cost["depth", "apgd:depth_tol"]["forward_backward"], cost["depth", "apgd:depth_tol"]["forward_only"]) == (2, 1)
    # Square: no backward; the start point + one forward per query per image (dense tasks never stop early),
    # classification at most that (an image stops once misclassified)
    assert (cost["segmentation", "square"]["forward_backward"], cost["segmentation", "square"]["forward_only"]) == (0, 6)
    assert cost["classification", "square"]["forward_backward"] == 0 and 1 <= cost["classification", "square"]["forward_only"] <= 6
    rows = {r["task"]: r for r in report["strength"]}
    assert set(rows) == {"classification", "segmentation", "depth"}
    assert all(r["worst"] is not None and r["apgd_loss"].startswith("apgd:") and r["square"] is not None for r in rows.values())
    assert rows["classification"]["worst"] <= min(rows["classification"]["paper"], rows["classification"]["square"])
    # every row's flags are those the benchmark's records carry for that cell, attack by attack
    records = load_records(tmp_path / "benchmark" / "results.json")
    # the clean column is the encoder's own clean number; the image-free prior's is a column of its own
    for task, row in rows.items():
        clean = {r["encoder"]: r["value"] for r in records if r["task"] == task and r["metric"] == row["metric"] and r["attack"] == "none"}
        assert set(clean) == {tiny_dinov2_path, "prior"}, clean
        assert (row["clean"], row["prior"]) == (clean[tiny_dinov2_path], clean["prior"])
    for task, row in rows.items():
        metric = row["metric"]
        expected = {r["attack"]: r["flags"] for r in records if r["task"] == task and r["metric"] == metric and r["flags"]}
        assert row["flags"] == expected
    flagged = [(t, a, f) for t, r in rows.items() for a, f in r["flags"].items()]
    assert flagged, "2-step attacks should leave some cell not converged"
    md = (tmp_path / "strength.md").read_text()
    header = "| Task (metric) | ε | Prior (no image) | Clean | EmbedAttack | Paper attack | Best APGD | Square | Worst case | Flags |"
    assert header in md and "strong suite" in md and "Square: passes" in md and "(Square: 5 queries)" in md
    table = md.split(header)[1].split("\n\n")[0]
    for task, row in rows.items():
        line = next(x for x in table.splitlines() if x.startswith(f"| {task} "))
        cells = line.split(" | ")  # task, ε, prior, clean, embed, paper, apgd, square, worst, flags
        assert cells[3].startswith(f"{row['clean']:.3f}" if task == "depth" else f"{row['clean']:.2f}")
        assert cells[7].startswith(f"{row['square']:.3f}" if task == "depth" else f"{row['square']:.2f}")
        for attack, flags in row["flags"].items():
            assert flag_marker(flags) in line.split(" | ")[-1]
    assert "± " in table  # the 95 % intervals of the records
    assert "`not_converged`" in md.split(header)[1]  # the legend under the table


def test_pass_counter__counts_images_not_calls():
    import torch

    layer = torch.nn.Conv2d(3, 1, 1)
    counter = strength.PassCounter(layer)
    x = torch.rand(4, 3, 2, 2)
    layer(x[:1])  # Square queries only the images it has not fooled yet
    layer(x.requires_grad_())
    with torch.no_grad():
        layer(x)
    counter.handle.remove()
    layer(x)
    assert (counter.with_grad, counter.without_grad) == (4, 5)


def test_bench_strength_script__is_the_package_program(tiny_dinov2_path, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["bench_strength.py", "--encoder", tiny_dinov2_path, *SMOKE, "--tasks", "classification",
                                      "--output_dir", str(tmp_path)])
    runpy.run_path(str(SCRIPT), run_name="__main__")
    md = (tmp_path / "strength.md").read_text()
    assert "| Square | Worst case | Flags |" in md and "| classification | Square |" in md


def test_strength_args__bad_square_budget_is_refused():
    import pytest

    with pytest.raises(SystemExit):
        strength.parse_args(["--square_queries", "0"])
    with pytest.raises(ValueError, match="Cannot read eps"):
        strength.parse_args(["--eps", "eight"])


def test_readme__strength_blocks_are_the_committed_runs():
    """README's strength/cost tables are `docs/strength/strength.md` of a real run and the warnings' cost block
    is `flags_cost.render(docs/strength/flags_cost.json)`, never typed (`python scripts/readme_strength.py`)."""
    repo = SCRIPT.parents[1]
    assert strength.sync_readme(repo / "README.md", repo / "docs" / "strength", check=True) == [], (
        "README's strength blocks differ from docs/strength/: run python scripts/readme_strength.py")
    report = json.loads((repo / "docs" / "strength" / "strength.json").read_text())
    assert report["strength"] and report["cost"]

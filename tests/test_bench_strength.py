"""Smoke test of scripts/bench_strength.py on the tiny encoder: it runs, counts passes, writes its tables."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_strength.py"


def test_bench_strength__tables_and_pass_counts(tiny_dinov2_path, tmp_path):
    spec = importlib.util.spec_from_file_location("bench_strength", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--encoder", tiny_dinov2_path, "--eps", "8/255", "--steps", "2", "--max_eval_samples", "4", "--num_train_samples", "16",
                "--head_epochs", "1", "--image_size", "32", "--batch_size", "4", "--cost_images", "2", "--output_dir", str(tmp_path)])
    report = json.loads((tmp_path / "strength.json").read_text())
    cost = {(r["task"], r["attack"]): r for r in report["cost"]}
    assert set(cost) == {(t, a) for t, names in report["attacks_per_task"].items() for a in names}
    # T = 2 steps: two differentiated passes each; EmbedAttack embeds the clean images once more,
    # track_best (APGD) evaluates the final iterate once more
    assert (cost["classification", "pgd"]["forward_backward"], cost["classification", "pgd"]["forward_only"]) == (2, 0)
    assert (cost["segmentation", "embed"]["forward_backward"], cost["segmentation", "embed"]["forward_only"]) == (2, 1)
    assert (cost["depth", "apgd:depth_tol"]["forward_backward"], cost["depth", "apgd:depth_tol"]["forward_only"]) == (2, 1)
    rows = {r["task"]: r for r in report["strength"]}
    assert set(rows) == {"classification", "segmentation", "depth"}
    assert all(r["worst"] is not None and r["apgd_loss"].startswith("apgd:") for r in rows.values())
    assert rows["classification"]["worst"] <= rows["classification"]["paper"]
    md = (tmp_path / "strength.md").read_text()
    assert "| Task (metric) | ε | Clean | EmbedAttack | Paper attack | Best APGD | Worst case |" in md and "strong suite" in md


def test_readme__strength_block_is_the_committed_run():
    """README's strength/cost tables are `docs/strength/strength.md` of a real run, never typed."""
    repo = SCRIPT.parents[1]
    readme = (repo / "README.md").read_text()
    begin, end = "<!-- strength-results -->\n", "<!-- /strength-results -->"
    block = readme[readme.index(begin) + len(begin): readme.index(end)]
    committed = repo / "docs" / "strength" / "strength.md"
    assert block == (committed.read_text() if committed.is_file() else "")
    if committed.is_file():
        report = json.loads((repo / "docs" / "strength" / "strength.json").read_text())
        assert report["strength"] and report["cost"]

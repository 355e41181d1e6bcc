import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import hf_ssl_robust.benchmark as bench
from hf_ssl_robust.attacks import make_attack
from hf_ssl_robust.benchmark import BenchmarkConfig, run_benchmark
from hf_ssl_robust.cli import main as cli_main
from hf_ssl_robust.results import RECORD_KEYS, load_records

REPO = Path(__file__).resolve().parents[1]
TINY = dict(steps=2, max_eval_samples=8, num_train_samples=32, head_epochs=1, image_size=32, batch_size=4, num_examples=2)


def _cfg(encoder, out, **kw):
    return BenchmarkConfig(encoders=[encoder], output_dir=str(out), **{**TINY, **kw})


def test_run_benchmark__all_tasks_attacks_and_outputs(tiny_dinov2_path, tmp_path):
    records = run_benchmark(_cfg(tiny_dinov2_path, tmp_path, eps=["2/255", "8/255"]))
    assert all(set(RECORD_KEYS) <= set(r) for r in records)
    cells = {(r["task"], r["attack"], round(r["eps"] * 255)) for r in records}
    expected = {("classification", "none", 0), ("segmentation", "none", 0), ("depth", "none", 0)}
    for task, attack in [("classification", "pgd"), ("segmentation", "segpgd"), ("depth", "depth_pgd")]:
        for e in (2, 8):
            expected |= {(task, attack, e), (task, "embed", e)}
    assert cells == expected
    assert all(r["num_samples"] == 8 for r in records)
    assert load_records(tmp_path / "results.json") == records
    md = (tmp_path / "results.md").read_text()
    assert "Table 1" in md and "SegPGD (8/255)" in md and "DepthPGD (2/255)" in md
    for name in ["results.csv", "robustness_curves.png", "run_info.json"]:
        assert (tmp_path / name).is_file()
    assert len(list(tmp_path.glob("examples_*.png"))) == 6
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["config"]["eps"] == ["2/255", "8/255"] and "torch" in info["versions"]


def test_run_benchmark__resumes_after_interruption(tiny_dinov2_path, tmp_path, monkeypatch):
    cfg = _cfg(tiny_dinov2_path, tmp_path, tasks=["classification", "depth"], attacks=["embed", "pgd", "depth_pgd"])
    real = bench._run_cell
    calls = []

    def crash_on_second(cfg_, key, *args):
        calls.append(key["task"])
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated interruption")
        return real(cfg_, key, *args)

    monkeypatch.setattr(bench, "_run_cell", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(cfg)
    assert len(list((tmp_path / "cells").glob("*.json"))) == 1  # the finished cell survived

    calls.clear()
    monkeypatch.setattr(bench, "_run_cell", lambda cfg_, key, *a: (calls.append(key["task"]), real(cfg_, key, *a))[1])
    records = run_benchmark(cfg)
    assert calls == ["depth"]  # only the interrupted cell ran again; its head was reloaded, not retrained
    assert {r["task"] for r in records} == {"classification", "depth"}

    calls.clear()
    assert run_benchmark(cfg) == records and calls == []  # nothing left to do


def test_cli_benchmark__eps_fraction_and_tables(tiny_dinov2_path, tmp_path, capsys):
    argv = ["benchmark", "--encoders", tiny_dinov2_path, "--tasks", "classification", "--attacks", "embed", "pgd",
            "--eps", "8/255", "--steps", "2", "--max_eval_samples", "8", "--num_train_samples", "32",
            "--head_epochs", "1", "--image_size", "32", "--output_dir", str(tmp_path)]
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    assert "| Dataset | Encoder | Clean | EmbedAttack | PGD |" in out
    assert f"0 cell(s) reused from {tmp_path / 'cells'}, 1 computed" in out
    records = load_records(tmp_path / "results.json")
    assert {r["eps"] for r in records if r["attack"] != "none"} == {8 / 255}
    assert cli_main(argv) == 0  # the same run again: said, not silent
    assert "1 cell(s) reused" in (out := capsys.readouterr().out) and "0 computed (nothing new" in out


@pytest.mark.parametrize("argv,match", [(["--attacks", "fgsm"], "Unknown attack"), (["--eps", "8/0"], "fraction"),
                                        (["--tasks", "pose"], "Unknown task"), (["--batch_size", "big"], "positive integer or 'auto'"),
                                        (["--batch_size", "0"], "positive integer or 'auto'")])
def test_cli_benchmark__bad_arguments_give_clear_errors(argv, match, capsys):
    assert cli_main(["benchmark", *argv]) == 2
    assert match in capsys.readouterr().err


def test_batch_size_auto__measured_on_the_largest_image(monkeypatch):
    """Mixed sizes: the batch is sized on the largest scanned image, not on the first one."""
    sizes = [(16, 16), (24, 40), (32, 48), (16, 24)]
    data = [{"pixel_values": torch.rand(3, h, w), "label": torch.tensor(0), "index": torch.tensor(i)} for i, (h, w) in enumerate(sizes)]
    assert tuple(bench.largest_item(data)["pixel_values"].shape[-2:]) == (32, 48)
    assert tuple(bench.largest_item(data, max_scan=2)["pixel_values"].shape[-2:]) == (16, 24)  # items 0 and 3 only

    seen = []

    class Probe:
        surface = "model"

        def perturb(self, model, x, target):
            seen.append(tuple(x.shape))

    monkeypatch.setattr(bench.dataclasses, "replace", lambda attack, **kw: attack)
    assert bench.auto_batch_size(None, {"probe": Probe()}, data, "cpu", "label", start=4) >= 1
    assert seen and all(shape[-2:] == (32, 48) for shape in seen)


def test_batch_size_auto__fits_the_memory_budget_and_runs(tiny_dinov2_path, tmp_path, monkeypatch):
    """`--batch_size auto` sizes the batch from a measured attack step and the free memory."""
    import hf_ssl_robust.batching as batching

    seen = []
    real = bench.auto_batch_size
    monkeypatch.setattr(bench, "auto_batch_size", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
    records = run_benchmark(_cfg(tiny_dinov2_path, tmp_path, tasks=["segmentation"], attacks=["embed", "segpgd"], batch_size="auto"))
    assert {r["attack"] for r in records} == {"none", "embed", "segpgd"} and all(r["num_samples"] == 8 for r in records)
    assert seen == [8]  # plenty of memory: capped by the 8 evaluation images
    # With no memory to spare it falls back to the smallest batch instead of failing.
    monkeypatch.setattr(batching, "available_memory_bytes", lambda: 1.0)
    from hf_ssl_robust.data import get_dataset_spec, make_dataset
    from hf_ssl_robust.heads import SSLForSemanticSegmentation

    model = SSLForSemanticSegmentation.from_pretrained(next((tmp_path / "heads").iterdir())).eval()
    data = make_dataset(get_dataset_spec("shapes", task="segmentation"), "eval", num_samples=8, image_size=32)
    attacks = {"segpgd": make_attack("segpgd", eps=8 / 255, steps=2)}
    assert real(model, attacks, data, "cpu", "mask") == 1


def test_benchmark__one_and_two_processes_agree(tiny_dinov2_path, tmp_path):
    """`accelerate launch` with 2 CPU processes gives exactly the numbers of 1 process."""
    args = ["--encoders", tiny_dinov2_path, "--tasks", "classification", "segmentation", "--attacks", "embed", "pgd", "segpgd",
            "--steps", "2", "--max_eval_samples", "10", "--num_train_samples", "32", "--head_epochs", "1",
            "--image_size", "32", "--batch_size", "3", "--num_examples", "0"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    script = str(REPO / "scripts" / "benchmark.py")
    one = tmp_path / "one"
    assert cli_main(["benchmark", *args, "--output_dir", str(one)]) == 0
    # The heads are trained once and shared, so only evaluation and attacks differ between the runs.
    two = tmp_path / "two"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", script, *args, "--output_dir", str(two), "--heads_dir", str(one / "heads")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-12000:]
    info = json.loads((two / "run_info.json").read_text())
    assert info["processes"] == 2, "the launched run did not split the work over 2 processes"
    strip = lambda rs: sorted((r["task"], r["attack"], r["metric"], r["value"], r["num_samples"]) for r in rs)  # noqa: E731
    assert strip(load_records(two / "results.json")) == strip(load_records(one / "results.json"))


def test_cell_key__batch_size_is_not_part_of_it():
    """Random starts are seeded per image and sizes never mix: a re-run with another batch size reuses cells."""
    a = bench._cell_key(BenchmarkConfig(encoders=["x"], batch_size=4), "x", "classification", "shapes", 8 / 255)
    b = bench._cell_key(BenchmarkConfig(encoders=["x"], batch_size=8), "x", "classification", "shapes", 8 / 255)
    assert a == b and bench._cell_path(Path("o"), a) == bench._cell_path(Path("o"), b)


def test_run_benchmark__flags_reach_every_record_and_square_checks_the_white_box_attacks(tiny_dinov2_path, tmp_path, monkeypatch):
    """`flags` from the evaluation are in every record; with Square asked for, each white-box attack (and
    the worst case) is compared with it through the `black_box` hook (stubbed here: Square 'wins')."""
    import hf_ssl_robust.diagnostics_blackbox as blackbox

    seen = []
    monkeypatch.setattr(blackbox, "square_hook", lambda task, **kw: (lambda *a: seen.append(task) or True))
    records = run_benchmark(_cfg(tiny_dinov2_path, tmp_path, tasks=["classification"], attacks=["pgd", "square"],
                                 square_queries=5, worst_case=True))
    assert all(isinstance(r["flags"], list) for r in records)
    flags = {r["attack"]: r["flags"] for r in records if r["metric"] == "accuracy" and r["encoder"] != "prior"}
    assert "black_box_stronger" in flags["pgd"] and "black_box_stronger" in flags["worst"]
    assert "black_box_stronger" not in flags["square"] and "black_box_stronger" not in flags["none"]
    queries = {r["attack"]: r.get("queries") for r in records if r["metric"] == "accuracy" and r["encoder"] != "prior"}
    assert queries == {"none": None, "pgd": None, "square": 5, "worst": None}  # Square's budget on its record
    assert seen and "⚠B" in (tmp_path / "results.md").read_text()


def test_git_state__commit_and_uncommitted_edits_of_the_package(tmp_path):
    """run_info's `git_dirty`: edits to tracked package files make the commit alone not reproduce a run."""
    git = lambda *a: subprocess.run(["git", "-C", str(tmp_path), *a], check=True, capture_output=True, text=True)  # noqa: E731
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    head = git("rev-parse", "HEAD").stdout.strip()
    assert bench.git_state(pkg) == (head, False)
    (pkg / "notes.txt").write_text("untracked files are not the package's code\n")
    assert bench.git_state(pkg) == (head, False)
    (tmp_path / "elsewhere.py").write_text("outside the package\n")
    (pkg / "code.py").write_text("x = 2\n")
    assert bench.git_state(pkg) == (head, True)
    outside = tmp_path.parent / f"{tmp_path.name}-nogit"
    outside.mkdir()
    assert bench.git_state(outside) == (None, None)

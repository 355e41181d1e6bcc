"""Heads and cells are keyed by the encoder's weights and every head setting, never by a display name,
and head training gives the same head on 1 or 2 processes (issue 21)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModel

from hf_ssl_robust.benchmark import BenchmarkConfig, run_benchmark
from hf_ssl_robust.distributed import GlobalBatchSampler, global_mean_weight, min_across_processes
from hf_ssl_robust.identity import encoder_identity, unique_display_names

REPO = Path(__file__).resolve().parents[1]
TINY = dict(tasks=["classification"], attacks=["pgd"], steps=1, max_eval_samples=8, num_train_samples=32, head_epochs=1,
            image_size=32, batch_size=8, num_examples=0)


def _clean(records, encoder=None):
    return {(r["encoder"], r["task"], r["metric"]): r["value"] for r in records
            if r["attack"] == "none" and (encoder is None or r["encoder"] == encoder)}


def _copy_with_other_weights(src: str, dst: Path, seed: int = 1) -> str:
    model = AutoModel.from_pretrained(src)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    model.save_pretrained(dst)
    return str(dst)


@pytest.fixture(scope="module")
def two_encoders(tiny_dinov2_path, tmp_path_factory):
    """`a/enc` and `b/enc`: same basename, different weights."""
    root = tmp_path_factory.mktemp("encoders")
    a = root / "a" / "enc"
    shutil.copytree(tiny_dinov2_path, a)
    b = _copy_with_other_weights(str(a), root / "b" / "enc")
    return str(a), b


def test_identity__folders_with_one_basename_differ_and_a_copy_keeps_it(two_encoders, tmp_path):
    a, b = two_encoders
    assert encoder_identity(a).fingerprint != encoder_identity(b).fingerprint
    copy = shutil.copytree(a, tmp_path / "elsewhere")
    assert encoder_identity(copy).fingerprint == encoder_identity(a).fingerprint
    assert encoder_identity(copy).source == str(Path(copy).resolve())
    assert unique_display_names([a, b, "facebook/dinov2-small"]) == {a: "a/enc", b: "b/enc", "facebook/dinov2-small": "dinov2-small"}


def test_benchmark__two_encoders_sharing_a_basename_get_their_own_heads(two_encoders, tmp_path):
    """Before: b/enc was silently scored with a/enc's head (the head folder held a/enc's weights)."""
    a, b = two_encoders
    both = run_benchmark(BenchmarkConfig(encoders=[a, b], output_dir=str(tmp_path / "both"), **TINY))
    alone = run_benchmark(BenchmarkConfig(encoders=[b], output_dir=str(tmp_path / "alone"), **TINY))
    assert _clean(both, b) == _clean(alone, b)
    assert len({r["encoder_fingerprint"] for r in both if r["encoder"] != "prior"}) == 2
    assert len(list((tmp_path / "both" / "heads").iterdir())) == 2
    md = (tmp_path / "both" / "results.md").read_text()
    assert "| shapes | a/enc |" in md and "| shapes | b/enc |" in md


def test_benchmark__rerun_with_other_head_settings_retrains(tiny_dinov2_path, tmp_path):
    """Before: a re-run with --num_train_samples 64 after a smoke run with 32 reported the 32-sample head."""
    out = tmp_path / "run"
    run_benchmark(BenchmarkConfig(encoders=[tiny_dinov2_path], output_dir=str(out), **TINY))
    again = run_benchmark(BenchmarkConfig(encoders=[tiny_dinov2_path], output_dir=str(out), **{**TINY, "num_train_samples": 64}))
    fresh = run_benchmark(BenchmarkConfig(encoders=[tiny_dinov2_path], output_dir=str(tmp_path / "fresh"), **{**TINY, "num_train_samples": 64}))
    assert _clean(again) == _clean(fresh)
    assert len(list((out / "heads").iterdir())) == 2
    info = json.loads((out / "run_info.json").read_text())
    assert info["cells_computed"] == 1 and info["cells_reused"] == 0


def test_benchmark__folder_retrained_in_place_gets_a_new_head(tiny_dinov2_path, tmp_path):
    enc = Path(shutil.copytree(tiny_dinov2_path, tmp_path / "enc"))
    out = tmp_path / "run"
    run_benchmark(BenchmarkConfig(encoders=[str(enc)], output_dir=str(out), **TINY))
    _copy_with_other_weights(str(enc), enc)  # same path, new weights
    rerun = run_benchmark(BenchmarkConfig(encoders=[str(enc)], output_dir=str(out), **TINY))
    fresh = run_benchmark(BenchmarkConfig(encoders=[str(enc)], output_dir=str(tmp_path / "fresh"), **TINY))
    assert _clean(rerun) == _clean(fresh)
    assert json.loads((out / "run_info.json").read_text())["cells_reused"] == 0


def test_benchmark__heads_dir_head_of_another_encoder_is_refused_before_any_work(two_encoders, tmp_path):
    a, b = two_encoders
    first = tmp_path / "first"
    run_benchmark(BenchmarkConfig(encoders=[a], output_dir=str(first), **TINY))
    out = tmp_path / "second"
    with pytest.raises(ValueError, match=r"does not match .*encoder_fingerprint.*--force_heads"):
        run_benchmark(BenchmarkConfig(encoders=[b], output_dir=str(out), heads_dir=str(first / "heads"), **TINY))
    assert not (out / "cells").exists() or not any((out / "cells").iterdir())
    with pytest.raises(ValueError, match=r"num_train_samples: 32 there, 64 here"):
        run_benchmark(BenchmarkConfig(encoders=[a], output_dir=str(out), heads_dir=str(first / "heads"), **{**TINY, "num_train_samples": 64}))
    # The matching head is reused as-is; --force_heads reuses a differing one and says so in run_info.json.
    same = run_benchmark(BenchmarkConfig(encoders=[a], output_dir=str(tmp_path / "same"), heads_dir=str(first / "heads"), **TINY))
    assert not (tmp_path / "same" / "heads").exists() and _clean(same) == _clean(json.loads((first / "results.json").read_text()))
    run_benchmark(BenchmarkConfig(encoders=[b], output_dir=str(out), heads_dir=str(first / "heads"), force_heads=True, **TINY))
    forced = json.loads((out / "run_info.json").read_text())["forced_heads"]
    assert len(forced) == 1 and "encoder_fingerprint" in forced[0]["differences"]


def test_benchmark__heads_dir_head_without_identity_is_refused(tiny_dinov2_path, tmp_path):
    first = tmp_path / "first"
    run_benchmark(BenchmarkConfig(encoders=[tiny_dinov2_path], output_dir=str(first), **TINY))
    (head,) = (first / "heads").iterdir()
    metrics = json.loads((head / "train_metrics.json").read_text())
    del metrics["key"]  # as written before heads carried their identity
    (head / "train_metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(ValueError, match="records no identity"):
        run_benchmark(BenchmarkConfig(encoders=[tiny_dinov2_path], output_dir=str(tmp_path / "x"), heads_dir=str(first / "heads"), **TINY))


def test_cell_key__carries_the_package_version(monkeypatch):
    import hf_ssl_robust
    import hf_ssl_robust.benchmark as bench

    cfg = BenchmarkConfig(encoders=["shapes-resnet-tiny"])
    before = bench._cell_path(Path("o"), bench._cell_key(cfg, "shapes-resnet-tiny", "classification", "shapes", 8 / 255))
    monkeypatch.setattr(hf_ssl_robust, "__version__", "99.0")
    after = bench._cell_path(Path("o"), bench._cell_key(cfg, "shapes-resnet-tiny", "classification", "shapes", 8 / 255))
    assert before != after


# -- 1 vs N processes ------------------------------------------------------------------------------
def test_global_batch_sampler__shares_of_two_processes_make_the_one_process_batches():
    one = list(GlobalBatchSampler(37, 8, seed=3, drop_last=True))
    r0 = list(GlobalBatchSampler(37, 8, seed=3, world=2, rank=0, drop_last=True))
    r1 = list(GlobalBatchSampler(37, 8, seed=3, world=2, rank=1, drop_last=True))
    assert len(one) == len(r0) == len(r1) == 4
    assert [a + b for a, b in zip(r0, r1)] == one
    # One process draws exactly the batches of a seeded shuffled DataLoader, epoch after epoch.
    from torch.utils.data import DataLoader

    for n, drop_last in [(10, True), (12, True), (10, False), (3, False)]:
        s = GlobalBatchSampler(n, 4, seed=5, drop_last=drop_last)
        loader = DataLoader(list(range(n)), batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(5), drop_last=drop_last)
        for _ in range(3):
            assert list(s) == [b.tolist() for b in loader]
    assert global_mean_weight(3, 7, 2) * 7 / 2 == 3
    with pytest.raises(ValueError, match="smaller than the 4 processes"):
        GlobalBatchSampler(10, 2, seed=0, world=4)


def test_min_across_processes__every_process_gets_the_smallest():
    class TwoProcesses:
        num_processes, device = 2, torch.device("cpu")

        def gather(self, t):
            return torch.cat([t, torch.tensor([5])])

    assert min_across_processes(9, TwoProcesses()) == 5 and min_across_processes(3, TwoProcesses()) == 3
    assert min_across_processes(9, None) == 9


def test_benchmark__heads_trained_on_one_and_two_processes_agree(tiny_dinov2_path, tmp_path):
    """Before: each process took a full batch (2 processes trained with batch 32, half the steps): 0.125 / 0.085
    where one process gives 0.156 / 0.121. Now the global batch is split and BatchNorm statistics are global.

    Tolerance: the gradient is averaged across processes in another order of float additions than in one
    process (about 1e-7 relative per step), so head weights differ by float noise; the clean metrics are
    compared to 1e-6, and the head weights to 1e-4."""
    args = ["--encoders", tiny_dinov2_path, "--tasks", "classification", "segmentation", "--attacks", "pgd", "--steps", "1",
            "--max_eval_samples", "12", "--num_train_samples", "40", "--head_epochs", "2", "--image_size", "32",
            "--batch_size", "4", "--num_examples", "0"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    runs = {}
    for n in (1, 2):
        out = tmp_path / f"p{n}"
        launch = ["--multi_gpu", "--num_processes", "2"] if n == 2 else ["--num_processes", "1"]
        cmd = [sys.executable, "-m", "accelerate.commands.launch", *launch, "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", "-m", "hf_ssl_robust.cli", "benchmark", *args, "--output_dir", str(out)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-8000:]
        assert json.loads((out / "run_info.json").read_text())["processes"] == n
        runs[n] = json.loads((out / "results.json").read_text())
    one, two = _clean(runs[1]), _clean(runs[2])
    assert one.keys() == two.keys()
    for k in one:
        assert abs(one[k] - two[k]) <= 1e-6, (k, one[k], two[k])
    for task in ("classification", "segmentation"):
        (h1,) = (tmp_path / "p1" / "heads").glob(f"*{task}*")
        (h2,) = (tmp_path / "p2" / "heads").glob(f"*{task}*")
        m1, m2 = (json.loads((h / "train_metrics.json").read_text()) for h in (h1, h2))
        assert m1["key"] == m2["key"] and m1["best_epoch"] == m2["best_epoch"]
        from safetensors.torch import load_file

        w1, w2 = load_file(h1 / "model.safetensors"), load_file(h2 / "model.safetensors")
        for name in w1:
            if not name.startswith("encoder."):
                torch.testing.assert_close(w1[name], w2[name], rtol=1e-4, atol=1e-5, msg=f"{task} {name}")

"""Smoke test of scripts/bench_attacks.py: it runs on the tiny config and writes its JSON.

Timings are never asserted (they depend on the machine and its load); only that every section
ran, the attacks' outputs satisfy the threat model, and the GPU code paths (bf16 autocast,
torch.compile) work on CPU.
"""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_attacks.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_attacks", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tiny(tmp_path, name, *extra):
    out = tmp_path / f"{name}.json"
    argv = ["--config", "tiny", "--image_size", "32", "--batch_size", "2", "--steps", "1", "--repeats", "1",
            "--warmup", "0", "--output", str(out), *extra]
    return out, argv


def test_all_sections_write_json(bench, tmp_path):
    out, argv = _tiny(tmp_path, "fp32", "--train_samples", "24", "--train_epochs", "1", "--deacl_steps", "1",
                      "--deacl_batch_size", "2", "--deacl_image_size", "32", "--memory_config", "tiny",
                      "--memory_sizes", "32", "--memory_variants", "ours", "--memory_attacks", "segpgd", "--attacks", "embed,pgd,segpgd,depth_pgd")
    bench.main(argv)
    report = json.loads(out.read_text())
    assert {"machine", "args", "attacks", "training", "deacl", "memory"} <= set(report)
    assert report["machine"]["torch"] == torch.__version__ and report["machine"]["cpu"]
    assert [r["attack"] for r in report["attacks"]] == ["embed", "pgd", "segpgd", "depth_pgd"]
    for row in report["attacks"]:
        for key in ("floor_ms", "ours_ms", "ratio", "naive_ms", "speedup", "img_per_s_ours"):
            assert row[key] > 0
        for check in (row["check_ours"], row["check_naive"]):
            assert check["within_eps"] and check["in_unit_box"] and check["finite"]
    assert report["training"]["cached"]["epoch_s"] > 0 and report["training"]["uncached"]["epoch_s"] > 0
    assert 0 < report["deacl"]["attack_share"] < 1
    assert len(report["memory"]) == 1 and all(m["peak_bytes"] > 0 for m in report["memory"])


@pytest.mark.parametrize("extra", [["--amp", "bf16"], ["--amp", "bf16", "--compile", "--compile_backend", "aot_eager"]])
def test_gpu_code_paths_on_cpu(bench, tmp_path, extra):
    out, argv = _tiny(tmp_path, "amp", "--sections", "attacks", "--attacks", "embed,segpgd", "--no_naive", *extra)
    bench.main(argv)
    rows = json.loads(out.read_text())["attacks"]
    for row in rows:  # the forward runs in bf16, the perturbation and projection stay fp32
        assert row["check_ours"] == {"dtype": "torch.float32", "within_eps": True, "in_unit_box": True, "finite": True}


def test_batch_size_auto_on_cpu(tmp_path):
    from hf_ssl_robust.batching import find_max_batch_size

    calls = []
    batch = find_max_batch_size(lambda b: calls.append(b) or torch.ones(b, 1 << 18).sum(), start=8)
    assert calls == [2] and 1 <= batch <= 8

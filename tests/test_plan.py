"""`benchmark --dry_run` costs and times, `hf-ssl-robust plan`, device rates and calibration."""

import json
import time

import pytest
import torch
from transformers import Dinov2Config, Dinov2Model

from hf_ssl_robust.attack_suites import build_attack
from hf_ssl_robust.benchmark import BenchmarkConfig
from hf_ssl_robust.cli import main
from hf_ssl_robust.data import get_dataset_spec, make_dataset
from hf_ssl_robust.data.loaders import IndexedDataset
from hf_ssl_robust.data.loading import collate
from hf_ssl_robust.evaluation import evaluate
from hf_ssl_robust.heads import SSLForImageClassification
from hf_ssl_robust.planning import _device_seconds, estimate_time, plan_benchmark, plan_paper_grid
from hf_ssl_robust.tasks import get_task
from hf_ssl_robust.throughput import DEFAULT_UTILISATION, PEAK_TFLOPS, calibrate, load_calibrations, resolve_rate


def test_benchmark_dry_run__prints_the_pass_cost_cell_total_and_time(capsys):
    assert main(["benchmark", "--encoders", "dinov2-small", "--tasks", "classification", "--datasets", "cifar10", "--dry_run"]) == 0
    out = capsys.readouterr().out
    assert "| dinov2-small | cifar10 | classification | 518x518 | 93.4 (< 0.01 %) | 256.0 |" in out
    # 200k train + 40k eval forwards at 93.4 GFLOPs, 400k attack steps at 256.0: 125 PFLOPs; at 40 % of 67 TFLOP/s, 1.3 h
    assert "| 125 | 1.3 h |" in out and "Run total: 125 PFLOPs" in out
    assert "ASSUMED 40% utilisation of the fp32 peak" in out and "1× h100" in out


def test_benchmark_dry_run__device_flags(capsys):
    args = ["benchmark", "--encoders", "dinov2-small", "--tasks", "classification", "--datasets", "cifar10", "--dry_run",
            "--mixed_precision", "bf16", "--gpu", "a100", "--num_processes", "2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    cfg = BenchmarkConfig(encoders=["dinov2-small"], tasks=["classification"], datasets=["cifar10"], dry_run=True)
    (row,) = plan_benchmark(cfg)
    seconds = row["flops"] / (312e12 * DEFAULT_UTILISATION["bf16"]) / 2  # A100 bf16 peak, 2 processes
    assert f"| {row['flops'] / 1e15:.0f} | {seconds / 60:.1f} min |" in out
    assert "2× a100" in out and "bf16 peak" in out
    assert main(["benchmark", "--encoders", "dinov2-small", "--dry_run", "--gpu", "tpu"]) == 2
    assert "--gpu 'tpu' is not a device with a known peak" in capsys.readouterr().err
    assert main(["benchmark", "--encoders", "dinov2-small", "--gpu", "h100"]) == 2
    assert "only apply to --dry_run" in capsys.readouterr().err


def test_plan__paper_grid_table_and_sentence(capsys):
    assert main(["plan", "dino-vitb16", "--gpu", "h100"]) == 0
    out = capsys.readouterr().out
    for dataset in ("cifar10", "cifar100", "stl10", "ade20k", "cityscapes", "voc2012", "nyu_depth_v2"):
        assert f"| {dataset} |" in out
    assert "ε 2/255 4/255 8/255" in out and "224x224 → 35.1 / 73.1" in out
    assert "H100-hours on one H100 at the ASSUMED 40% utilisation; halve with 2 processes" in out
    assert "With --mixed_precision bf16:" in out and "--data_dir cityscapes=PATH" in out


def test_plan__bad_input_is_refused(capsys):
    assert main(["plan"]) == 2
    assert "plan needs an ENCODER" in capsys.readouterr().err
    assert main(["plan", "dinov2-small", "--attacks", "weak"]) == 2
    assert "--attacks must be 'paper' or 'strong'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--num_processes must be an integer >= 1"):
        estimate_time([], "h100", 0)
    with pytest.raises(ValueError, match="does not exist"):
        load_calibrations(["/no/such/calibration.json"])


def test_plan__strong_attacks_cost_more():
    paper = sum(r["flops"] for r in plan_paper_grid("dinov2-small"))
    strong = sum(r["flops"] for r in plan_paper_grid("dinov2-small", "strong"))
    assert strong > 1.5 * paper


def test_resolve_rate__measured_utilisation_wins_over_the_assumption(tmp_path):
    cal = {"device": "h100", "device_name": "NVIDIA H100 80GB HBM3", "created": "2026-12-06T00:00:00", "measurements": [
        {"encoder": "facebook/dinov2-small", "model_type": "dinov2", "precision": "bf16",
         "tflops_per_s": {"forward": 300.0, "attack_step": 250.0, "train_step": 240.0},
         "utilisation": {"forward": 0.3, "attack_step": 0.25, "train_step": 0.24}}]}
    path = tmp_path / "h100.json"
    path.write_text(json.dumps(cal))
    rate = resolve_rate("h100", "dinov2", "bf16", load_calibrations([path]))
    assert rate.measured and rate.flops_per_s["attack_step"] == pytest.approx(0.25 * PEAK_TFLOPS["h100"]["bf16"] * 1e12)
    assert "measured 30% forward / 25% attack" in rate.source
    other = resolve_rate("h100", "vit", "bf16", load_calibrations([path]))  # no measurement for DINO v1
    assert not other.measured and "ASSUMED 25%" in other.source


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_cpu_estimate__within_30_percent_of_a_real_evaluation_run(tmp_path, one_thread):
    """Calibrate this CPU on the encoder, plan a cell, then run the cell's evaluation loop (clean, EmbedAttack
    and PGD through the real `evaluate`) and compare its time with the plan's estimate.

    Both are CPU times of one thread (`time.process_time`): the machine is shared, and other jobs stretch wall
    times at random; on a quiet machine one thread's CPU time is its wall time."""
    torch.manual_seed(0)
    enc = tmp_path / "enc"
    Dinov2Model(Dinov2Config(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, patch_size=8, image_size=64)).save_pretrained(enc)
    n, steps, batch = 16, 3, 8
    cal = calibrate([str(enc)], ["no"], batch_size=batch, max_side=64, repeats=2, device="cpu", train=False,
                    clock=time.process_time)
    (tmp_path / "cpu.json").write_text(json.dumps(cal))
    cfg = BenchmarkConfig(encoders=[str(enc)], tasks=["classification"], datasets=["shapes"], steps=steps,
                          max_eval_samples=n, batch_size=str(batch), dry_run=True)
    (row,) = estimate_time(plan_benchmark(cfg), "cpu", calibration_files=[tmp_path / "cpu.json"])
    assert row["rate"].measured and "cpu.json" in row["rate"].source
    row["train_fwd"] = 0  # the evaluation loop only (head training is not timed below)
    estimate = _device_seconds(row, row["rate"])

    spec, task = get_dataset_spec("shapes", task="classification"), get_task("classification")
    model = SSLForImageClassification.from_encoder(str(enc), num_labels=spec.num_classes).eval()
    loader = torch.utils.data.DataLoader(IndexedDataset(make_dataset(spec, "eval", num_samples=n, seed=0, image_size=64)),
                                         batch_size=batch, collate_fn=collate)
    attacks = {name: build_attack(name, task, spec, eps=8 / 255, step_size=2 / 255, steps=steps, norm="linf", seed=0)
               for name in task.attacks(cfg.attacks)}
    start = time.process_time()
    evaluate(model, loader, task, spec, attacks=attacks)
    measured = time.process_time() - start
    assert abs(estimate - measured) / measured < 0.3, (estimate, measured)


def test_plan__calibrate_writes_a_file_that_the_cpu_estimate_uses(tmp_path, capsys, one_thread):
    enc = tmp_path / "enc"
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, patch_size=8)).save_pretrained(enc)
    out = tmp_path / "cal" / "cpu.json"
    assert main(["plan", "--calibrate", str(out), "--encoders", str(enc), "--max_side", "32", "--repeats", "1",
                 "--batch_size", "2", "--cpu_time"]) == 0
    cal = json.loads(out.read_text())
    (m,) = cal["measurements"]
    assert cal["device"] == "cpu" and m["shape"] == [32, 32] and m["batch_size"] == 2 and m["utilisation"] is None
    assert set(m["seconds"]) == {"forward", "attack_step", "train_step"} and all(v > 0 for v in m["tflops_per_s"].values())
    capsys.readouterr()
    assert main(["plan", str(enc), "--gpu", "cpu", "--calibration", str(out)]) == 0
    text = capsys.readouterr().out
    assert "CPU-hours on one CPU at the measured CPU rate" in text and "calibration cpu.json" in text


def test_plan_deacl__per_image_cost_and_cli_line(capsys):
    from hf_ssl_robust.cost import pass_cost
    from hf_ssl_robust.planning import plan_deacl

    plan = plan_deacl("dino-vitb16", images=1000, epochs=2)
    c = pass_cost("dino-vitb16", None, (224, 224), train=True)
    assert plan["flops"] == 2000 * (c.forward + 5 * c.attack_step + 2 * c.train_step)
    assert c.train_step > c.attack_step > 2 * c.forward  # weight gradients cost more than input gradients
    assert main(["plan", "dino-vitb16", "--mixed_precision", "bf16", "--deacl"]) == 0
    assert "DeACL (1,281,167 images × 100 epochs at 224x224, 5 attack steps, batch 128)" in capsys.readouterr().out


def test_readme__shows_the_current_plans(capsys):
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for argv in (["plan", "dinov2-small"], ["plan", "dino-vitb16", "--mixed_precision", "bf16", "--num_processes", "2"]):
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert f"$ hf-ssl-robust {' '.join(argv)}\n{out}```" in readme, "README's plan is stale: paste the new output"


def test_resolve_rate__cpu_without_a_calibration_measures_on_the_spot(tmp_path, one_thread):
    enc = tmp_path / "enc"
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, patch_size=8, image_size=32)).save_pretrained(enc)
    rate = resolve_rate("cpu", "dinov2", "fp32", [], encoder=str(enc))
    assert rate.measured and "measured now" in rate.source and rate.flops_per_s["attack_step"] > 0

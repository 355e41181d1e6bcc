"""The steps of the pipeline rehearsal (`hf_ssl_robust.rehearsal`) and how each is checked from the
files it wrote: results, cells, heads, run info, DeACL logs and the evolution record."""

from __future__ import annotations

import json
import math
import subprocess
import time
from pathlib import Path

from .rehearsal import ENCODER, NEEDED, Rehearsal, last_line

__all__ = ["rehearse"]


# -- reading what a step wrote ---------------------------------------------------------------------
PRIMARY = {"classification": "accuracy", "segmentation": "mean_iou", "depth": "rmse"}


def records(folder: Path) -> list[dict]:
    path = folder / "results.json"
    if not path.is_file():
        raise AssertionError(f"no {path.name} in {folder.name}")
    return json.loads(path.read_text())


def primary(recs: list[dict], attack: str = "none") -> dict[str, float]:
    """`{task: value}` of each task's primary metric for one attack (`none`: clean)."""
    return {r["task"]: r["value"] for r in recs if r["attack"] == attack and r["metric"] == PRIMARY[r["task"]]}


def max_gap(a: dict, b: dict) -> float:
    if set(a) != set(b):
        raise AssertionError(f"tasks differ: {sorted(a)} vs {sorted(b)}")
    return max((abs(a[k] - b[k]) for k in a if not (math.isnan(a[k]) and math.isnan(b[k]))), default=0.0)


def differing(a: dict, b: dict, num_images: int) -> list[str]:
    """Tasks whose values differ by more than reduction order explains: less than one image of accuracy,
    1e-4 of mIoU or RMSE (the same images and heads, summed in another order)."""
    tolerance = {"classification": 0.5 / num_images}
    max_gap(a, b)  # same tasks
    return [k for k in sorted(a) if abs(a[k] - b[k]) > tolerance.get(k, 1e-4)]


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """`{path: (mtime_ns, size)}` of every stored cell and head file (what a resume must not rewrite)."""
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size)
            for sub in ("cells", "heads") if (folder / sub).is_dir() for p in sorted((folder / sub).rglob("*")) if p.is_file()}


def _fmt(values: dict[str, float]) -> str:
    return ", ".join(f"{task} {v:.3f}" for task, v in sorted(values.items()))


# -- the steps -------------------------------------------------------------------------------------
ENV_SCRIPT = f"""
import importlib, sys
missing = []
for name in {NEEDED!r}:
    try:
        importlib.import_module(name)
    except Exception as err:
        missing.append(f"{{name}} ({{type(err).__name__}})")
import torch, transformers, accelerate
gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
where = f"{{gpus}} x {{torch.cuda.get_device_name(0)}}, CUDA {{torch.version.cuda}}" if gpus else "no CUDA device"
print(f"torch {{torch.__version__}} ({{where}}), transformers {{transformers.__version__}}, accelerate {{accelerate.__version__}}, python {{sys.version.split()[0]}}")
if missing:
    print("missing: " + ", ".join(missing) + " (carry them as wheels)")
    sys.exit(1)
"""


def rehearse(r: Rehearsal, gpus: int, smoke: bool, cpu_launch: bool = False) -> None:
    s, out = r.sizes, r.out
    start = time.perf_counter()
    with (r.logs / "env.log").open("w") as f:
        rc = subprocess.run([r.python, "-c", ENV_SCRIPT], stdout=f, stderr=subprocess.STDOUT, timeout=120).returncode
    env_line = last_line((r.logs / "env.log").read_text())
    r.record("env", "python -c <versions, devices, imports>", time.perf_counter() - start, "ok" if rc == 0 else "FAIL", env_line)

    bench, heads = out / "bench", out / "bench" / "heads"

    def check_bench(log: str) -> str:
        recs = records(bench)
        clean = primary(recs)
        assert set(clean) == {"classification", "segmentation"}, f"clean rows for {sorted(clean)}, expected classification and segmentation"
        cells = [p for p in (bench / "cells").glob("*.json") if not p.name.startswith("prior-")]  # image-free priors aside
        trained = list(heads.rglob("train_metrics.json"))
        assert len(cells) == 2 and len(trained) == 2, f"{len(cells)} cell file(s) and {len(trained)} trained head(s), expected 2 and 2"
        attacked = {**{k: v for k, v in primary(recs, "pgd").items()}, **primary(recs, "segpgd")}
        return f"2 cells, 2 heads trained; clean {_fmt(clean)}; PGD / SegPGD {_fmt(attacked)}"

    step = r.run("benchmark", r.grid(bench), check_bench)
    if step.status != "ok":
        for name in ("resume", "heads_dir", "batch_size_auto", "worst_case", "bf16"):
            r.record(name, "(needs the benchmark step)", 0.0, "skipped", "the benchmark step failed")
    else:
        before, first = snapshot(bench), records(bench)

        def check_resume(log: str) -> str:
            after = snapshot(bench)
            new, rewritten = sorted(set(after) - set(before)), sorted(k for k in before if after.get(k) != before[k])
            assert not new and not rewritten, f"new files {new[:3]}, rewritten {rewritten[:3]}: a cell or head was redone"
            assert records(bench) == first, "results.json differs from the first run's"
            n_cells = sum(k.startswith("cells") and "/prior-" not in k for k in before)
            n_heads = sum(k.endswith("train_metrics.json") for k in before)
            said = "its output says so" if any(w in log.lower() for w in ("reus", "skipping cell", "already done")) else \
                "(the benchmark's own output does not say so)"
            return f"reused {n_cells}/{n_cells} cells and {n_heads}/{n_heads} heads (no file rewritten), results identical; {said}"

        r.run("resume", r.grid(bench), check_resume)
        clean = primary(first)

        def reused(folder: Path, log: str) -> str:
            trained = list((folder / "heads").rglob("train_metrics.json")) if (folder / "heads").is_dir() else []
            assert not trained, f"{len(trained)} head(s) trained although --heads_dir holds them"
            return f"no head trained ({log.count('loading head')} loaded)"

        def check_heads_dir(log: str) -> str:
            gap = max_gap(primary(records(out / "heads_dir")), clean)
            assert gap <= 1e-6, f"clean numbers differ from step 2's by {gap:.2g}"
            return reused(out / "heads_dir", log) + ", clean numbers equal to step 2's"

        r.run("heads_dir", r.grid(out / "heads_dir", heads_dir=heads), check_heads_dir)

        def check_auto(log: str) -> str:
            import re

            picked = sorted({int(b) for b in re.findall(r"--batch_size auto: (\d+)", log)})
            recs = records(out / "batch_size_auto")
            off = differing(primary(recs), clean, s.eval)
            assert not off, f"clean {_fmt(primary(recs))} differ from batch {s.batch}'s ({_fmt(clean)}) for {off}"
            adv = max(max_gap(primary(recs, a), primary(first, a)) for a in ("embed", "pgd", "segpgd"))
            assert adv <= 0.02, f"attacked numbers differ from batch {s.batch}'s by {adv:.3g} (seeds are per image: they should not)"
            return f"picked batch {picked or '? (not logged)'}; {reused(out / 'batch_size_auto', log)}; clean equal, attacked differ by at most {adv:.3g} from batch {s.batch}"

        r.run("batch_size_auto", r.grid(out / "batch_size_auto", heads_dir=heads, batch_size="auto"), check_auto)

        def check_worst(log: str) -> str:
            recs = records(out / "worst_case")
            worst = primary(recs, "worst")
            assert set(worst) == {"classification", "segmentation"}, f"worst rows for {sorted(worst)}"
            attacks = {r["attack"] for r in recs if r["task"] == "classification" and r["attack"] not in ("none", "worst")}
            lowest = min(primary(recs, a)["classification"] for a in attacks)
            assert worst["classification"] <= lowest + 1e-9, f"worst accuracy {worst['classification']} above an attack's {lowest}"
            return f"worst {_fmt(worst)}; classification worst <= min over {len(attacks)} attacks ({lowest:.3f})"

        r.run("worst_case", r.grid(out / "worst_case", heads_dir=heads, attacks=["embed", "pgd", "segpgd", "apgd"], worst_case=True),
              check_worst)

        def check_bf16(log: str) -> str:
            info = json.loads((out / "bf16" / "run_info.json").read_text())
            assert info.get("mixed_precision") == "bf16", f"run_info says mixed_precision={info.get('mixed_precision')!r}"
            forced = info.get("forced_heads", [])  # the fp32 heads, scored in bf16: only the evaluation's precision differs
            assert len(forced) == 2 and all("mixed_precision" in f["differences"] for f in forced), f"forced heads: {forced}"
            gap = max_gap(primary(records(out / "bf16")), clean)
            return f"ran in bf16; clean {_fmt(primary(records(out / 'bf16')))} (at most {gap:.3g} from fp32)"

        # A head's key includes its precision: --force_heads reuses the fp32 ones (and run_info.json lists them).
        r.run("bf16", r.grid(out / "bf16", heads_dir=heads, mixed_precision="bf16", force_heads=True), check_bf16)

    deacl = out / "deacl"

    def check_deacl(log: str) -> str:
        assert (deacl / "model.safetensors").is_file(), "no model.safetensors: the encoder was not saved"
        losses = [json.loads(line)["loss"] for line in (deacl / "log.jsonl").read_text().splitlines() if line.strip()]
        rows = [json.loads(line) for line in (deacl / "evolution.jsonl").read_text().splitlines() if line.strip()]
        expected = list(range(0, 3, s.eval_every)) + ([2] if 2 % s.eval_every else [])
        steps = [row["step"] for row in rows]
        assert steps == expected, f"evolution at steps {steps}, expected {expected}"
        assert (deacl / "evolution.png").is_file(), "no evolution.png"
        assert len(losses) == 2, f"{len(losses)} logged steps, expected 2"
        last = rows[-1][s.eval_tasks[0]]
        return f"2 steps, loss {' -> '.join(f'{v:.4f}' for v in losses)}; evolution at steps {steps} ({s.eval_tasks[0]} at step 2: " + \
            ", ".join(f"{k} {v:.3f}" for k, v in last.items()) + "); plot written"

    r.run("deacl_evolution", ["deacl", "--encoder", ENCODER, "--dataset", "shapes", "--max_steps", "2", "--batch_size", str(s.deacl_batch),
                              "--num_train_samples", str(s.deacl_train), "--attack_steps", str(s.deacl_attack_steps), "--eval_every", str(s.eval_every),
                              "--eval_tasks", *s.eval_tasks, "--eval_train_samples", str(s.eval_train), "--eval_samples", str(s.eval_samples),
                              "--checkpoint_every", "1", "--log_every", "1", "--output_dir", str(deacl)], check_deacl)

    if (gpus >= 2 and not smoke) or cpu_launch:
        launcher = [r.python, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                    "--mixed_precision", "no", "--dynamo_backend", "no"]

        def check_launch(log: str) -> str:
            two, one = primary(records(out / "launch_2proc")), primary(records(bench))
            off = differing(two, one, s.eval)
            assert not off, f"2 processes: clean {_fmt(two)}; 1 process: {_fmt(one)}: {off} differ (heads trained differently?)"
            return f"2 processes (heads trained there): clean {_fmt(two)}, equal to 1 process's"

        r.run("launch_2proc", r.grid(out / "launch_2proc"), check_launch, launcher=launcher,
              env={"ACCELERATE_USE_CPU": "1"} if cpu_launch else None)
    else:
        why = "smoke run on CPU (--cpu_launch runs it on 2 CPU processes)" if smoke else f"needs 2 GPUs, this machine has {gpus}"
        r.record("launch_2proc", "accelerate launch --multi_gpu --num_processes 2 -m hf_ssl_robust.cli benchmark ...", 0.0, "skipped", why)

    from . import cli

    calibration = out / "calibration.json"
    if "plan" in cli.COMMANDS:
        def check_calibration(log: str) -> str:
            assert calibration.is_file(), "no calibration file written"
            return f"wrote {calibration.name} ({calibration.stat().st_size} bytes)"

        r.run("calibrate", ["plan", "--calibrate", str(calibration)], check_calibration)
    else:
        r.record("calibrate", r.shown(["plan", "--calibrate", str(calibration)]), 0.0, "skipped",
                 "this version has no `plan` command (the optional cost-calibration step runs once it exists)")

"""A full pipeline rehearsal: every path users run on a GPU, end to end, at small sizes, in one call.

    python -m hf_ssl_robust.rehearsal --out DIR            # on a CUDA machine (<= 8 min on one H100)
    python -m hf_ssl_robust.rehearsal --smoke --out DIR    # the same steps at toy sizes on CPU (a test runs it)
    scripts/gpu_check.sh [--smoke] [--out DIR]             # the same, as a script

Steps, each timed and checked from what it wrote (bundled `shapes-resnet-tiny`, ShapesWorld; the steps
and their checks are in `rehearsal_steps.py`):

1. `env`: torch / CUDA / GPUs / package versions, and that everything the CLI needs imports.
2. `benchmark`: head training + evaluation on a 2-cell grid (classification + segmentation, one ε).
3. `resume`: the same command in the same output directory: every cell and head must be reused
   (files untouched) and the results identical.
4. `heads_dir`: a fresh output directory with `--heads_dir` at step 2's heads: no head trained, the
   same clean numbers.
5. `batch_size_auto`: `--batch_size auto` (heads reused): the batch it picked; clean numbers equal,
   attacked ones close (per-image seeds: the batch size must not matter).
6. `worst_case`: APGD added and `--worst_case`: a `worst` row per task, never above any attack's accuracy.
7. `bf16`: `--mixed_precision bf16` (heads reused): runs, and how far its clean numbers are from fp32.
8. `deacl_evolution`: `deacl` for 2 steps with the robustness-evolution callback (every step; every
   other under `--smoke`): the encoder saved, `evolution.jsonl` at the expected steps and its plot.
9. `launch_2proc`: step 2 under `accelerate launch --multi_gpu --num_processes 2` (heads trained
   there too) with the same clean numbers; skipped, and said so, with fewer than 2 GPUs
   (`--cpu_launch`: on 2 CPU processes instead).
10. `calibrate` (optional): `hf-ssl-robust plan --calibrate DIR/calibration.json` when this version
   has the `plan` command; skipped otherwise.

It prints a Markdown table (step, command, seconds, result: ok / FAIL / skipped + one line), writes
it to `DIR/rehearsal.md` and as JSON to `DIR/rehearsal.json` with each step's log under `DIR/logs/`,
and exits 1 if any step failed. On the GPU every step is a subprocess with its own time limit
inside a total budget; `--smoke` runs the CLI steps in this process (one import instead of ten)
and `env` as a subprocess.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import shlex
import subprocess
import sys
import time
import traceback
from pathlib import Path

ENCODER = "shapes-resnet-tiny"
CLI = ["-m", "hf_ssl_robust.cli"]
NEEDED = ("torch", "transformers", "accelerate", "safetensors", "huggingface_hub", "numpy", "PIL", "matplotlib", "tqdm", "yaml", "jinja2")


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Sizes and time limits of one rehearsal (seconds per step, and for all of them)."""

    train: int
    eval: int
    head_epochs: int
    steps: int
    batch: int
    head_lr: float | None  # None: the classification lr search of a real run
    deacl_batch: int
    deacl_train: int
    deacl_attack_steps: int
    eval_tasks: tuple[str, ...]
    eval_every: int
    eval_train: int
    eval_samples: int
    limit_s: int
    budget_s: int
    threads: int | None = None  # torch threads per process (None: torch's default)


FULL = Sizes(train=1000, eval=256, head_epochs=5, steps=10, batch=64, head_lr=None, deacl_batch=64, deacl_train=256, deacl_attack_steps=5,
             eval_tasks=("classification", "segmentation", "depth"), eval_every=1, eval_train=300, eval_samples=64, limit_s=120, budget_s=470)
SMOKE = Sizes(train=24, eval=8, head_epochs=1, steps=1, batch=8, head_lr=1e-3, deacl_batch=4, deacl_train=8, deacl_attack_steps=1,
              eval_tasks=("classification",), eval_every=2, eval_train=16, eval_samples=4, limit_s=300, budget_s=900,
              threads=1)


@dataclasses.dataclass
class Step:
    name: str
    command: str
    seconds: float
    status: str  # ok | FAIL | skipped
    detail: str
    log: str | None = None


class Rehearsal:
    def __init__(self, out: Path, sizes: Sizes, inprocess: bool, python: str = sys.executable):
        self.out, self.sizes, self.inprocess, self.python = out, sizes, inprocess, python
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.steps: list[Step] = []
        self.started = time.perf_counter()

    # -- running -------------------------------------------------------------------------------
    def budget_left(self) -> float:
        return self.sizes.budget_s - (time.perf_counter() - self.started)

    def grid(self, output_dir: Path, **overrides) -> list[str]:
        """The 2-cell benchmark grid; `overrides` replace or add flags (`None` drops one)."""
        s = self.sizes
        flags = {"encoders": [ENCODER], "tasks": ["classification", "segmentation"], "datasets": ["shapes"],
                 "attacks": ["embed", "pgd", "segpgd"], "eps": ["8/255"], "steps": s.steps, "num_train_samples": s.train,
                 "max_eval_samples": s.eval, "head_epochs": s.head_epochs, "head_lr": s.head_lr, "batch_size": s.batch,
                 "num_examples": 1, "seed": 0, "output_dir": output_dir}
        flags.update(overrides)
        argv = ["benchmark"]
        for key, value in flags.items():
            if value is None or value is False:
                continue
            argv.append(f"--{key}")
            if value is not True:
                argv += [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
        return argv

    def shown(self, argv: list[str], launcher: list[str] | None = None) -> str:
        """The command as a user would type it (`hf-ssl-robust ...`, `accelerate launch ... -m hf_ssl_robust.cli ...`)."""
        prefix = ["hf-ssl-robust"] if launcher is None else ["accelerate", "launch", *launcher[3:], *CLI]  # launcher: python -m accelerate...
        return " ".join(shlex.quote(a) for a in prefix + argv).replace(str(self.out), "$OUT")

    def cli(self, name: str, argv: list[str], launcher: list[str] | None = None, env: dict | None = None) -> tuple[int, str, float]:
        """Run one CLI command; returns (exit code, its log, seconds)."""
        log = self.logs / f"{name}.log"
        start = time.perf_counter()
        if self.inprocess and launcher is None:
            rc = self._inprocess(argv, log)
        else:
            cmd = (launcher or [self.python]) + CLI + argv
            env = dict(os.environ, HF_SSL_ROBUST_LOG_LEVEL="INFO", PYTHONUNBUFFERED="1", **(env or {}))
            if self.sizes.threads:
                env["OMP_NUM_THREADS"] = str(self.sizes.threads)
            limit = max(1.0, min(self.sizes.limit_s, self.budget_left()))
            with log.open("w") as f:
                try:
                    rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=limit).returncode
                except subprocess.TimeoutExpired:
                    f.write(f"\n[rehearsal] stopped after its {limit:.0f} s limit\n")
                    rc = 124
        return rc, log.read_text(errors="replace"), time.perf_counter() - start

    def _inprocess(self, argv: list[str], log: Path) -> int:
        from accelerate.state import AcceleratorState

        from . import cli

        AcceleratorState._reset_state(reset_partial_state=True)  # each step makes its own Accelerator, as a new process would
        with log.open("w") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
            handler = logging.StreamHandler(f)
            handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
            root, level = logging.getLogger(), logging.getLogger().level
            root.addHandler(handler)
            root.setLevel(logging.INFO)
            try:
                return cli.main(argv)
            except SystemExit as exc:
                return exc.code if isinstance(exc.code, int) else 1
            except Exception:  # noqa: BLE001 - the step fails, the rehearsal goes on
                traceback.print_exc(file=f)
                return 1
            finally:
                root.removeHandler(handler)
                root.setLevel(level)

    def record(self, name: str, command: str, seconds: float, status: str, detail: str) -> Step:
        log = self.logs / f"{name}.log"
        detail = detail.replace("\n", " ").replace("|", "/").replace(str(self.out), "$OUT")
        step = Step(name, command, round(seconds, 1), status, detail,
                    str(log.relative_to(self.out)) if log.is_file() else None)
        self.steps.append(step)
        print(f"[rehearsal] {name}: {status} ({step.seconds} s) {step.detail}", flush=True)
        return step

    def run(self, name: str, argv: list[str], check, launcher: list[str] | None = None, env: dict | None = None) -> Step:
        """Run a CLI step unless the budget is spent; `check(log) -> detail` raises `AssertionError` on failure."""
        command = self.shown(argv, launcher)
        if self.budget_left() < 5:
            return self.record(name, command, 0.0, "skipped", f"the {self.sizes.budget_s} s budget is spent")
        rc, log, seconds = self.cli(name, argv, launcher, env)
        if rc != 0:
            return self.record(name, command, seconds, "FAIL", f"exit {rc}: {last_line(log)}")
        try:
            return self.record(name, command, seconds, "ok", check(log))
        except (AssertionError, OSError, KeyError, ValueError) as err:
            return self.record(name, command, seconds, "FAIL", str(err) or type(err).__name__)

    # -- reporting -----------------------------------------------------------------------------
    def table(self) -> str:
        rows = ["| step | command | seconds | result |", "|---|---|---|---|"]
        for s in self.steps:
            rows.append(f"| {s.name} | `{s.command}` | {s.seconds:.1f} | {s.status}: {s.detail} |")
        return "\n".join(rows) + "\n"

    def write(self, device: str) -> int:
        failed = [s.name for s in self.steps if s.status == "FAIL"]
        report = {"device": device, "sizes": dataclasses.asdict(self.sizes), "in_process": self.inprocess,
                  "total_seconds": round(time.perf_counter() - self.started, 1), "failed": failed,
                  "steps": [dataclasses.asdict(s) for s in self.steps]}
        (self.out / "rehearsal.json").write_text(json.dumps(report, indent=2) + "\n")
        table = f"Rehearsal on {device}, {report['total_seconds']} s in all\n\n" + self.table()
        (self.out / "rehearsal.md").write_text(table)
        print(table, end="")
        return 1 if failed else 0


def last_line(log: str) -> str:
    """The last informative line of a log (an error message, usually)."""
    lines = [line.strip() for line in log.replace("\r", "\n").splitlines()]
    lines = [line for line in lines if line and not line.startswith(("[A", "warnings.warn")) and "it/s" not in line and "s/it" not in line]
    return lines[-1][:300] if lines else "(no output)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hf_ssl_robust.rehearsal", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.environ.get("OUT") or "outputs/rehearsal", help="Output folder (must be empty or new).")
    parser.add_argument("--smoke", action="store_true", help="Toy sizes on CPU, CLI steps in this process (what the test runs).")
    parser.add_argument("--subprocess", action="store_true", help="With --smoke: run every step as its own process, as on the GPU.")
    parser.add_argument("--cpu_launch", action="store_true", help="Run the 2-process launch step on 2 CPU processes (ACCELERATE_USE_CPU=1).")
    parser.add_argument("--overwrite", action="store_true", help="Delete --out first if it is not empty.")
    parser.add_argument("--budget_s", type=int, default=None, help="Total time budget; steps past it are skipped (default 470 s, smoke 900 s).")
    args = parser.parse_args(argv)

    out = Path(args.out).resolve()
    if out.is_dir() and any(out.iterdir()):
        if not args.overwrite:
            raise SystemExit(f"rehearsal: --out {out} is not empty; the rehearsal must start fresh (resume is one of its checks). "
                             "Pass --overwrite to delete it, or another --out.")
        import shutil

        shutil.rmtree(out)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not args.smoke and gpus == 0:
        print("rehearsal: torch sees no CUDA device; use --smoke for the toy-size run on CPU.", file=sys.stderr)
        return 2
    sizes = SMOKE if args.smoke else FULL
    if args.budget_s is not None:
        sizes = dataclasses.replace(sizes, budget_s=args.budget_s)
    device = f"{gpus} x {torch.cuda.get_device_name(0)}" if gpus else f"CPU ({os.cpu_count()} cores)"
    r = Rehearsal(out, sizes, inprocess=args.smoke and not args.subprocess)
    threads = torch.get_num_threads()
    if sizes.threads:  # smoke: toy tensors, one thread is faster than several fighting over a shared CPU
        torch.set_num_threads(sizes.threads)
    try:
        from .rehearsal_steps import rehearse

        rehearse(r, gpus, args.smoke, cpu_launch=args.cpu_launch)
    finally:
        torch.set_num_threads(threads)
    return r.write(device)


if __name__ == "__main__":
    sys.exit(main())

"""Strength and cost of the `strong` suite (paper attack + EmbedAttack + APGD losses + worst case).

Strength: `run_benchmark` with `--attacks strong` on one encoder (default: the bundled standard
encoder, i.e. the embedded default) at several ε, then per task a table of clean / the paper's task
attack / the best single APGD loss / the per-image worst case over all attacks.
Cost: for every attack of the suite, on one batch of evaluation images at the largest ε, the
forward+backward passes per image (counted on the encoder: every pass of a task model goes
through it) and the wall time per image, measured, plus the suite's total against the paper's
two attacks (EmbedAttack + task attack).

    nice -n 10 python scripts/bench_strength.py --max_eval_samples 128 --output_dir outputs/strength
    python scripts/bench_strength.py --encoder ./enc --eps 8/255 --max_eval_samples 8 --steps 2   # smoke run

Writes `strength.json` and `strength.md` into `--output_dir` (the benchmark's own files under
`benchmark/`, resumable).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from accelerate import Accelerator  # noqa: E402

from hf_ssl_robust.attack_suites import build_attack  # noqa: E402
from hf_ssl_robust.benchmark import BenchmarkConfig, run_benchmark, trained_head  # noqa: E402
from hf_ssl_robust.data import make_dataset  # noqa: E402
from hf_ssl_robust.data.loading import collate  # noqa: E402
from hf_ssl_robust.encoders import bundled_encoders, load_encoder  # noqa: E402
from hf_ssl_robust.results import TASK_TABLES, attack_title, display_name, format_eps, parse_eps, write_json  # noqa: E402
from hf_ssl_robust.sizes import encoder_family, resolve_input_size  # noqa: E402
from hf_ssl_robust.tasks import get_task  # noqa: E402


class PassCounter:
    """Counts the encoder's forward passes, split into those that are differentiated and those that are not."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        self.with_grad = self.without_grad = 0
        self.handle = encoder.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output) -> None:
        pixels = inputs[0] if inputs else None
        if torch.is_grad_enabled() and isinstance(pixels, torch.Tensor) and pixels.requires_grad:
            self.with_grad += 1
        else:
            self.without_grad += 1


def measure_cost(cfg: BenchmarkConfig, encoder_name: str, num_images: int, accelerator) -> list[dict]:
    """Passes and seconds per image of every attack of the suite, per task, at the largest ε."""
    eps = max(cfg.eps_values)
    encoder = load_encoder(encoder_name)
    rows = []
    for task_name in cfg.tasks:
        task = get_task(task_name)
        model, spec = trained_head(cfg, encoder_name, task_name, cfg.datasets[0], accelerator, encoder=encoder)
        size = resolve_input_size(encoder_family(model.encoder.config), spec, cfg.image_size).size  # as the benchmark
        data = make_dataset(spec, "eval", num_samples=num_images, seed=cfg.seed, image_size=size)
        batch = collate([data[i] for i in range(min(num_images, len(data)))])
        pixels, target = batch["pixel_values"], batch[task.target_key]
        for name in cfg.attack_plan[task_name]:
            attack = build_attack(name, task, spec, eps=eps, step_size=cfg.attack_step_size(eps), steps=cfg.steps,
                                  norm=cfg.norm, track_best=cfg.track_best, seed=cfg.seed, progressive=cfg.progressive)
            surface = model.encoder if attack.surface == "encoder" else model
            counter = PassCounter(model.encoder)
            start = time.perf_counter()
            attack.perturb(surface, pixels, None if attack.surface == "encoder" else target)
            seconds = time.perf_counter() - start
            counter.handle.remove()
            rows.append(dict(task=task_name, attack=name, eps=eps, steps=cfg.steps, images=len(pixels),
                             forward_backward=counter.with_grad, forward_only=counter.without_grad,
                             ms_per_image=1000 * seconds / len(pixels)))
    return rows


def strength_table(records: list[dict], plan: dict[str, list[str]]) -> list[dict]:
    """Per task and ε: clean, paper attack, best single APGD loss, EmbedAttack and the worst case."""
    rows = []
    for task, attacks in plan.items():
        metric = TASK_TABLES[task][1]
        higher = task != "depth"
        mine = {(r["attack"], round(float(r["eps"]) * 255, 6)): r["value"] for r in records if r["task"] == task and r["metric"] == metric}
        clean = mine.get(("none", 0.0))
        for eps in sorted({e for a, e in mine if a != "none"}):
            apgd = {a: mine[(a, eps)] for a in attacks if a.startswith("apgd") and (a, eps) in mine}
            best = (min if higher else max)(apgd, key=apgd.get) if apgd else None
            rows.append(dict(task=task, metric=metric, eps=eps / 255, clean=clean, embed=mine.get(("embed", eps)),
                             paper=mine.get((get_task(task).task_attack, eps)), apgd=apgd.get(best), apgd_loss=best,
                             worst=mine.get(("worst", eps))))
    return rows


def markdown(strength: list[dict], cost: list[dict], encoder: str, cfg: BenchmarkConfig) -> str:
    fmt = lambda v, m: "–" if v is None else (f"{v:.3f}" if m == "rmse" else f"{v:.2f}")  # noqa: E731
    lines = [f"Encoder `{display_name(encoder)}`, ShapesWorld, {cfg.max_eval_samples} evaluation images, {cfg.steps} steps, L-inf.", "",
             "| Task (metric) | ε | Clean | EmbedAttack | Paper attack | Best APGD | Worst case |", "|---|---|---|---|---|---|---|"]
    for r in strength:
        m = r["metric"]
        apgd = f"{fmt(r['apgd'], m)} ({attack_title(r['apgd_loss'])})" if r["apgd_loss"] else "–"
        lines.append(f"| {r['task']} ({m}) | {format_eps(r['eps'])} | {fmt(r['clean'], m)} | {fmt(r['embed'], m)} | "
                     f"{fmt(r['paper'], m)} ({attack_title(get_task(r['task']).task_attack)}) | {apgd} | {fmt(r['worst'], m)} |")
    lines += ["", f"Cost per image at ε = {format_eps(cost[0]['eps']) if cost else '–'} (forward+backward passes, forward-only passes, "
              "wall time; one batch):", "", "| Task | Attack | fwd+bwd | fwd only | ms / image |", "|---|---|---|---|---|"]
    for r in cost:
        lines.append(f"| {r['task']} | {attack_title(r['attack'])} | {r['forward_backward']} | {r['forward_only']} | {r['ms_per_image']:.1f} |")
    lines += ["", "| Task | paper's two attacks: passes, ms / image | strong suite: passes, ms / image | ratio (time) |", "|---|---|---|---|"]
    for task in cfg.tasks:
        mine = [r for r in cost if r["task"] == task]
        paper = [r for r in mine if r["attack"] in ("embed", get_task(task).task_attack)]
        tot = lambda rs: (sum(r["forward_backward"] + r["forward_only"] for r in rs), sum(r["ms_per_image"] for r in rs))  # noqa: E731
        (pp, pt), (sp, st) = tot(paper), tot(mine)
        lines.append(f"| {task} | {pp}, {pt:.1f} | {sp}, {st:.1f} | {st / pt:.1f}× |" if pt else f"| {task} | – | {sp}, {st:.1f} | – |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--encoder", default=None, help="default: the first bundled encoder (the embedded default's standard one)")
    p.add_argument("--eps", nargs="+", default=["2/255", "4/255", "8/255"])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--max_eval_samples", type=int, default=128)
    p.add_argument("--num_train_samples", type=int, default=None)
    p.add_argument("--head_epochs", type=int, default=None)
    p.add_argument("--image_size", type=int, default=None)
    p.add_argument("--batch_size", default="32")
    p.add_argument("--cost_images", type=int, default=16, help="images in the batch the cost is measured on")
    p.add_argument("--tasks", nargs="+", default=["classification", "segmentation", "depth"])
    p.add_argument("--output_dir", default="outputs/strength")
    args = p.parse_args(argv)
    encoder = args.encoder or next(iter(bundled_encoders().values()), None)
    if encoder is None:
        raise SystemExit("No --encoder given and no bundled encoder found.")
    for e in args.eps:
        parse_eps(e)
    out = Path(args.output_dir)
    cfg = BenchmarkConfig(encoders=[str(encoder)], tasks=args.tasks, attacks=["strong"], eps=args.eps, steps=args.steps,
                          max_eval_samples=args.max_eval_samples, num_train_samples=args.num_train_samples,
                          head_epochs=args.head_epochs, image_size=args.image_size, batch_size=args.batch_size,
                          output_dir=str(out / "benchmark"), num_examples=0)
    accelerator = Accelerator()
    start = time.perf_counter()
    records = run_benchmark(cfg, accelerator)
    benchmark_s = time.perf_counter() - start
    cost = measure_cost(cfg, str(encoder), args.cost_images, accelerator)
    strength = strength_table(records, cfg.attack_plan)
    report = {"encoder": str(encoder), "args": vars(args), "attacks_per_task": cfg.attack_plan, "strength": strength, "cost": cost,
              "benchmark_seconds": round(benchmark_s, 1),
              "machine": {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
                          "device": str(accelerator.device)}}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "strength.json", report)
    text = markdown(strength, cost, str(encoder), cfg)
    (out / "strength.md").write_text(text)
    print(text)
    return report


if __name__ == "__main__":
    main()

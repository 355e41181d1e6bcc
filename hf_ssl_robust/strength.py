"""Strength and cost of the `strong` suite and Square on one encoder (`docs/strength/`).

Strength: `run_benchmark` with `--attacks strong square` (the paper's task attack + EmbedAttack +
APGD with every loss + the per-image worst case, and the gradient-free Square attack with the
benchmark's query budget) on one encoder (default: the bundled standard encoder, i.e. the embedded
default) at several ε; then per task and ε one row: clean / EmbedAttack / the paper's task attack /
the best single APGD loss / Square / the worst case over all of them, each with its 95 % bootstrap
interval (`ci95`), beside the image-free prior's value (the benchmark's `priors`), and the warnings
(`flags`) raised on any attack of that cell, with their markers.
Cost: for every attack, on one batch of evaluation images at the largest ε, the forward+backward and
forward-only passes per image (counted on the encoder: every pass of a task model goes through it;
per image, so Square's early stop on classification shows) and the wall time per image, plus the
suite's and Square's totals against the paper's two attacks (EmbedAttack + task attack).

    nice -n 10 python -m hf_ssl_robust.strength --max_eval_samples 128 --output_dir outputs/strength
    python -m hf_ssl_robust.strength --encoder ./enc --eps 8/255 --max_eval_samples 8 --steps 2   # smoke run

Writes `strength.json` and `strength.md` into `--output_dir` (the benchmark's own files under
`benchmark/`, resumable). `scripts/bench_strength.py` is the same program.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from .attack_suites import build_attack
from .benchmark import BenchmarkConfig, git_state, run_benchmark, trained_head
from .data import get_dataset_spec, make_dataset
from .data.loading import collate
from .diagnostics import flag_legend, flag_marker
from .encoders import bundled_encoders, load_encoder
from .priors import PRIOR_ENCODER
from .results import TASK_TABLES, attack_title, display_name, format_eps, format_value, parse_eps, write_json
from .sizes import encoder_family, resolve_input_size
from .tasks import get_task

ATTACKS = ["strong", "square"]
COLUMNS = ("clean", "embed", "paper", "apgd", "square", "worst")  # the strength table's value columns, in order


class PassCounter:
    """Counts the images through the encoder, split into differentiated passes and the others.

    Counts images, not calls, so an attack that queries a subset of the batch (Square stops an image
    once it is misclassified) is charged only for the images it sends."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        self.with_grad = self.without_grad = 0
        self.handle = encoder.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output) -> None:
        pixels = inputs[0] if inputs else None
        n = pixels.shape[0] if isinstance(pixels, torch.Tensor) and pixels.ndim == 4 else 1
        if torch.is_grad_enabled() and isinstance(pixels, torch.Tensor) and pixels.requires_grad:
            self.with_grad += n
        else:
            self.without_grad += n


def cell_attacks(cfg: BenchmarkConfig, task: str) -> list[str]:
    """The attacks a benchmark cell of `task` runs (as `_run_cell`: the dataset's classes decide APGD-T)."""
    return get_task(task).attacks(cfg.attacks, get_dataset_spec(cfg.datasets[0], task=task))


def measure_cost(cfg: BenchmarkConfig, encoder_name: str, num_images: int, accelerator) -> list[dict]:
    """Passes and milliseconds per image of every attack of a cell, per task, at the largest ε."""
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
        for name in cell_attacks(cfg, task_name):
            attack = build_attack(name, task, spec, eps=eps, step_size=cfg.attack_step_size(eps), steps=cfg.steps, norm=cfg.norm,
                                  track_best=cfg.track_best, seed=cfg.seed, progressive=cfg.progressive, square_queries=cfg.square_queries)
            surface = model.encoder if attack.surface == "encoder" else model
            counter = PassCounter(model.encoder)
            start = time.perf_counter()
            attack.perturb(surface, pixels, None if attack.surface == "encoder" else target)
            seconds = time.perf_counter() - start
            counter.handle.remove()
            n = len(pixels)
            rows.append(dict(task=task_name, attack=name, eps=eps, steps=attack.steps, images=n,
                             forward_backward=round(counter.with_grad / n, 2), forward_only=round(counter.without_grad / n, 2),
                             ms_per_image=1000 * seconds / n))
    return rows


def strength_table(records: list[dict], plan: dict[str, list[str]]) -> list[dict]:
    """Per task and ε: clean, EmbedAttack, paper attack, best single APGD loss, Square and the worst case
    (values, `ci95` per column where the records carry one), and the `flags` of every attack of the cell."""
    rows = []
    for task, attacks in plan.items():
        metric = TASK_TABLES[task][1]
        higher = task != "depth"
        same = [r for r in records if r["task"] == task and r["metric"] == metric]
        # The image-free prior (`priors.py`) has records of its own: a baseline column, never the clean number.
        mine = {(r["attack"], round(float(r["eps"]) * 255, 6)): r for r in same if r["encoder"] != PRIOR_ENCODER}
        prior = next((r for r in same if r["encoder"] == PRIOR_ENCODER), None)
        clean = mine.get(("none", 0.0))
        for eps in sorted({e for a, e in mine if a != "none"}):
            apgd = {a: mine[(a, eps)]["value"] for a in attacks if a.startswith("apgd") and (a, eps) in mine}
            best = (min if higher else max)(apgd, key=apgd.get) if apgd else None
            square = next((a for a in attacks if a.startswith("square") and (a, eps) in mine), None)
            chosen = dict(prior=prior, clean=clean, embed=mine.get(("embed", eps)), paper=mine.get((get_task(task).task_attack, eps)),
                          apgd=mine.get((best, eps)), square=mine.get((square, eps)), worst=mine.get(("worst", eps)))
            flags = {a: list(r.get("flags") or []) for (a, e), r in mine.items() if (e == eps or a == "none") and r.get("flags")}
            rows.append(dict(task=task, metric=metric, eps=eps / 255, **{k: r and r["value"] for k, r in chosen.items()},
                             apgd_loss=best, square_attack=square, flags=flags,
                             ci95={k: r["ci95"] for k, r in chosen.items() if r and r.get("ci95")}))
    return rows


def _cell(row: dict, column: str) -> str:
    value = row[column]
    return format_value(None if value is None else {"value": value, "ci95": row.get("ci95", {}).get(column)}, row["metric"])


def _flags_cell(flags: dict[str, list[str]]) -> str:
    return ", ".join(f"{attack_title(a)}{flag_marker(f)}" for a, f in flags.items()) or "–"


def markdown(strength: list[dict], cost: list[dict], encoder: str, cfg: BenchmarkConfig) -> str:
    """`strength.md`: the strength table (legend of the flags under it) and the two cost tables."""
    lines = [f"Encoder `{display_name(encoder)}`, ShapesWorld, {cfg.max_eval_samples} evaluation images, {cfg.steps} steps "
             f"(Square: {cfg.square_queries} queries), L-inf. Worst case: per image over every attack of the cell, Square included.",
             "", "| Task (metric) | ε | Prior (no image) | Clean | EmbedAttack | Paper attack | Best APGD | Square | Worst case | Flags |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    seen: set[str] = set()
    for r in strength:
        paper = f"{_cell(r, 'paper')} ({attack_title(get_task(r['task']).task_attack)})"
        apgd = f"{_cell(r, 'apgd')} ({attack_title(r['apgd_loss'])})" if r["apgd_loss"] else "–"
        seen.update(f for fs in r["flags"].values() for f in fs)
        lines.append(f"| {r['task']} ({r['metric']}) | {format_eps(r['eps'])} | {_cell(r, 'prior')} | {_cell(r, 'clean')} | {_cell(r, 'embed')} | {paper} | "
                     f"{apgd} | {_cell(r, 'square')} | {_cell(r, 'worst')} | {_flags_cell(r['flags'])} |")
    lines += ["", "± : half-width of the 95 % bootstrap interval over images (`ci95`). Flags: the warnings raised on any attack of "
              "the cell (`flags` in strength.json), " + ("none." if not seen else "marked:"), ""]
    if seen:
        lines += [flag_legend(seen), ""]
    lines += [f"Cost per image at ε = {format_eps(cost[0]['eps']) if cost else '–'} (forward+backward passes, forward-only passes, "
              "wall time; one batch):", "", "| Task | Attack | fwd+bwd | fwd only | ms / image |", "|---|---|---|---|---|"]
    passes = lambda v: f"{round(v, 1):g}"  # noqa: E731  (Square's forwards per image are an average: it stops fooled images)
    for r in cost:
        lines.append(f"| {r['task']} | {attack_title(r['attack'])} | {passes(r['forward_backward'])} | {passes(r['forward_only'])} | "
                     f"{r['ms_per_image']:.1f} |")
    lines += ["", "| Task | paper's two attacks: passes, ms / image | strong suite: passes, ms / image | ratio (time) | "
              "Square: passes, ms / image | ratio (time) |", "|---|---|---|---|---|---|"]
    tot = lambda rs: (sum(r["forward_backward"] + r["forward_only"] for r in rs), sum(r["ms_per_image"] for r in rs))  # noqa: E731
    for task in cfg.tasks:
        mine = [r for r in cost if r["task"] == task]
        (pp, pt) = tot([r for r in mine if r["attack"] in ("embed", get_task(task).task_attack)])
        (sp, st) = tot([r for r in mine if not r["attack"].startswith("square")])
        (qp, qt) = tot([r for r in mine if r["attack"].startswith("square")])
        ratio = lambda t: f"{t / pt:.1f}×" if pt else "–"  # noqa: E731
        lines.append(f"| {task} | {passes(pp)}, {pt:.1f} | {passes(sp)}, {st:.1f} | {ratio(st)} | {passes(qp)}, {qt:.1f} | {ratio(qt)} |")
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m hf_ssl_robust.strength", description=__doc__.split("\n\n")[0])
    p.add_argument("--encoder", default=None, help="default: the first bundled encoder (the embedded default's standard one)")
    p.add_argument("--eps", nargs="+", default=["2/255", "4/255", "8/255"])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--square_queries", type=int, default=None, help="Square's query budget (default: the benchmark's)")
    p.add_argument("--max_eval_samples", type=int, default=128)
    p.add_argument("--num_train_samples", type=int, default=None)
    p.add_argument("--head_epochs", type=int, default=None)
    p.add_argument("--image_size", type=int, default=None)
    p.add_argument("--batch_size", default="32")
    p.add_argument("--cost_images", type=int, default=16, help="images in the batch the cost is measured on")
    p.add_argument("--tasks", nargs="+", default=["classification", "segmentation", "depth"])
    p.add_argument("--output_dir", default="outputs/strength")
    args = p.parse_args(argv)
    for e in args.eps:
        parse_eps(e)  # a bad ε fails here, before any work
    if args.square_queries is not None and args.square_queries < 1:
        p.error(f"--square_queries must be at least 1, got {args.square_queries}.")
    return args


def main(argv=None) -> dict:
    """Run the strength benchmark and the cost measurement; write and return the report."""
    from accelerate import Accelerator

    args = parse_args(argv)
    encoder = args.encoder or next(iter(bundled_encoders()), None)  # by name: the report reads the same on any machine
    if encoder is None:
        raise SystemExit("No --encoder given and no bundled encoder found.")
    out = Path(args.output_dir)
    extra = {"square_queries": args.square_queries} if args.square_queries is not None else {}
    cfg = BenchmarkConfig(encoders=[str(encoder)], tasks=args.tasks, attacks=list(ATTACKS), eps=args.eps, steps=args.steps,
                          max_eval_samples=args.max_eval_samples, num_train_samples=args.num_train_samples,
                          head_epochs=args.head_epochs, image_size=args.image_size, batch_size=args.batch_size,
                          output_dir=str(out / "benchmark"), num_examples=0, **extra)
    accelerator = Accelerator()
    start = time.perf_counter()
    records = run_benchmark(cfg, accelerator)
    benchmark_s = time.perf_counter() - start
    cost = measure_cost(cfg, str(encoder), args.cost_images, accelerator)
    plan = {task: cell_attacks(cfg, task) for task in cfg.tasks}
    strength = strength_table(records, plan)
    cells = {f"{r['task']} {format_eps(r['eps'])}": r["seconds"] for r in records if r["attack"] != "none" and r["metric"] == TASK_TABLES[r["task"]][1]}
    rev, dirty = git_state()
    report = {"encoder": str(encoder), "args": vars(args), "git_revision": rev, "git_dirty": dirty,
              "attacks_per_task": plan, "square_queries": cfg.square_queries,
              "strength": strength, "cost": cost, "benchmark_seconds": round(benchmark_s, 1), "cell_seconds": cells,
              "machine": {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
                          "device": str(accelerator.device)}}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "strength.json", report)
    text = markdown(strength, cost, str(encoder), cfg)
    (out / "strength.md").write_text(text)
    print(text)  # the program's output (a script entry point, not library logging)
    return report


README_BLOCKS = ("strength-results", "flags-cost")  # README's blocks written from docs/strength/


def readme_blocks(docs_dir: str | Path) -> dict[str, str]:
    """What README holds between each block's markers: `strength.md` and `render(flags_cost.json)` of `docs_dir`."""
    from .flags_cost import render

    docs_dir = Path(docs_dir)
    out = {}
    for name, path in zip(README_BLOCKS, ("strength.md", "flags_cost.json")):
        if not (docs_dir / path).is_file():
            raise ValueError(f"{docs_dir / path} is missing: run `python -m hf_ssl_robust.strength` (strength.md) or "
                             "`python -m hf_ssl_robust.flags_cost` (flags_cost.json) and copy the outputs there.")
        out[name] = (docs_dir / path).read_text() if path.endswith(".md") else render(json.loads((docs_dir / path).read_text()))
    return out


def readme_block(readme: str, name: str) -> str:
    """The text between `<!-- name -->\\n` and `<!-- /name -->` in README; ValueError if the markers are missing."""
    begin, end = f"<!-- {name} -->\n", f"<!-- /{name} -->"
    start, stop = readme.find(begin), readme.find(end)
    if start < 0 or stop < start:
        raise ValueError(f"README lacks the block {begin.strip()} ... {end}: add both markers where the tables go.")
    return readme[start + len(begin): stop]


def sync_readme(readme: str | Path = "README.md", docs_dir: str | Path = "docs/strength", check: bool = False) -> list[str]:
    """Write README's strength blocks from `docs_dir` (or with `check`, only compare); returns the stale blocks' names."""
    path = Path(readme)
    text = path.read_text()
    wanted = readme_blocks(docs_dir)
    stale = [name for name, block in wanted.items() if readme_block(text, name) != block]
    if stale and not check:
        for name in stale:
            begin = f"<!-- {name} -->\n"
            head, rest = text.split(begin, 1)
            text = head + begin + wanted[name] + rest[rest.index(f"<!-- /{name} -->"):]
        path.write_text(text)
    return stale


if __name__ == "__main__":
    main()

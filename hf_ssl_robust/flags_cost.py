"""What the automatic warnings (`diagnostics.py`) see and cost, measured on one encoder (`docs/strength/`).

Per task, with a head fitted on cached features of 512 ShapesWorld scenes (seconds; the numbers are
about the attacks, not the heads) and `num_images` test scenes at ε = 8/255:

* cost: the paper's cell (EmbedAttack + the task attack, 20 steps) evaluated with every check and
  with every check switched off, interleaved, best of two, in CPU seconds of one intra-op thread
  (robust to other jobs on the machine); the warnings' cost is their share of the cell without them.
  Then the same cell with the `black_box_stronger` check plugged in (Square, `square_queries` per image,
  on the first `BLACK_BOX_SAMPLES` images): Square's share of the cell without checks.
* evidence: metric checkpoints, flags and zero-gradient shares of the 20-step cell (+ worst case), of a
  2-step task attack (should be `not_converged`) and of a 100-step APGD (should not be); for
  classification also the head with its logits scaled by 1e4 (saturated softmax: `zero_gradient` on
  PGD, not on the scale-invariant APGD-DLR).

    python -m hf_ssl_robust.flags_cost --encoder shapes-resnet-tiny --out docs/strength/flags_cost.json

`render(report)` is the Markdown README quotes between `<!-- flags-cost -->` markers (a test keeps them equal).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path
from unittest import mock

import torch

from . import evaluation
from .attack_suites import build_attack
from .data import get_dataset_spec
from .data.synthetic import render_scenes
from .diagnostics import BLACK_BOX_SAMPLES, CellDiagnostics, flag_marker
from .diagnostics_blackbox import square_hook
from .encoders import load_encoder
from .heads import SSLForDepthEstimation, SSLForImageClassification, SSLForSemanticSegmentation
from .results import attack_title, display_name
from .tasks import get_task

HEADS = {"classification": (SSLForImageClassification, "labels"), "segmentation": (SSLForSemanticSegmentation, "mask"),
         "depth": (SSLForDepthEstimation, "depth")}
APGD_LOSS = {"classification": "ce", "segmentation": "masked_ce", "depth": "depth"}
EPS, STEPS, SHORT, LONG = 8 / 255, 20, 2, 100
TRAIN_SCENES, SIZE = 512, 64


def fit_head(encoder, task: str, spec, scenes, epochs: int = 30, lr: float = 1e-2):
    """A head of `task` on `encoder`, fitted with Adam on the cached features of `scenes` (seeded init)."""
    cls, key = HEADS[task]
    torch.manual_seed(0)  # the head's random init: the same numbers on every run
    model = cls.from_encoder(encoder, **get_task(task).head_kwargs(spec, 64)).eval()
    n = len(scenes["pixel_values"])
    with torch.no_grad():
        feats = torch.cat([model.encode_features(scenes["pixel_values"][i: i + 64]) for i in range(0, n, 64)])
    opt = torch.optim.Adam(list(model.head_parameters()), lr=lr)
    model.train()
    for _ in range(epochs):
        for i in range(0, n, 64):
            loss = model.forward_features(feats[i: i + 64], (SIZE, SIZE), labels=scenes[key][i: i + 64]).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def _checks_off():
    """Every check of the evaluation switched off (the same evaluation otherwise)."""
    return _patches(
        (evaluation, "observe_steps", lambda observer: contextlib.nullcontext()),
        (evaluation, "_clean", lambda t, m, d: (lambda x, y: evaluation._predict(t, m, x))),
        (CellDiagnostics, "update_batch", lambda *a, **k: None), (CellDiagnostics, "finish", lambda *a, **k: None))


@contextlib.contextmanager
def _patches(*patches):
    with contextlib.ExitStack() as stack:
        for owner, name, value in patches:
            stack.enter_context(mock.patch.object(owner, name, value))
        yield


def timed_eval(model, loader, task, spec, attacks, checks: bool = True, **kw) -> tuple[dict, float]:
    """`evaluation.evaluate` and its CPU seconds (of this process: robust to other jobs on the machine)."""
    with contextlib.nullcontext() if checks else _checks_off():
        start = time.process_time()
        out = evaluation.evaluate(model, loader, task, spec, attacks=attacks, **kw)
        return out, time.process_time() - start


def _keep(results: dict, metric: str) -> dict:
    return {name: {k: v[k] for k in (metric, "flags", "checkpoints", "zero_gradient_share") if k in v} for name, v in results.items()}


def measure_task(encoder, name: str, train, test, num_images: int, square_queries: int) -> dict:
    task, spec = get_task(name), get_dataset_spec("shapes", task=name)
    metric = task.primary_metric
    model = fit_head(encoder, name, spec, train)
    loader = [{"pixel_values": test["pixel_values"][i: i + 16], task.target_key: test[task.target_key][i: i + 16]}
              for i in range(0, num_images, 16)]
    make = lambda a, steps: build_attack(a, task, spec, eps=EPS, step_size=EPS / 4, steps=steps, seed=0)  # noqa: E731
    cell = {"embed": make("embed", STEPS), task.task_attack: make(task.task_attack, STEPS)}
    times: dict[bool, list[float]] = {False: [], True: []}
    for on in (False, True, False, True):  # interleaved, best of two: drifts of the machine hit both alike
        out, seconds = timed_eval(model, loader, task, spec, cell, checks=on)
        times[on].append(seconds)
        base = out if not on else base
    t_off, t_on = min(times[False]), min(times[True])
    hook = square_hook(name, eps=EPS, queries=square_queries, seed=0, ignore_index=spec.ignore_index if spec.ignore_index is not None else 255,
                       max_depth=float(spec.max_depth or 10.0))
    checked, t_square = timed_eval(model, loader, task, spec, cell, black_box=hook)
    full, _ = timed_eval(model, loader, task, spec, cell, worst_case=True)
    short, _ = timed_eval(model, loader, task, spec, {f"{task.task_attack}@{SHORT}": make(task.task_attack, SHORT)})
    apgd = f"apgd:{APGD_LOSS[name]}"
    long, _ = timed_eval(model, loader, task, spec, {f"{apgd}@{LONG}": make(apgd, LONG)})
    report = {"metric": metric, "higher_is_better": task.higher_is_better, "images": num_images,
              "cpu_seconds_without_checks": round(t_off, 3), "cpu_seconds_with_checks": round(t_on, 3),
              "cost_share": round((t_on - t_off) / t_off, 4), "cpu_seconds_with_square_check": round(t_square, 3),
              "square_check_share": round((t_square - t_on) / t_off, 4),
              "square_check_flags": {k: v["flags"] for k, v in checked.items() if k != "none"},
              "same_metrics": all(full[k][metric] == base[k][metric] for k in base),
              "attacks": {f"{k}@{STEPS}" if k in cell else k: v for res in (full, short, long) for k, v in _keep(res, metric).items()}}
    if name == "classification":  # the same head with its logits scaled by 1e4: a saturated softmax
        with torch.no_grad():
            model.classifier.weight.mul_(1e4)
            model.classifier.bias.mul_(1e4)
        scaled, _ = timed_eval(model, loader, task, spec, {"pgd": make("pgd", STEPS), "apgd:dlr": make("apgd:dlr", STEPS)})
        report["logits_x1e4"] = _keep(scaled, metric)
    return report


def measure(encoder_name: str, num_images: int = 32, tasks=("classification", "segmentation", "depth"),
            square_queries: int = 1000, train_scenes: int = TRAIN_SCENES) -> dict:
    """The report of every task (see the module docstring); one intra-op thread while it runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        encoder = load_encoder(encoder_name)
        train, test = render_scenes(train_scenes, SIZE, seed=1), render_scenes(num_images, SIZE, seed=2)
        tasks_report = {name: measure_task(encoder, name, train, test, num_images, square_queries) for name in tasks}
    finally:
        torch.set_num_threads(threads)
    return {"encoder": display_name(str(encoder_name)), "eps": "8/255", "steps": STEPS, "square_queries": square_queries,
            "black_box_samples": BLACK_BOX_SAMPLES, "train_scenes": train_scenes, "torch": torch.__version__, "tasks": tasks_report}


def _fmt(v: float, metric: str) -> str:
    return f"{v:.3f}" if metric == "rmse" else f"{v:.2f}"


def last_quarter_share(entry: dict, clean: float, steps: int, higher: bool) -> float | None:
    """The share of the attack's damage (clean -> T) gained over its last quarter (⌊3T/4⌋ -> T)."""
    ckpt = {int(k): v for k, v in entry.get("checkpoints", {}).items()}
    last = 3 * steps // 4
    if last not in ckpt or steps not in ckpt:
        return None
    sign = 1.0 if higher else -1.0
    total = sign * (clean - ckpt[steps])
    return sign * (ckpt[last] - ckpt[steps]) / total if total > 0 else None


def render(report: dict) -> str:
    """The Markdown README quotes: the cost table, then the evidence table."""
    tasks = report["tasks"]
    lines = [f"Encoder `{report['encoder']}`, heads fitted on {report['train_scenes']} scenes, "
             f"{next(iter(tasks.values()))['images']} test images, ε = {report['eps']}; CPU seconds of one thread, "
             "interleaved runs, best of two.", "",
             "| Task | paper's cell without checks (s) | with checks (s) | warnings' cost | + Square check "
             f"({report['square_queries']} queries, {report['black_box_samples']} images) (s) | Square's cost |", "|---|---|---|---|---|---|"]
    for name, t in tasks.items():
        lines.append(f"| {name} | {t['cpu_seconds_without_checks']:.2f} | {t['cpu_seconds_with_checks']:.2f} | {100 * t['cost_share']:.1f} % | "
                     f"{t['cpu_seconds_with_square_check']:.2f} | {100 * t['square_check_share']:.0f} % |")
    lines += ["", "| Task | attack @ steps | value | ⌊3T/4⌋ → T | share of the damage in the last quarter | zero-gradient share | flags |",
              "|---|---|---|---|---|---|---|"]
    for name, t in tasks.items():
        metric, higher = t["metric"], t["higher_is_better"]
        clean = t["attacks"]["none"][metric]
        lines.append(f"| {name} | clean | {_fmt(clean, metric)} | | | | |")
        entries = [(k, v) for k, v in t["attacks"].items() if k != "none"]
        entries += [(f"{k}@{report['steps']} (logits × 1e4)", v) for k, v in t.get("logits_x1e4", {}).items() if k != "none"]
        for key, v in entries:
            attack, _, steps = key.partition("@")
            steps = int(steps.split(" ")[0]) if steps else report["steps"]
            ckpt = {int(k): x for k, x in v.get("checkpoints", {}).items()}
            last = 3 * steps // 4
            move = f"{_fmt(ckpt[last], metric)} → {_fmt(ckpt[steps], metric)}" if last in ckpt and steps in ckpt else "–"
            share = last_quarter_share(v, clean, steps, higher)
            zero = v.get("zero_gradient_share")
            title = attack_title(attack) + (f"-{steps}" if attack != "worst" else "") + (" (logits × 1e4)" if "1e4" in key else "")
            lines.append(f"| {name} | {title} | {_fmt(v[metric], metric)} | {move} | {'–' if share is None else f'{100 * share:.1f} %'} | "
                         f"{'–' if zero is None else f'{zero:.2f}'} | {', '.join(v['flags']) + flag_marker(v['flags']) if v['flags'] else '–'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m hf_ssl_robust.flags_cost", description=__doc__.split("\n\n")[0])
    p.add_argument("--encoder", default="shapes-resnet-tiny")
    p.add_argument("--num_images", type=int, default=32)
    p.add_argument("--square_queries", type=int, default=1000)
    p.add_argument("--tasks", nargs="+", default=["classification", "segmentation", "depth"], choices=list(HEADS))
    p.add_argument("--out", default="outputs/strength/flags_cost.json", help="the report; its Markdown goes next to it (.md)")
    args = p.parse_args(argv)
    if args.num_images < 16 or args.num_images % 16:
        p.error(f"--num_images must be a positive multiple of 16 (the batch size), got {args.num_images}.")
    if args.square_queries < 1:
        p.error(f"--square_queries must be at least 1, got {args.square_queries}.")
    report = measure(args.encoder, args.num_images, args.tasks, args.square_queries)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    out.with_suffix(".md").write_text(render(report))
    print(render(report))  # the program's output
    return report


if __name__ == "__main__":
    main()

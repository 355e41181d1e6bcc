"""`hf-ssl-robust benchmark --dry_run`: every cell a run would compute, and what it will cost.

No weights and no data are loaded: encoders are described from their config (`validation.
describe_encoder`), sizes come from the paper's table (`sizes`), head settings from the paper's
presets (`training.PAPER_PRESETS` + the dataset's own), split sizes from the registry.

Costs are counted in encoder passes over one model input (a whole image, or one sliding window):
* `train fwd`: head training (a feature cache costs one pass per image and flip; otherwise one per
  image and epoch) plus the per-epoch validation;
* `eval fwd`: clean and adversarial predictions over the evaluation split, for every ε;
* `attack fwd+bwd`: the attacks' gradient steps (steps × images × windows per attack and ε).
Segmentation window counts use the typical image shape of each dataset (assumed 4:3 for ADE20k
and VOC, whose sizes vary).
"""

from __future__ import annotations

from .data import DEFAULT_SHAPES_SAMPLES, get_dataset_spec
from .heads.segmentation import window_positions
from .results import format_eps
from .sizes import resolve_input_size
from .tasks import get_task
from .training import PAPER_PRESETS
from .validation import benchmark_problems, cells, describe_encoder, raise_problems

__all__ = ["plan_benchmark", "format_plan"]

# Typical raw (h, w) of one image: only to count sliding windows in plans.
TYPICAL_SHAPE = {"ade20k": (3, 4), "voc2012": (3, 4), "voc2012_aug": (3, 4), "cityscapes": (1024, 2048)}


def _eval_shape(size, name: str) -> tuple[int, int]:
    if not isinstance(size, int):
        return tuple(size)
    h, w = TYPICAL_SHAPE.get(name, (1, 1))
    scale = size / min(h, w)
    return round(h * scale), round(w * scale)


def _split_size(spec, split: str, cap: int | None) -> int | None:
    name = spec.split_name(split)
    n = DEFAULT_SHAPES_SAMPLES.get(name, 500) if spec.source == "synthetic" else spec.num_examples.get(name)
    return n if cap is None or n is None else min(n, cap)


def plan_benchmark(cfg) -> list[dict]:
    """One dict per (encoder, dataset, task) cell group: sizes, head settings, attacks, ε and costs."""
    raise_problems(benchmark_problems(cfg))
    pairs, _ = cells(cfg)
    rows = []
    for name in cfg.resolved_encoders():
        enc = describe_encoder(name)
        for dataset, task_name in pairs:
            task, spec = get_task(task_name), get_dataset_spec(dataset, task=task_name)
            inp = resolve_input_size(enc.family, spec, cfg.image_size)
            hp = {**PAPER_PRESETS[task_name], **spec.head_presets.get(task_name, {})}
            hp.update({k: v for k, v in (("epochs", cfg.head_epochs), ("lr", cfg.head_lr)) if v is not None})
            n_train = _split_size(spec, "train", cfg.num_train_samples)
            n_eval = _split_size(spec, "eval", cfg.max_eval_samples)
            h, w = _eval_shape(inp.size, dataset)
            windows = 1
            if inp.window:
                windows = len(window_positions(h, inp.window, inp.stride)) * len(window_positions(w, inp.window, inp.stride))
            attacks = task.attacks(cfg.attacks)
            n_eps = len(cfg.eps_values)
            train = eval_ = attack = None
            if n_train is not None and n_eval is not None:
                n_val = max(1, round(0.1 * n_train))
                cached = task_name == "classification" or spec.source == "synthetic"
                fits = 4 if task_name == "classification" and cfg.head_lr is None else 1  # the lr search runs on the cache
                train = 2 * (n_train - n_val) if cached else hp["epochs"] * fits * (n_train - n_val)
                train += hp["epochs"] * fits * n_val * windows + n_eval * windows
                eval_ = n_eps * (1 + len(attacks)) * n_eval * windows + n_eps * attacks.count("embed") * n_eval * windows
                attack = n_eps * len(attacks) * cfg.steps * n_eval * windows
            rows.append(dict(
                encoder=name, family=enc.family or enc.model_type, patch=enc.patch_size, dataset=dataset, task=task_name,
                attacks=attacks, eps=[format_eps(e) for e in cfg.eps_values], steps=cfg.steps, norm=cfg.norm,
                input_size=inp.size, eval_shape=(h, w), window=inp.window, stride=inp.stride, windows=windows,
                train_crop=inp.crop, head=hp, num_train=n_train, num_eval=n_eval,
                train_fwd=train, eval_fwd=eval_, attack_fwd_bwd=attack,
            ))
    return rows


def _size(size) -> str:
    return f"{size[0]}x{size[1]}" if isinstance(size, (tuple, list)) else str(size)


def _num(n) -> str:
    if n is None:
        return "?"
    return f"{n / 1e6:.1f}M" if n >= 1e6 else (f"{n / 1e3:.1f}k" if n >= 1e4 else str(n))


def format_plan(rows: list[dict], skipped: list[dict] | None = None) -> str:
    """The plan as a Markdown table plus totals (what `--dry_run` prints)."""
    lines = [
        "| encoder (family, patch) | dataset | task | attacks | ε | input → model | window / stride (windows) | head: epochs, batch, lr, wd, opt | train / eval images | train fwd | eval fwd | attack fwd+bwd |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    total = {"train_fwd": 0, "eval_fwd": 0, "attack_fwd_bwd": 0}
    for r in rows:
        hp = r["head"]
        win = f"{r['window']} / {r['stride']} ({r['windows']})" if r["window"] else "-"
        size = _size(r["input_size"]) + ("" if isinstance(r["input_size"], (tuple, list)) or r["task"] == "classification" else " short side")
        lines.append(
            f"| {r['encoder']} ({r['family']}, {r['patch']}) | {r['dataset']} | {r['task']} | {', '.join(r['attacks']) or 'clean only'} "
            f"| {' '.join(r['eps'])} | {size} → {_size(r['eval_shape'])} | {win} | {hp['epochs']}, {hp['batch_size']}, {hp['lr']:g}, "
            f"{hp['weight_decay']:g}, {hp['optimizer']} | {_num(r['num_train'])} / {_num(r['num_eval'])} | {_num(r['train_fwd'])} "
            f"| {_num(r['eval_fwd'])} | {_num(r['attack_fwd_bwd'])} |"
        )
        for k in total:
            total[k] = None if total[k] is None or r[k] is None else total[k] + r[k]
    steps = rows[0]["steps"] if rows else 0
    lines.append("")
    lines.append(f"{len(rows)} cells, {steps} attack steps ({rows[0]['norm'] if rows else ''}); totals: "
                 f"train fwd {_num(total['train_fwd'])}, eval fwd {_num(total['eval_fwd'])}, attack fwd+bwd {_num(total['attack_fwd_bwd'])} "
                 "(encoder passes over one input or window).")
    for s in skipped or []:
        lines.append(f"skipped {s['dataset']} x {s['task']}: {s['reason']}")
    for name in sorted({r["dataset"] for r in rows if get_dataset_spec(r["dataset"]).local_only}):
        lines.append(f"note: {name} is only available from a local folder: a real run needs --data_dir {name}=PATH")
    return "\n".join(lines) + "\n"

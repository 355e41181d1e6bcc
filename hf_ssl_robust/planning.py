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

Each cell also gets what one pass costs (`cost.pass_cost`: FLOPs of one input or window, counted on
the meta device from the config alone; the head's share; activations kept for an attack step's
backward) and its total: `(train fwd + eval fwd) × forward + attack fwd+bwd × attack step`.
`estimate_time` turns FLOPs into a wall time on a device (`throughput.resolve_rate`);
`plan_paper_grid` / `format_grid_plan` give the paper's whole grid for one encoder.
"""

from __future__ import annotations

from .cost import pass_cost
from .data import DEFAULT_SHAPES_SAMPLES, get_dataset_spec
from .heads.segmentation import window_positions
from .results import format_eps
from .sizes import resolve_input_size
from .tasks import get_task
from .training import PAPER_PRESETS
from .validation import benchmark_problems, cells, describe_encoder, raise_problems

__all__ = ["PAPER_GRID", "estimate_time", "format_grid_plan", "format_plan", "plan_benchmark", "plan_paper_grid"]

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
            attacks = task.attacks(cfg.attacks, spec)
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
            shape = (min(inp.window, h), min(inp.window, w)) if inp.window else (h, w)  # one pass: an image or a window
            cost = pass_cost(name, task_name, shape, spec)
            flops = None if train is None else (train + eval_) * cost.forward + attack * cost.attack_step
            rows.append(dict(
                encoder=name, model_type=enc.model_type, pass_shape=shape, cost=cost, flops=flops,
                batch_size=cfg.batch_size, mixed_precision=cfg.mixed_precision or "no", family=enc.family or enc.model_type, patch=enc.patch_size, dataset=dataset, task=task_name,
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
    """The plan as a Markdown table plus totals, then the cost table (with times after `estimate_time`):
    what `--dry_run` prints."""
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
    if rows:
        lines += ["", "What one pass and each cell cost:", "", format_costs(rows).rstrip("\n")]
    return "\n".join(lines) + "\n"


# -- what it costs: FLOPs -> time on a device -------------------------------------------------------
# The paper's grid (Tables 1-3): every task on its datasets, at three radii.
PAPER_GRID = {"classification": ["cifar10", "cifar100", "stl10"], "segmentation": ["ade20k", "cityscapes", "voc2012"],
              "depth": ["nyu_depth_v2"]}
PAPER_EPS = ["2/255", "4/255", "8/255"]
FLOPS_CONVENTION = "FLOPs = 2 × multiply-adds, matrix products and convolutions only (torch.utils.flop_counter)"


def estimate_time(rows: list[dict], gpu: str = "h100", num_processes: int = 1, calibration_files=()) -> list[dict]:
    """Add `device_seconds` (one device), `seconds` (wall time on `num_processes` of them) and `rate` to each row.

    Assumes the passes split evenly over processes (data parallel). See `throughput.resolve_rate` for
    where each rate comes from; it is kept on the row and printed with the estimate.
    """
    from .throughput import check_gpu, load_calibrations, precision_key, resolve_rate

    gpu = check_gpu(gpu)
    if not (isinstance(num_processes, int) and num_processes >= 1):
        raise ValueError(f"--num_processes must be an integer >= 1, got {num_processes!r}.")
    calibrations = load_calibrations(calibration_files)
    rates: dict = {}
    for r in rows:
        key = (r["model_type"], precision_key(r["mixed_precision"]))
        if key not in rates:
            rates[key] = resolve_rate(gpu, *key, calibrations, encoder=r["encoder"])
        rate = rates[key]
        r.update(gpu=gpu, num_processes=num_processes, rate=rate, device_seconds=_device_seconds(r, rate), seconds=None)
        if r["device_seconds"] is not None:
            r["seconds"] = r["device_seconds"] / num_processes
    return rows


def _device_seconds(r: dict, rate) -> float | None:
    if r["flops"] is None:
        return None
    return ((r["train_fwd"] + r["eval_fwd"]) * r["cost"].forward / rate.flops_per_s["forward"]
            + r["attack_fwd_bwd"] * r["cost"].attack_step / rate.flops_per_s["attack_step"])


def device_hours_at(rows: list[dict], precision: str, calibration_files=()) -> tuple[float, list[str]]:
    """Device-hours of rows already estimated (`estimate_time`) if they ran at `precision` (`bf16` | `fp32`)
    instead, and the rate sources (for the "with bf16 it would take" line)."""
    from .throughput import load_calibrations, resolve_rate

    calibrations = load_calibrations(calibration_files)
    rates = {m: resolve_rate(rows[0]["gpu"], m, precision, calibrations, encoder=rows[0]["encoder"]) for m in {r["model_type"] for r in rows}}
    return sum(_device_seconds(r, rates[r["model_type"]]) or 0 for r in rows) / 3600, sorted({v.source for v in rates.values()})


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= (2 * size if unit == "d" else size):
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**29 else f"{nbytes / 2**20:.0f} MiB"


def _attack_memory(r: dict) -> str:
    """Parameters + activations kept for one attack step's backward, for one evaluation batch."""
    c = r["cost"]
    scale = 0.5 if r["mixed_precision"] in ("bf16", "fp16") else 1.0  # autocast keeps most activations in 16 bits
    if not isinstance(r["batch_size"], int):
        return f"{_gib(c.attack_bytes * scale)} per input (batch auto)"
    inputs = r["batch_size"] * r["windows"]
    return f"{_gib(c.param_bytes + inputs * c.attack_bytes * scale)} ({r['batch_size']}" + (f"×{r['windows']} windows)" if r["windows"] > 1 else ")")


def _precision(mixed_precision: str) -> str:
    return "fp32 (no mixed precision)" if mixed_precision in (None, "no") else f"{mixed_precision} autocast"


def _share(part: float, whole: float) -> str:
    pct = 100 * part / whole
    return "< 0.01 %" if pct < 0.01 else f"{pct:.2g} %"


def _pflops(flops) -> str:
    return "?" if flops is None else (f"{flops / 1e15:,.0f}" if flops >= 1e17 else f"{flops / 1e15:.3g}")


def _where(rows: list[dict]) -> str:
    r = rows[0]
    return f"{r['num_processes']}× {r['gpu']}" if r["gpu"] != "cpu" else f"{r['num_processes']} CPU process(es)"


def format_costs(rows: list[dict]) -> str:
    """The cost table of `plan_benchmark` rows (after `estimate_time`) and the run's totals."""
    where = _where(rows) if rows and "rate" in rows[0] else None
    lines = ["| encoder | dataset | task | one pass | forward GFLOPs (head) | attack step GFLOPs | memory per attack batch | cell PFLOPs |"
             + (f" time on {where} |" if where else ""), "|---|---|---|---|---|---|---|---|" + ("---|" if where else "")]
    for r in rows:
        c = r["cost"]
        lines.append(f"| {r['encoder']} | {r['dataset']} | {r['task']} | {_size(r['pass_shape'])} | {c.forward / 1e9:.1f} "
                     f"({_share(c.head, c.forward)}) | {c.attack_step / 1e9:.1f} | {_attack_memory(r)} | {_pflops(r['flops'])} |"
                     + (f" {_duration(r['seconds'])} |" if where else ""))
    total = None if any(r["flops"] is None for r in rows) else sum(r["flops"] for r in rows)
    lines += ["", f"Run total: {_pflops(total)} PFLOPs ({FLOPS_CONVENTION}; memory: parameters + the activations an "
                  "attack step keeps for its backward, fused attention; the backward's transients come on top)."]
    if where:
        seconds = None if total is None else sum(r["seconds"] for r in rows)
        lines.append(f"Estimated time on {where} ({_precision(rows[0]['mixed_precision'])}): {_duration(seconds)}; rate: "
                     + "; ".join(sorted({r["rate"].source for r in rows})) + ". Other devices: --gpu " + " | --gpu ".join(_gpus()) + ".")
    return "\n".join(lines) + "\n"


def _gpus():
    from .throughput import GPUS

    return GPUS


def plan_paper_grid(encoder: str, attacks: str = "paper", mixed_precision: str | None = None, batch_size: str = "32") -> list[dict]:
    """`plan_benchmark` rows for the paper's full grid of one encoder (:data:`PAPER_GRID` at :data:`PAPER_EPS`).

    Args:
        attacks: `paper` (EmbedAttack + each task's PGD) or `strong` (+ APGD with every loss, worst case).
    """
    from .benchmark import BenchmarkConfig

    if attacks not in ("paper", "strong"):
        raise ValueError(f"--attacks must be 'paper' or 'strong', got {attacks!r}.")
    cfg = BenchmarkConfig(encoders=[encoder], tasks=list(PAPER_GRID), datasets=[d for ds in PAPER_GRID.values() for d in ds],
                          eps=PAPER_EPS, attacks=["strong"] if attacks == "strong" else BenchmarkConfig().attacks,
                          batch_size=batch_size, mixed_precision=mixed_precision, dry_run=True)
    return plan_benchmark(cfg)


def format_grid_plan(rows: list[dict]) -> str:
    """The paper's grid as one table (after `estimate_time`) and a sentence to act on."""
    r0 = rows[0]
    gpu, n = r0["gpu"], r0["num_processes"]
    device = "CPU" if gpu == "cpu" else gpu.upper()
    lines = [f"Plan: the paper's grid for {r0['encoder']} ({r0['family']}), ε {' '.join(r0['eps'])}, {r0['steps']} attack steps, "
             f"{_precision(r0['mixed_precision'])}, evaluation batch {r0['batch_size']}.", "",
             "| task | dataset | attacks | one pass → GFLOPs fwd / attack step | train fwd | eval fwd | attack fwd+bwd | PFLOPs "
             f"| {device}-hours | memory per attack batch |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        c = r["cost"]
        hours = None if r["device_seconds"] is None else f"{r['device_seconds'] / 3600:.2f}"
        lines.append(f"| {r['task']} | {r['dataset']} | {', '.join(r['attacks'])} | {_size(r['pass_shape'])} → {c.forward / 1e9:.1f} / "
                     f"{c.attack_step / 1e9:.1f} | {_num(r['train_fwd'])} | {_num(r['eval_fwd'])} | {_num(r['attack_fwd_bwd'])} "
                     f"| {_pflops(r['flops'])} | {hours or '?'} | {_attack_memory(r)} |")
    device_s = sum(r["device_seconds"] or 0 for r in rows)
    total = sum(r["flops"] or 0 for r in rows)
    util = sorted({r["rate"].source for r in rows})
    r = r0["rate"]
    if gpu == "cpu":
        how = "at the measured CPU rate"
    else:
        how = f"at the {'measured' if r.measured else 'ASSUMED'} {r.utilisation:.0%} utilisation"
    lines += ["", f"Total: {_pflops(total)} PFLOPs ({FLOPS_CONVENTION}).",
              f"≈ {device_s / 3600:.1f} {device}-hours on one {device} {how}"
              + (f"; on {n} processes ≈ {_duration(device_s / n)} of wall time" if n > 1 else f"; halve with 2 processes (≈ {_duration(device_s / 2)})")
              + ".", "Rate: " + "; ".join(util) + "."]
    missing = [r["dataset"] for r in rows if r["device_seconds"] is None]
    if missing:
        lines.append(f"Not counted (split sizes unknown): {', '.join(missing)}.")
    local = sorted({r["dataset"] for r in rows if get_dataset_spec(r["dataset"]).local_only})
    if local:
        lines.append("Needs local copies: " + " ".join(f"--data_dir {d}=PATH" for d in local) + ".")
    return "\n".join(lines) + "\n"


# DeACL as the paper ran it on DINO ViT-B/16 (DESIGN §4): ImageNet-1k's training split, 100 epochs at 224².
IMAGENET_TRAIN_IMAGES = 1_281_167


def plan_deacl(encoder: str, images: int = IMAGENET_TRAIN_IMAGES, epochs: int = 100, image_size: int = 224,
               attack_steps: int = 5, batch_size: int = 128, mixed_precision: str | None = None) -> dict:
    """The cost of a DeACL run: per image a teacher forward, `attack_steps` attack steps on the student
    (encoder only, input gradient) and the student's training step on the clean and the adversarial image."""
    from .cost import pass_cost
    from .validation import describe_encoder

    cost = pass_cost(encoder, None, (image_size, image_size), train=True)
    per_image = cost.forward + attack_steps * cost.attack_step + 2 * cost.train_step
    scale = 0.5 if mixed_precision in ("bf16", "fp16") else 1.0
    # student weights, gradients, momentum and the teacher's weights; the student keeps 2 × batch for its backward
    memory = 4 * cost.param_bytes + 2 * batch_size * cost.train_bytes * scale
    return dict(encoder=encoder, model_type=describe_encoder(encoder).model_type, images=images, epochs=epochs, shape=(image_size, image_size),
                attack_steps=attack_steps, batch_size=batch_size, mixed_precision=mixed_precision or "no", cost=cost,
                passes={"forward": images * epochs, "attack_step": images * epochs * attack_steps, "train_step": 2 * images * epochs},
                flops=per_image * images * epochs, memory=memory)


def format_deacl_plan(plan: dict, gpu: str = "h100", num_processes: int = 1, calibration_files=()) -> str:
    """One paragraph: the DeACL run's FLOPs and device-hours on `gpu`, with where the rate comes from."""
    from .throughput import check_gpu, load_calibrations, precision_key, resolve_rate

    gpu = check_gpu(gpu)
    rate = resolve_rate(gpu, plan["model_type"], precision_key(plan["mixed_precision"]), load_calibrations(calibration_files), plan["encoder"])
    c = plan["cost"]
    flops = {"forward": c.forward, "attack_step": c.attack_step, "train_step": c.train_step}
    rates = {k: rate.flops_per_s.get(k, rate.flops_per_s["attack_step"]) for k in flops}  # a CPU calibration may lack train_step
    seconds = sum(plan["passes"][k] * flops[k] / rates[k] for k in flops)
    device = "CPU" if gpu == "cpu" else gpu.upper()
    return (f"DeACL ({plan['images']:,} images × {plan['epochs']} epochs at {_size(plan['shape'])}, {plan['attack_steps']} attack steps, "
            f"batch {plan['batch_size']}): per image {c.forward / 1e9:.1f} GFLOPs teacher forward + {plan['attack_steps']} × "
            f"{c.attack_step / 1e9:.1f} attack steps + 2 × {c.train_step / 1e9:.1f} training steps; {_pflops(plan['flops'])} PFLOPs, "
            f"≈ {seconds / 3600:.1f} {device}-hours" + (f" (≈ {_duration(seconds / num_processes)} on {num_processes})" if num_processes > 1 else "")
            + f"; memory ≈ {_gib(plan['memory'])} per batch (parameters, gradients, momentum, teacher; activations of "
            f"clean + adversarial batch). Rate: {rate.source}.\n")

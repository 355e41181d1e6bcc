"""One pass over an evaluation split: clean metrics and every attack's metrics on the same images.

Task-agnostic: the `Task` says how to turn model outputs into predictions and which meter scores
them; every attack perturbs the task model (EmbedAttack through the tokens the head reads,
`head.read_tokens`, windows and padding included).

Mixed sizes: a batch whose images differ in size (`batch["image_size"]`, set by `collate`) is run
one size group at a time, each image cropped back to its own size, so no model or attack ever
sees the padding and an image's numbers do not depend on what it is batched with. Seeded attacks
seed each image's random start from (seed, its position in the split (`batch["index"]`, added by
`IndexedDataset`), the attack's name) when the batch has it, else from the global batch index.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import torch
from tqdm.auto import tqdm

from .attacks import Attack, image_seeds, mix_seed
from .attacks.base import observe_steps
from .diagnostics import CellDiagnostics
from .precision import autocast
from .tasks import Task
from .uncertainty import add_intervals
from .worst_case import bound_worst, worst_predictions


@torch.no_grad()
def evaluate(
    model,
    loader,
    task: Task,
    spec,
    *,
    attacks: Mapping[str, Attack] | None = None,
    accelerator=None,
    desc: str = "eval",
    on_batch: Callable[[dict, dict], None] | None = None,
    worst_case: bool = False,
    black_box: Callable | None = None,
    bootstrap_seed: int | None = None,
) -> dict[str, dict]:
    """Score `model` (a task head) clean and under each attack.

    Args:
        model: an `SSLFor...` head (encoder inside, at `model.encoder`).
        loader: batches in the unified form (`pixel_values` + the task's target key).
        task, spec: the task and the dataset spec (classes, ignore index, max depth).
        attacks: name -> attack, each run on `model`: EmbedAttack (`surface == "encoder"`) on the
            tokens the head reads (`model.read_tokens`), the others against the batch target.
        accelerator: gathers per-sample statistics across processes (`gather_for_metrics`). Seeded
            attacks are re-seeded per image (`batch["index"]`) or else per global batch index, so 1
            and N processes give the same numbers.
            Clean forwards, attacks and the re-scoring of adversarial images all run under its
            autocast (mixed precision), so clean and adversarial metrics share one precision.
        on_batch: called with `(batch, {"none": clean_pred, name: adv_pred, ..., "adv/<name>": pixels})`
            (e.g. to keep examples for figures).
        worst_case: also score `"worst"`: per image the most damaging of the clean prediction and every
            attack's (`worst_case.py`), from the predictions made anyway (no extra forward pass); each
            metric then bounded by the clean and every single attack's value.
        black_box: the `black_box_stronger` check, `black_box(model, pixels, target, adv_pred) -> bool`
            (True when a gradient-free attack does more damage than `adv_pred`, the white-box
            predictions on those images), called once per attack (and `worst`) after the pass on the
            first `diagnostics.BLACK_BOX_SAMPLES` images of the split; None skips it.
        bootstrap_seed: seed of 95 % bootstrap intervals over images (`uncertainty.py`), from the per-image
            statistics the meters keep: adds `ci95` (`{metric: [low, high]}`) to every entry and
            `separated_from_clean` (`{metric: bool}`) to attacked ones; None (the default) skips them.

    Returns:
        `{"none": metrics, <attack name>: metrics, ..., ["worst": metrics]}`, each with `num_samples`,
        `flags` (list of warning names, `diagnostics.FLAGS`; empty when all is well) and `checkpoints`
        (`{"<iterate>": primary metric}` at ⌊T/4⌋, ⌊T/2⌋, ⌊3T/4⌋, T; `{}` for clean); attacks also
        carry `zero_gradient_share`.
    """
    attacks = dict(attacks or {})
    unwrapped = accelerator.unwrap_model(model) if accelerator is not None else model
    was_training = unwrapped.training
    unwrapped.eval()
    gather = accelerator.gather_for_metrics if accelerator is not None else None
    meters = {name: task.make_meter(spec) for name in ["none", *attacks, *(["worst"] if worst_case else [])]}
    show = accelerator is None or accelerator.is_local_main_process
    diag = CellDiagnostics(task, spec, attacks, lambda x: _predict(task, unwrapped, x), black_box=black_box, worst_case=worst_case)
    try:
        world, rank = (accelerator.num_processes, accelerator.process_index) if accelerator is not None else (1, 0)
        for i, batch in enumerate(tqdm(loader, desc=desc, disable=not show, leave=False)):
            pixels, target = batch["pixel_values"], batch[task.target_key]
            groups = size_groups(batch)
            with autocast(accelerator):
                preds = {"none": by_size(_clean(task, unwrapped, diag if i == 0 else None), pixels, target, groups)}
                ckpt = {}
                global_batch = i * world + rank  # accelerate gives process r the batches r, r + world, ...
                for name, attack in attacks.items():
                    seeds = None
                    if attack.seed is not None and "index" in batch:  # an image's random start, however it is batched
                        seeds = image_seeds(attack.seed, batch["index"], name)  # (seed, image, attack) mixed
                    elif attack.seed is not None:
                        attack = dataclasses.replace(attack, seed=mix_seed(attack.seed, "batch", global_batch, name))
                    out = by_size(_perturb(attack, unwrapped, diag.monitors[name]), pixels, target, groups, seeds=seeds)
                    adv, ckpt[name] = out.pop("adv"), {int(k): v for k, v in out.items()}
                    preds[name] = by_size(lambda x, t: _predict(task, unwrapped, x), adv, target, groups)
                    preds["adv/" + name] = adv
                if worst_case:  # the clean prediction is in the pool: clean errors count as non-robust
                    preds["worst"], _ = worst_predictions(task.name, {n: preds[n] for n in ["none", *attacks]}, target, spec)
            for name, meter in meters.items():
                meter.update(preds[name], target, gather=gather)
            diag.update_batch(ckpt, preds, target, gather)
            diag.collect(pixels, target, preds, groups)
            if on_batch is not None:
                on_batch(batch, preds)
        results = {}
        for name, meter in meters.items():
            metrics = {k: float(v) for k, v in meter.compute().items()}
            metrics["num_samples"] = meter.num_samples
            results[name] = metrics
        if worst_case:  # a dataset-level ratio (mIoU) can rise above a single attack's: never report that
            results["worst"].update(bound_worst([results[n] for n in ["none", *attacks]], results["worst"]))
        if bootstrap_seed is not None:  # every process holds every image's statistics (gathered): same intervals
            add_intervals(results, {name: meter.per_image() for name, meter in meters.items()}, seed=bootstrap_seed)
        with autocast(accelerator):
            diag.finish(results, unwrapped, reduce=(lambda t: accelerator.reduce(t, "sum")) if accelerator is not None else None)
    finally:
        unwrapped.train(was_training)
    return results


def _predict(task: Task, model, pixels):
    """The task's prediction; float ones (depth) in fp32 whatever the autocast dtype."""
    pred = task.predict(model(pixel_values=pixels))
    return pred.float() if pred.is_floating_point() else pred


def _clean(task: Task, model, diag: CellDiagnostics | None) -> Callable:
    """`(pixels, target) -> clean predictions`; with `diag`, a second forward to detect randomness
    (`randomized`: done on each process's first batch, where dropout or random preprocessing shows)."""

    def run(pixels, target):
        output = model(pixel_values=pixels)
        if diag is not None:
            diag.compare_clean(output, model(pixel_values=pixels))
        pred = task.predict(output)
        return pred.float() if pred.is_floating_point() else pred

    return run


def _perturb(attack: Attack, model, monitor=None) -> Callable:
    """`(pixels, target, seeds=None) -> {"adv": adversarial pixels, "<iterate>": predictions at each
    checkpoint}` (`seeds`: one per image; checkpoints recorded by `monitor`, see `diagnostics.py`)."""

    def run(pixels, target, seeds=None):
        a = attack if seeds is None else dataclasses.replace(attack, seed=seeds)
        observer = monitor.observer(target) if monitor is not None else None
        with observe_steps(observer):
            adv = a.perturb(model, pixels, None if attack.surface == "encoder" else target).pixels
        return {"adv": adv, **{str(c): p for c, p in (observer.preds.items() if observer else [])}}

    return run


def size_groups(batch: Mapping) -> list[tuple[torch.Tensor | None, tuple[int, int]]]:
    """`(indices, (h, w))` per distinct true image size of a batch; `[(None, (H, W))]` when all agree."""
    sizes = batch.get("image_size")
    if sizes is None:
        return [(None, tuple(batch["pixel_values"].shape[-2:]))]
    groups: dict[tuple[int, int], list[int]] = {}
    for j, (h, w) in enumerate(sizes.tolist()):
        groups.setdefault((h, w), []).append(j)
    return [(torch.tensor(idx, device=sizes.device), hw) for hw, idx in groups.items()]


def _crop(t, idx, hw):
    t = t[idx.to(t.device)]
    return t[..., : hw[0], : hw[1]] if t.ndim >= 3 else t  # images [b,3,H,W], masks / depth [b,H,W]; labels [b]


def by_size(fn: Callable, pixels, target, groups, seeds: list[int] | None = None):
    """Apply `fn(pixels, target)` to each size group of the batch (images cropped to their true size)
    and put the outputs back in batch order, dense outputs padded with 0 to the batch canvas.
    `seeds` (one per image) are cut to each group and passed on as `fn(..., seeds=...)`.
    A dict output (`{key: tensor}`) is put back key by key; keys missing from some group are dropped."""
    idx, _ = groups[0]
    if idx is None:
        return fn(pixels, target) if seeds is None else fn(pixels, target, seeds=seeds)
    outs, parts = {}, []
    for idx, hw in groups:
        kw = {} if seeds is None else {"seeds": [seeds[j] for j in idx.tolist()]}
        part = fn(_crop(pixels, idx, hw), _crop(target, idx, hw), **kw)
        parts.append(part if isinstance(part, dict) else {None: part})
        for key, value in parts[-1].items():
            if key not in outs:
                shape = value.shape[1:-2] + pixels.shape[-2:] if value.ndim >= 3 else value.shape[1:]
                outs[key] = value.new_zeros((pixels.shape[0], *shape))
            if value.ndim >= 3:
                value = torch.nn.functional.pad(value, (0, pixels.shape[-1] - hw[1], 0, pixels.shape[-2] - hw[0]))
            outs[key][idx.to(value.device)] = value
    if None in outs:
        return outs[None]
    return {k: v for k, v in outs.items() if all(k in p for p in parts)}

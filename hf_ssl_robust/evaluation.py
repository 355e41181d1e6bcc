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
from .precision import autocast
from .tasks import Task
from .worst_case import worst_predictions


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
) -> dict[str, dict[str, float]]:
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
        worst_case: also score `"worst"`: per image the prediction of the attack that hurt it most
            (`worst_case.py`), from the predictions made anyway (no extra forward pass).

    Returns:
        `{"none": metrics, <attack name>: metrics, ..., ["worst": metrics]}`, each with `num_samples`.
    """
    attacks = dict(attacks or {})
    unwrapped = accelerator.unwrap_model(model) if accelerator is not None else model
    was_training = unwrapped.training
    unwrapped.eval()
    gather = accelerator.gather_for_metrics if accelerator is not None else None
    meters = {name: task.make_meter(spec) for name in ["none", *attacks, *(["worst"] if worst_case else [])]}
    show = accelerator is None or accelerator.is_local_main_process
    try:
        world, rank = (accelerator.num_processes, accelerator.process_index) if accelerator is not None else (1, 0)
        for i, batch in enumerate(tqdm(loader, desc=desc, disable=not show, leave=False)):
            pixels, target = batch["pixel_values"], batch[task.target_key]
            groups = size_groups(batch)
            with autocast(accelerator):
                preds = {"none": by_size(lambda x, t: _predict(task, unwrapped, x), pixels, target, groups)}
                global_batch = i * world + rank  # accelerate gives process r the batches r, r + world, ...
                for name, attack in attacks.items():
                    seeds = None
                    if attack.seed is not None and "index" in batch:  # an image's random start, however it is batched
                        seeds = image_seeds(attack.seed, batch["index"], name)  # (seed, image, attack) mixed
                    elif attack.seed is not None:
                        attack = dataclasses.replace(attack, seed=mix_seed(attack.seed, "batch", global_batch, name))
                    adv = by_size(_perturb(attack, unwrapped), pixels, target, groups, seeds=seeds)
                    preds[name] = by_size(lambda x, t: _predict(task, unwrapped, x), adv, target, groups)
                    preds["adv/" + name] = adv
                if worst_case:
                    preds["worst"], _ = worst_predictions(task.name, {n: preds[n] for n in attacks}, target, spec)
            for name, meter in meters.items():
                meter.update(preds[name], target, gather=gather)
            if on_batch is not None:
                on_batch(batch, preds)
    finally:
        unwrapped.train(was_training)
    results = {}
    for name, meter in meters.items():
        metrics = {k: float(v) for k, v in meter.compute().items()}
        metrics["num_samples"] = meter.num_samples
        results[name] = metrics
    return results


def _predict(task: Task, model, pixels):
    """The task's prediction; float ones (depth) in fp32 whatever the autocast dtype."""
    pred = task.predict(model(pixel_values=pixels))
    return pred.float() if pred.is_floating_point() else pred


def _perturb(attack: Attack, model) -> Callable:
    """`(pixels, target, seeds=None) -> adversarial pixels` (`seeds`: one per image)."""

    def run(pixels, target, seeds=None):
        a = attack if seeds is None else dataclasses.replace(attack, seed=seeds)
        return a.perturb(model, pixels, None if attack.surface == "encoder" else target).pixels

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
    `seeds` (one per image) are cut to each group and passed on as `fn(..., seeds=...)`."""
    idx, _ = groups[0]
    if idx is None:
        return fn(pixels, target) if seeds is None else fn(pixels, target, seeds=seeds)
    out = None
    for idx, hw in groups:
        kw = {} if seeds is None else {"seeds": [seeds[j] for j in idx.tolist()]}
        part = fn(_crop(pixels, idx, hw), _crop(target, idx, hw), **kw)
        if out is None:
            shape = part.shape[1:-2] + pixels.shape[-2:] if part.ndim >= 3 else part.shape[1:]
            out = part.new_zeros((pixels.shape[0], *shape))
        if part.ndim >= 3:
            part = torch.nn.functional.pad(part, (0, pixels.shape[-1] - hw[1], 0, pixels.shape[-2] - hw[0]))
        out[idx.to(out.device)] = part
    return out

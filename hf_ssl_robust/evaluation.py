"""One pass over an evaluation split: clean metrics and every attack's metrics on the same images.

Task-agnostic: the `Task` says how to turn model outputs into predictions and which meter scores
them; each attack perturbs either the encoder (EmbedAttack) or the task model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import torch
from tqdm.auto import tqdm

from .attacks import Attack
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
        attacks: name -> attack; `surface == "encoder"` attacks perturb `model.encoder`, the
            others perturb `model` against the batch target.
        accelerator: gathers per-sample statistics across processes (`gather_for_metrics`). Seeded
            attacks are re-seeded per global batch index, so 1 and N processes give the same numbers.
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
            preds = {"none": task.predict(unwrapped(pixel_values=pixels))}
            global_batch = i * world + rank  # accelerate gives process r the batches r, r + world, ...
            for name, attack in attacks.items():
                if attack.seed is not None:  # same random start for a batch on 1 or N processes
                    attack = dataclasses.replace(attack, seed=attack.seed + global_batch)
                surface = unwrapped.encoder if attack.surface == "encoder" else unwrapped
                adv = attack.perturb(surface, pixels, None if attack.surface == "encoder" else target).pixels
                preds[name] = task.predict(unwrapped(pixel_values=adv))
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

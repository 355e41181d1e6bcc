"""The per-image worst case over the attacks run on a batch, from predictions already made.

For every image it picks the attack that hurt that image most and keeps that attack's prediction,
so the task's own meter turns the picks into the dataset metric (AutoAttack's and SEA's
worst case; ours for depth). No extra forward pass: the adversarial predictions are those the
evaluation scores anyway. The evaluation puts the clean prediction in the pool too (`"none"`:
AutoAttack counts clean errors as non-robust).

A per-image pick cannot make a dataset-level ratio exact: mIoU sums intersections and unions over
the split, so picking per image by pixel accuracy can *raise* the mIoU above one attack's alone.
`bound_worst` therefore takes, metric by metric, the most damaging of the pick and every single
candidate (clean included): the reported worst is never above the clean value or any attack's
for accuracy / mIoU / δ, never below for RMSE / AbsRel.

* classification: an image counts as wrong if any attack made it wrong (its wrong prediction kept);
* segmentation: the attack with the lowest pixel accuracy on that image; its intersections and
  unions are what enter the dataset mIoU;
* depth: the attack with the highest per-image RMSE (its AbsRel, δ1... follow with it).

Ties keep the first attack in the order given.

Example:
    >>> worst, picked = worst_predictions("segmentation", {"segpgd": p1, "apgd:js": p2}, masks, spec)
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from .metrics.functional import depth_stats


HIGHER_IS_BETTER = {"accuracy": True, "mean_iou": True, "mean_accuracy": True, "overall_accuracy": True,
                    "delta1": True, "delta2": True, "delta3": True,
                    "rmse": False, "abs_rel": False, "sq_rel": False, "log10": False, "rmse_log": False}


def bound_worst(candidates: list[Mapping[str, float]], picked: Mapping[str, float]) -> dict[str, float]:
    """Per metric of `HIGHER_IS_BETTER`, the most damaging of the per-image pick and every candidate
    (the clean and each single attack's metrics); other keys of `picked` are left out."""
    out = {}
    for key, value in picked.items():
        if key not in HIGHER_IS_BETTER:
            continue
        values = [float(value)] + [float(c[key]) for c in candidates if key in c and not math.isnan(float(c[key]))]
        out[key] = min(values) if HIGHER_IS_BETTER[key] else max(values)
    return out


def per_image_damage(task: str, pred: Tensor, target: Tensor, spec) -> Tensor:
    """`[B]` float damage of one prediction, larger = more hurt (error, pixel error rate, RMSE)."""
    if task == "classification":
        return (pred != target.to(pred.device)).float()
    if task == "segmentation":
        target = target.to(pred.device)
        labelled = target != spec.ignore_index if spec.ignore_index is not None else torch.ones_like(target, dtype=torch.bool)
        wrong = (pred != target) & labelled
        return wrong.flatten(1).sum(1).float() / labelled.flatten(1).sum(1).clamp_min(1).float()
    rmse = depth_stats(pred, target, max_depth=float(spec.max_depth or 10.0))["rmse"]
    return torch.nan_to_num(rmse, nan=0.0).float()  # no valid pixel: nothing to hurt


def worst_predictions(task: str, preds: Mapping[str, Tensor], target: Tensor, spec) -> tuple[Tensor, Tensor]:
    """Per image, the prediction of the most damaging attack.

    Args:
        task: task name.
        preds: attack name -> predictions of the batch (`[B]` labels, `[B, H, W]` masks or depth).
        target: the batch's labels / masks / depth maps.
        spec: the dataset spec (ignore index, max depth).

    Returns:
        `(worst, picked)`: predictions `[B, ...]` and the index into `preds` of the attack picked, `[B]`.
    """
    if not preds:
        raise ValueError("The worst case needs at least one attack's predictions.")
    stacked = torch.stack(list(preds.values()))  # [A, B, ...]
    damage = torch.stack([per_image_damage(task, p, target, spec) for p in preds.values()])  # [A, B]
    picked = damage.argmax(dim=0)  # first maximum: ties keep the earlier attack
    index = picked.view(1, -1, *([1] * (stacked.ndim - 2))).expand(1, *stacked.shape[1:])
    return stacked.gather(0, index)[0], picked

"""Image-free priors: what a predictor that never looks at the image scores, from the training split alone.

A number means little without its floor: ShapesWorld's background covers most pixels and depth grows
toward the horizon in every scene, so "0.12 mIoU" or "2.0 m RMSE" can be had without an encoder.
Every benchmark table therefore carries a `prior` row (records with `"encoder": "prior"`):

* classification: the training split's majority class, predicted for every image;
* segmentation: the per-pixel class prior, the per-pixel argmax of the training masks' class counts;
* depth: the per-pixel mean depth map over the training split's valid pixels (the global mean where a
  pixel is never valid).

Per-pixel maps are made at the training images' size and resized to each evaluation image (nearest
for classes, bilinear for depth) when sizes differ. An attack cannot change an image-free prediction,
so the prior has only a clean value.

    >>> prior = fit_prior(task, spec, make_dataset(spec, "train", num_samples=512))
    >>> metrics = score_prior(prior, task, spec, make_dataset(spec, "eval"))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Prior", "PRIOR_NAMES", "fit_prior", "score_prior"]

PRIOR_ENCODER = "prior"
PRIOR_NAMES = {"classification": "majority class", "segmentation": "per-pixel class prior", "depth": "per-pixel mean depth"}


@dataclass
class Prior:
    """An image-free predictor: `value` is a class id (classification), a `[H, W]` class map or depth map."""

    task: str
    value: Tensor

    def predict(self, height: int, width: int) -> Tensor:
        """The prediction for one image of this size (`[]` class id, or an `[H, W]` map)."""
        if self.task == "classification":
            return self.value
        if tuple(self.value.shape) == (height, width):
            return self.value
        mode = "nearest" if self.task == "segmentation" else "bilinear"
        kwargs = {} if mode == "nearest" else {"align_corners": False}
        out = F.interpolate(self.value[None, None].float(), size=(height, width), mode=mode, **kwargs)[0, 0]
        return out.long() if self.task == "segmentation" else out


def _maps(dataset, key: str):
    for i in range(len(dataset)):
        yield dataset[i][key]


def fit_prior(task, spec, train_dataset) -> Prior:
    """The task's image-free predictor from `train_dataset` (unified samples; see the module docstring)."""
    key = task.target_key
    if task.name == "classification":
        counts = torch.zeros(spec.num_classes, dtype=torch.long)
        for label in _maps(train_dataset, key):
            counts[int(label)] += 1
        return Prior(task.name, torch.argmax(counts))  # the lowest class id on ties
    size = None
    if task.name == "segmentation":
        counts = None
        for mask in _maps(train_dataset, key):
            mask = _resize(mask, size, "nearest") if size is not None and tuple(mask.shape) != size else mask
            size = size or tuple(mask.shape)
            if counts is None:
                counts = torch.zeros(spec.num_classes, *size, dtype=torch.long)
            valid = mask != spec.ignore_index if spec.ignore_index is not None else torch.ones_like(mask, dtype=torch.bool)
            counts.scatter_add_(0, mask.clamp(0, spec.num_classes - 1).long()[None], valid.long()[None])
        return Prior(task.name, counts.argmax(0))
    total = count = None
    max_depth = float(spec.max_depth or 10.0)
    for depth in _maps(train_dataset, key):
        depth = _resize(depth, size, "nearest") if size is not None and tuple(depth.shape) != size else depth
        size = size or tuple(depth.shape)
        valid = torch.isfinite(depth) & (depth > 0) & (depth <= max_depth)
        d = torch.where(valid, depth, torch.zeros_like(depth)).double()
        total = d if total is None else total + d
        count = valid.long() if count is None else count + valid.long()
    overall = total.sum() / count.sum().clamp_min(1)
    mean = torch.where(count > 0, total / count.clamp_min(1), overall)
    return Prior(task.name, mean.float())


def _resize(t: Tensor, size, mode: str) -> Tensor:
    return F.interpolate(t[None, None].float(), size=size, mode=mode)[0, 0].to(t.dtype)


@torch.no_grad()
def score_prior(prior: Prior, task, spec, eval_dataset, bootstrap_seed: int | None = None) -> dict[str, float]:
    """The task's metrics of `prior` on `eval_dataset`, with the meters the encoders are scored with;
    with `bootstrap_seed`, also their 95 % bootstrap intervals over images (`ci95`, `uncertainty.py`)."""
    meter = task.make_meter(spec)
    for i in range(len(eval_dataset)):
        sample = eval_dataset[i]
        target = sample[task.target_key]
        h, w = sample["pixel_values"].shape[-2:]
        meter.update(prior.predict(h, w)[None], target[None])
    metrics = {k: float(v) for k, v in meter.compute().items()}
    metrics["num_samples"] = meter.num_samples
    if bootstrap_seed is not None and meter.num_samples:
        from .uncertainty import add_intervals

        results = {"none": metrics}
        add_intervals(results, {"none": meter.per_image()}, seed=bootstrap_seed)
    return metrics

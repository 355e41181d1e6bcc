"""Per-task attack objectives (losses to maximise) and per-image damage, selected by name.

APGD (`attacks/apgd.py`) ascends one of these; each is a function
`(outputs, target, step, attack) -> [B]` of the task model's outputs at the current iterate.

Classification (outputs: logits `[B, K]`, target: labels `[B]`):
    * `ce`: cross-entropy.
    * `dlr`: AutoAttack's difference-of-logits ratio (Croce & Hein 2020,
      https://arxiv.org/abs/2003.01690, Eq. 5): `−(z_y − max_{i≠y} z_i) / (z_π1 − z_π3 + 1e-12)`,
      π sorting the logits in decreasing order; invariant to shifting and scaling the logits.
    * `margin`: `max_{i≠y} z_i − z_y` on the logits (Carlini & Wagner's loss; Square Attack's
      objective, Andriushchenko et al. 2020). Positive iff misclassified; it keeps a signal where
      the softmax saturates (CE and its gradient are then exactly 0).

Segmentation (outputs: logits `[B, C, H, W]`, target: masks `[B, H, W]`; pixels equal to
`ignore_index` count nowhere). Following SEA (Croce et al. 2024, https://arxiv.org/abs/2306.12941):
    * `masked_ce`: CE summed over the pixels the model still classifies correctly (mask taken from
      the current argmax, detached), divided by the number of labelled pixels. Pixels already
      wrong stop consuming the budget.
    * `balanced_masked_ce`: the same pixels, each weighted by `1 / (n_c · K)` where `n_c` counts
      the labelled pixels of its true class in the image and `K` the classes present: every class
      of the image weighs the same, so small objects are attacked as hard as the background.
    * `js`: Jensen–Shannon divergence between the softmax and the one-hot label, averaged over
      labelled pixels. It saturates (at log 2) on confidently wrong pixels, so the gradient moves
      to the pixels that are still right.
    * `masked_spherical`: SEA's fourth loss: on the pixels still classified correctly (mask
      detached), minus the correct-class logit of the logits projected onto the unit sphere,
      `−z_y / ‖z‖₂`, divided by the number of labelled pixels. Invariant to scaling the logits, so
      it does not saturate where the softmax does.
    * `segpgd`: the SegPGD objective (Eq. 1 of the benchmark paper) with its λ schedule.
    * `pixel_margin`: the classification `margin` per pixel, capped at 0 (`min(max_{i≠y} z_i − z_y, 0)`),
      averaged over labelled pixels: pushes correct pixels towards the boundary and counts a flipped
      pixel fully, but never rewards pushing an already wrong pixel further. What Square Attack
      accepts its updates on for segmentation (scale-invariant ranking: no softmax to saturate).

Depth (outputs: depth `[B, H, W]` metres, target: depth `[B, H, W]`, 0 or > max_depth invalid):
    * `depth`: the depth training loss (what DepthPGD ascends).
    * `depth_tol`: our variant in the spirit of `masked_ce`: the same loss over the valid pixels
      whose prediction is still within the tolerance `max(d̂/d, d/d̂) < tolerance` (1.25, the δ1
      threshold; mask detached). Pixels already pushed beyond δ1 leave the objective, so the
      budget goes to the pixels still predicted well, which is what δ1 and AbsRel reward. An image
      with no pixel left in tolerance has zero loss and stays where it is.

Damage (`damage(task, outputs, target, attack) -> [B]`, larger = more hurt; what APGD keeps the
best iterate by): classification the margin `max_{i≠y} z_i − z_y` (> 0 iff misclassified),
segmentation the error rate over labelled pixels, depth the per-image RMSE over valid pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .pgd import output_tensor

LOSSES: dict[str, dict[str, Callable]] = {"classification": {}, "segmentation": {}, "depth": {}}
DEFAULT_LOSS = {"classification": "ce", "segmentation": "masked_ce", "depth": "depth"}


def _register(task: str, name: str):
    def decorator(fn):
        LOSSES[task][name] = fn
        return fn

    return decorator


def loss_task(name: str) -> str:
    """The task whose outputs objective `name` expects; `ValueError` listing the losses if unknown."""
    for task, losses in LOSSES.items():
        if name in losses:
            return task
    known = "; ".join(f"{t}: {', '.join(ls)}" for t, ls in LOSSES.items())
    raise ValueError(f"Unknown attack loss {name!r}; available per task: {known}.")


# ----------------------------------------------------------------------------- outputs and targets


def task_outputs(task: str, raw: Any) -> Tensor:
    """The tensor an objective reads: logits, or depth `[B, H, W]` (a channel axis of 1 squeezed)."""
    if task != "depth":
        return output_tensor(raw, "logits")
    depth = output_tensor(raw, "predicted_depth")
    return depth.squeeze(1) if depth.ndim == 4 and depth.shape[1] == 1 else depth


def prepare_target(task: str, target: Tensor, attack) -> Any:
    """Labels as int64; depth as `(depth with a harmless 1 m at invalid pixels, valid mask)`."""
    if task != "depth":
        return target.long()
    target = target.squeeze(1) if target.ndim == 4 and target.shape[1] == 1 else target
    valid = (target > 0) & (target <= attack.max_depth)  # [B, H, W]
    return torch.where(valid, target, torch.ones_like(target)).detach(), valid


def check_shapes(task: str, outputs: Tensor, target: Any, loss: str) -> None:
    ref = target[0] if task == "depth" else target
    expected = {"classification": "logits [B, K] and labels [B]", "segmentation": "logits [B, C, H, W] and masks [B, H, W]",
                "depth": "depth [B, H, W] and depth targets [B, H, W]"}[task]
    ok = {"classification": outputs.ndim == 2 and ref.shape == outputs.shape[:1],
          "segmentation": outputs.ndim == 4 and ref.shape == outputs.shape[:1] + outputs.shape[2:],
          "depth": outputs.ndim == 3 and ref.shape == outputs.shape}[task]
    if not ok:
        raise ValueError(f"Attack loss {loss!r} is a {task} loss: it expects {expected}, got {tuple(outputs.shape)} and "
                         f"{tuple(ref.shape)}. Pick a loss of the model's task ({DEFAULT_LOSS}).")


# ----------------------------------------------------------------------------- classification


@_register("classification", "ce")
def ce(logits: Tensor, labels: Tensor, step: int, attack) -> Tensor:
    return F.cross_entropy(logits, labels, reduction="none")  # [B]


@_register("classification", "dlr")
def dlr(logits: Tensor, labels: Tensor, step: int, attack) -> Tensor:
    if logits.shape[1] < 3:
        raise ValueError(f"The dlr loss needs at least 3 classes (it divides by z_π1 − z_π3), got {logits.shape[1]}.")
    top = logits.sort(dim=1, descending=True).values  # [B, K]
    z_y = logits.gather(1, labels[:, None])[:, 0]
    return (_other_max(logits, labels) - z_y) / (top[:, 0] - top[:, 2] + 1e-12)


@_register("classification", "margin")
def margin(logits: Tensor, labels: Tensor, step: int, attack) -> Tensor:
    return _other_max(logits, labels) - logits.gather(1, labels[:, None])[:, 0]


def _other_max(logits: Tensor, labels: Tensor) -> Tensor:
    """`max_{i≠y} z_i` per sample."""
    return logits.scatter(1, labels[:, None], float("-inf")).amax(dim=1)


# ----------------------------------------------------------------------------- segmentation


def _seg_parts(logits: Tensor, masks: Tensor, attack) -> tuple[Tensor, Tensor, Tensor]:
    """Per-pixel CE (0 where ignored), labelled mask, still-correct mask (detached); all `[B, H, W]`."""
    valid = masks != attack.ignore_index
    ce_map = F.cross_entropy(logits, masks, ignore_index=attack.ignore_index, reduction="none")
    correct = (logits.detach().argmax(1) == masks) & valid
    return ce_map, valid, correct


def _per_image_mean(values: Tensor, valid: Tensor) -> Tensor:
    return values.flatten(1).sum(1) / valid.flatten(1).sum(1).clamp_min(1).to(values.dtype)


@_register("segmentation", "masked_ce")
def masked_ce(logits: Tensor, masks: Tensor, step: int, attack) -> Tensor:
    ce_map, valid, correct = _seg_parts(logits, masks, attack)
    return _per_image_mean(ce_map * correct, valid)


@_register("segmentation", "balanced_masked_ce")
def balanced_masked_ce(logits: Tensor, masks: Tensor, step: int, attack) -> Tensor:
    ce_map, valid, correct = _seg_parts(logits, masks, attack)
    b, c = logits.shape[:2]
    labels = torch.where(valid, masks, torch.zeros_like(masks)).flatten(1)  # [B, HW]
    counts = torch.zeros(b, c, device=logits.device, dtype=ce_map.dtype)
    counts.scatter_add_(1, labels, valid.flatten(1).to(ce_map.dtype))  # [B, C] labelled pixels per class
    present = (counts > 0).sum(1).clamp_min(1)  # [B]
    weight = 1 / counts.gather(1, labels).clamp_min(1)  # [B, HW]
    return (ce_map.flatten(1) * correct.flatten(1) * weight).sum(1) / present


@_register("segmentation", "js")
def js(logits: Tensor, masks: Tensor, step: int, attack) -> Tensor:
    valid = masks != attack.ignore_index
    safe = torch.where(valid, masks, torch.zeros_like(masks))
    p_y = logits.float().softmax(1).gather(1, safe[:, None])[:, 0].clamp(0, 1)  # [B, H, W]
    # JS(p, e_y) depends on p_y only: the other classes have m = p/2 and add (1 − p_y)·log 2.
    log2 = torch.log(torch.tensor(2.0, device=logits.device))
    half = torch.log1p(p_y) - log2  # log((1 + p_y)/2) = log m_y
    js_map = 0.5 * ((1 - p_y) * log2 + p_y * torch.log(p_y.clamp_min(1e-12)) - p_y * half - half)
    return _per_image_mean(js_map * valid, valid)


@_register("segmentation", "masked_spherical")
def masked_spherical(logits: Tensor, masks: Tensor, step: int, attack) -> Tensor:
    valid = masks != attack.ignore_index
    safe = torch.where(valid, masks, torch.zeros_like(masks))
    logits = logits.float()
    z_y = logits.gather(1, safe[:, None])[:, 0]  # [B, H, W]
    unit_y = z_y / torch.linalg.vector_norm(logits, dim=1).clamp_min(1e-12)
    correct = (logits.detach().argmax(1) == masks) & valid
    return _per_image_mean(-unit_y * correct, valid)


@_register("segmentation", "pixel_margin")
def pixel_margin(logits: Tensor, masks: Tensor, step: int, attack) -> Tensor:
    valid = masks != attack.ignore_index
    safe = torch.where(valid, masks, torch.zeros_like(masks))
    z_y = logits.gather(1, safe[:, None])[:, 0]
    other = logits.scatter(1, safe[:, None], float("-inf")).amax(1)
    return _per_image_mean((other - z_y).clamp(max=0) * valid, valid)


@_register("segmentation", "segpgd")
def segpgd(logits: Tensor, masks: Tensor, step: int, attack) -> Tensor:
    from .segpgd import SegPGD

    return SegPGD(steps=max(attack.steps, 1), ignore_index=attack.ignore_index).loss(logits, masks, step)


# ----------------------------------------------------------------------------- depth


@_register("depth", "depth")
def depth(pred: Tensor, target: tuple[Tensor, Tensor], step: int, attack) -> Tensor:
    from ..losses import depth_loss

    ref, valid = target
    return depth_loss(pred, ref.to(pred.dtype), valid)


@_register("depth", "depth_tol")
def depth_tol(pred: Tensor, target: tuple[Tensor, Tensor], step: int, attack) -> Tensor:
    from ..losses import depth_loss

    ref, valid = target
    p = pred.detach().clamp_min(1e-6)
    within = valid & (torch.maximum(p / ref, ref / p) < attack.tolerance)
    return depth_loss(pred, ref.to(pred.dtype), within)


# ----------------------------------------------------------------------------- damage


def damage(task: str, outputs: Tensor, target: Any, attack) -> Tensor:
    """Per-image damage `[B]` (larger = more hurt); see the module docstring."""
    if task == "classification":
        return _other_max(outputs, target) - outputs.gather(1, target[:, None])[:, 0]
    if task == "segmentation":
        valid = target != attack.ignore_index
        return _per_image_mean(((outputs.argmax(1) != target) & valid).float(), valid)
    ref, valid = target
    sq = torch.where(valid, (outputs.float() - ref.float()).square(), torch.zeros_like(ref, dtype=torch.float32))
    return _per_image_mean(sq, valid).sqrt()

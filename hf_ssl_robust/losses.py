"""Training losses of the downstream heads (also the objectives of the task attacks).

Depth: the scale-invariant log loss of Eigen et al. (2014), https://arxiv.org/abs/1406.2283, plus
the multi-scale gradient-matching loss of MegaDepth (Li & Snavely, 2018),
https://arxiv.org/abs/1804.00607, as in the benchmark paper (arXiv 2407.12588, Eq. 4):

    L = L_pixel + 0.5 * L_grad,    g = log(pred) - log(target)   over valid pixels,
    L_pixel = alpha * sqrt(mean(g^2) - rho * mean(g)^2),           alpha = 1, rho = 0.85,
    L_grad  = sum over strides s in (1, 2, 4, 8) of the masked mean of |dx g_s| and |dy g_s|,

per image (`[B, H, W]` in, `[B]` out). Both the x and the y differences are taken inside each
image, and the scales subsample H and W only (the reference code differenced along the batch
axis and never along x; see reference-notes B8).

Conventions:
    * `valid` defaults to `target > 0` (0 marks a missing depth).
    * An image with no valid pixel (or, for the gradient term, no pair of neighbouring valid
      pixels at some scale) contributes a loss of exactly 0 there, never NaN.
    * The square root is guarded: where its argument is not above `_SQRT_FLOOR` the pixel term is
      exactly 0 with a zero (finite) gradient, so `pred == target` gives a loss of exactly 0.

Example:
    >>> loss = depth_loss(pred, depth).mean()            # pred, depth: [B, H, W] metres
    >>> seg = segmentation_loss(logits, masks)           # logits [B, C, H, W], masks [B, H, W]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["depth_loss", "gradient_loss", "scale_invariant_log_loss", "segmentation_loss"]

_SQRT_FLOOR = 1e-12


def _check_depth(pred: Tensor, target: Tensor, valid: Tensor | None) -> Tensor:
    """Validate shapes and return the boolean valid mask `[B, H, W]`."""
    if pred.ndim != 3 or pred.shape != target.shape:
        raise ValueError(
            f"Expected pred and target of the same shape [B, H, W], got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}. Squeeze a channel axis with `x[:, 0]` and resize the prediction "
            "to the target size first."
        )
    if valid is None:
        return target > 0
    if valid.shape != target.shape:
        raise ValueError(f"valid mask of shape {tuple(valid.shape)} does not match target {tuple(target.shape)}.")
    return valid.bool()


def _log_difference(pred: Tensor, target: Tensor, valid: Tensor, eps: float) -> Tensor:
    """g = log(pred) - log(target) on valid pixels, 0 elsewhere (finite everywhere)."""
    g = torch.log(pred.clamp_min(eps)) - torch.log(target.clamp_min(eps))
    return torch.where(valid, g, torch.zeros_like(g))


def _pixel_term(g: Tensor, valid: Tensor, alpha: float, rho: float) -> Tensor:
    n = valid.flatten(1).sum(1).clamp_min(1).to(g.dtype)  # [B]; an empty image gives g = 0 -> loss 0
    mean_g = g.flatten(1).sum(1) / n
    mean_g2 = g.square().flatten(1).sum(1) / n
    arg = mean_g2 - rho * mean_g.square()  # >= (1 - rho) mean_g^2 >= 0 up to rounding
    positive = arg > _SQRT_FLOOR
    # Double where: the sqrt only ever sees arguments >= the floor, so its gradient stays finite.
    root = torch.sqrt(torch.where(positive, arg, torch.full_like(arg, _SQRT_FLOOR)))
    return alpha * torch.where(positive, root, torch.zeros_like(root))


def _gradient_term(g: Tensor, valid: Tensor, num_scales: int) -> Tensor:
    total = g.new_zeros(g.shape[0])
    for k in range(num_scales):
        s = 2**k
        gs, ms = g[:, ::s, ::s], valid[:, ::s, ::s]  # [B, H/s, W/s]: subsample H and W, never B
        pair_x = ms[:, :, 1:] & ms[:, :, :-1]  # both pixels of the horizontal pair are valid
        pair_y = ms[:, 1:, :] & ms[:, :-1, :]
        dx = (gs[:, :, 1:] - gs[:, :, :-1]).abs() * pair_x
        dy = (gs[:, 1:, :] - gs[:, :-1, :]).abs() * pair_y
        n_pairs = pair_x.flatten(1).sum(1) + pair_y.flatten(1).sum(1)
        total = total + (dx.flatten(1).sum(1) + dy.flatten(1).sum(1)) / n_pairs.clamp_min(1).to(g.dtype)
    return total


def scale_invariant_log_loss(
    pred: Tensor,
    target: Tensor,
    valid: Tensor | None = None,
    *,
    alpha: float = 1.0,
    rho: float = 0.85,
    eps: float = 1e-6,
) -> Tensor:
    """Scale-invariant log loss `alpha * sqrt(mean(g^2) - rho * mean(g)^2)` per image.

    Args:
        pred: `[B, H, W]` predicted depth (clamped at `eps` before the log).
        target: `[B, H, W]` ground-truth depth.
        valid: `[B, H, W]` bool mask; defaults to `target > 0`.
        alpha, rho: the paper's constants (rho = 1 is fully scale invariant, rho = 0 is log-RMSE).
        eps: floor for depths before the log.

    Returns:
        `[B]` loss; 0 for an image without valid pixels.
    """
    valid = _check_depth(pred, target, valid)
    return _pixel_term(_log_difference(pred, target, valid, eps), valid, alpha, rho)


def gradient_loss(
    pred: Tensor,
    target: Tensor,
    valid: Tensor | None = None,
    *,
    num_scales: int = 4,
    eps: float = 1e-6,
) -> Tensor:
    """Multi-scale gradient-matching loss of the log-depth difference, per image.

    At stride `s = 2**k` (k < num_scales), `g` is subsampled on H and W and the L1 norms of its
    horizontal and vertical neighbour differences are averaged over the pairs whose two pixels
    are valid; the scales are summed.

    Returns:
        `[B]` loss; a scale without valid pairs contributes 0.
    """
    valid = _check_depth(pred, target, valid)
    return _gradient_term(_log_difference(pred, target, valid, eps), valid, num_scales)


def depth_loss(
    pred: Tensor,
    target: Tensor,
    valid: Tensor | None = None,
    *,
    alpha: float = 1.0,
    rho: float = 0.85,
    grad_weight: float = 0.5,
    num_scales: int = 4,
    eps: float = 1e-6,
) -> Tensor:
    """Depth training loss `L_pixel + grad_weight * L_grad` per image (the paper's loss).

    Args:
        pred: `[B, H, W]` predicted depth, metres.
        target: `[B, H, W]` ground truth, metres (0 = missing).
        valid: `[B, H, W]` bool mask; defaults to `target > 0`.

    Returns:
        `[B]` per-image loss (take `.mean()` for training; attacks ascend it per sample).
    """
    valid = _check_depth(pred, target, valid)
    g = _log_difference(pred, target, valid, eps)
    loss = _pixel_term(g, valid, alpha, rho)
    if grad_weight:
        loss = loss + grad_weight * _gradient_term(g, valid, num_scales)
    return loss


def segmentation_loss(logits: Tensor, masks: Tensor, ignore_index: int = 255) -> Tensor:
    """Cross-entropy on logits, averaged over the non-ignored pixels of the batch.

    Args:
        logits: `[B, C, H, W]` class logits (never probabilities).
        masks: `[B, H, W]` integer labels; `ignore_index` pixels are skipped.

    Returns:
        Scalar loss; exactly 0 (with a zero gradient) when every pixel is ignored.
    """
    if logits.ndim != 4 or masks.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(
            f"Expected logits [B, C, H, W] and masks [B, H, W] of the same size, got {tuple(logits.shape)} and "
            f"{tuple(masks.shape)}. Upsample the logits to the mask size first."
        )
    masks = masks.long()
    total = F.cross_entropy(logits, masks, ignore_index=ignore_index, reduction="sum")
    count = (masks != ignore_index).sum().clamp_min(1)
    return total / count.to(total.dtype)

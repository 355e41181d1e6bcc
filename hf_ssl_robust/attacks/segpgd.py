"""SegPGD: PGD for semantic segmentation that shifts weight from correct to wrong pixels.

Gu et al., "SegPGD: An Effective and Efficient Adversarial Attack for Evaluating and Boosting
Segmentation Robustness" (ECCV 2022), https://arxiv.org/abs/2207.12391; Eq. 1 of Kowalczuk et
al. (2024), https://arxiv.org/abs/2407.12588.

Threat model: L-inf (or L2) ball of radius eps around x, pixels in [0, 1], untargeted.
Shapes: `model(pixels)` -> logits `[B, C, H, W]` at input resolution (or `.logits`); target:
masks `[B, H, W]` (int), `ignore_index` pixels excluded. Objective per image at step t = 1..T:

    L_t = (1 − λ_t)/(HW) · Σ_{correct} CE + λ_t/(HW) · Σ_{wrong} CE,   λ_t = (t − 1)/(2T)

CE is taken on logits. Correct/wrong is decided by the current argmax; ignored pixels are in
neither set and get no gradient. Dividing by H·W (Eq. 1) rather than by each set's size never
divides by zero: all-correct, all-wrong and all-ignored images give finite losses; an
all-ignored image has zero loss and zero gradient, so it stays at its random start (or at x).
`score` (used by `track_best`) is the fraction of misclassified non-ignored pixels.

Example:
    >>> attack = SegPGD(eps=8 / 255, steps=20, ignore_index=255, seed=0)
    >>> adv = attack.perturb(segmenter, pixels, masks).pixels
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor

from .base import Attack, register_attack
from .pgd import output_tensor


@register_attack("segpgd")
@dataclass
class SegPGD(Attack):
    """SegPGD with the paper's λ schedule and H·W normalisation (see module docstring)."""

    ignore_index: int = 255

    task: ClassVar[str | None] = "segmentation"

    def forward(self, model: Any, pixels: Tensor) -> Tensor:
        return output_tensor(model(pixels), "logits")

    def _check(self, logits: Tensor, masks: Tensor) -> None:
        if logits.ndim != 4 or masks.shape != logits.shape[:1] + logits.shape[2:]:
            raise ValueError(
                f"Expected logits [B, C, H, W] at input resolution and masks [B, H, W], got "
                f"{tuple(logits.shape)} and {tuple(masks.shape)}."
            )

    def loss(self, outputs: Tensor, target: Tensor, step: int) -> Tensor:
        self._check(outputs, target)
        target = target.long()
        ce = F.cross_entropy(outputs, target, ignore_index=self.ignore_index, reduction="none")  # [B, H, W], 0 if ignored
        correct = (outputs.detach().argmax(1) == target).to(ce.dtype)  # ignored pixels: ce = 0 anyway
        lam = step / (2 * self.steps)  # (t − 1)/(2T) with t = step + 1
        weights = (1 - lam) * correct + lam * (1 - correct)
        return (weights * ce).flatten(1).sum(1) / ce[0].numel()  # [B], divided by H·W

    def score(self, outputs: Tensor, target: Tensor) -> Tensor:
        self._check(outputs, target)
        valid = target != self.ignore_index
        wrong = (outputs.argmax(1) != target) & valid
        return wrong.flatten(1).sum(1) / valid.flatten(1).sum(1).clamp_min(1)  # [B] error rate

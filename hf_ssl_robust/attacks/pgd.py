"""PGD on a classifier: maximise the cross-entropy of the predicted logits.

Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks" (2018),
https://arxiv.org/abs/1706.06083; used as the classification task attack by Kowalczuk et al.
(2024), https://arxiv.org/abs/2407.12588.

Threat model: L-inf (or L2) ball of radius eps around x, pixels in [0, 1], untargeted.
Shapes: `model(pixels)` -> logits `[B, K]` (or an HF `ModelOutput` with `.logits`); target:
labels `[B]` (int). Objective per sample: `CE(logits, y)`. `logit_rescale=True` divides the
logits by `max(max_k logit, 1)` first, as the reference code does (not in the paper).

Example:
    >>> attack = PGD(eps=8 / 255, steps=20, seed=0)
    >>> adv = attack.perturb(classifier, pixels, labels).pixels
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor

from .base import Attack, register_attack


def output_tensor(outputs: Any, attr: str) -> Tensor:
    """The tensor itself, or `outputs.<attr>` of an HF `ModelOutput`."""
    if isinstance(outputs, Tensor):
        return outputs
    value = getattr(outputs, attr, None)
    if not isinstance(value, Tensor):
        raise ValueError(f"Expected the model to return a tensor or an output with `.{attr}`, got {type(outputs).__name__}.")
    return value


@register_attack("pgd")
@dataclass
class PGD(Attack):
    """Cross-entropy PGD on classification logits (see module docstring)."""

    logit_rescale: bool = False

    task: ClassVar[str | None] = "classification"

    def forward(self, model: Any, pixels: Tensor) -> Tensor:
        return output_tensor(model(pixels), "logits")

    def loss(self, outputs: Tensor, target: Tensor, step: int) -> Tensor:
        if outputs.ndim != 2 or target.shape != outputs.shape[:1]:
            raise ValueError(f"Expected logits [B, K] and labels [B], got {tuple(outputs.shape)} and {tuple(target.shape)}.")
        if self.logit_rescale:  # per-sample temperature, a constant for the gradient
            outputs = outputs / outputs.detach().amax(dim=1, keepdim=True).clamp_min(1)
        return F.cross_entropy(outputs, target.long(), reduction="none")  # [B]

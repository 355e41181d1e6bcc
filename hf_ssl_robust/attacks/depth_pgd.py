"""DepthPGD: maximise the depth training loss of a monocular depth model.

Kowalczuk et al., "Benchmarking Robust Self-Supervised Learning Across Diverse Downstream
Tasks" (2024), https://arxiv.org/abs/2407.12588, Sec. 3: PGD on "the loss terms used for depth
estimation" (`hf_ssl_robust.losses.depth_loss`: scale-invariant log loss + ½ multi-scale
gradient loss), against the ground truth, over valid pixels only.

Threat model: L-inf (or L2) ball of radius eps around x, pixels in [0, 1], untargeted.
Shapes: `model(pixels)` -> depth `[B, H, W]` or `[B, 1, H, W]` in metres (or an HF output with
`.predicted_depth`); target: depth `[B, H, W]` in metres, 0 = invalid. Valid pixels:
`0 < target <= max_depth`; invalid pixels contribute neither to the loss nor to the gradient.

Example:
    >>> attack = DepthPGD(eps=8 / 255, steps=20, max_depth=10.0, seed=0)
    >>> adv = attack.perturb(depther, pixels, depth).pixels
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from .base import Attack, register_attack
from .pgd import output_tensor


@register_attack("depth_pgd")
@dataclass
class DepthPGD(Attack):
    """PGD on the depth loss over valid pixels (see module docstring).

    Args:
        max_depth: ground truth above this (metres) is invalid (NYU: 10).
    """

    max_depth: float = 10.0

    task: ClassVar[str | None] = "depth"

    def validate(self) -> None:
        super().validate()
        if not self.max_depth > 0:
            raise ValueError(f"max_depth must be > 0 metres, got {self.max_depth}.")

    def forward(self, model: Any, pixels: Tensor) -> Tensor:
        depth = output_tensor(model(pixels), "predicted_depth")
        return depth.squeeze(1) if depth.ndim == 4 and depth.shape[1] == 1 else depth  # [B, H, W]

    def prepare_target(self, model: Any, pixels: Tensor, target: Any) -> tuple[Tensor, Tensor]:
        target = super().prepare_target(model, pixels, target)
        target = target.squeeze(1) if target.ndim == 4 and target.shape[1] == 1 else target
        valid = (target > 0) & (target <= self.max_depth)  # [B, H, W]
        # invalid pixels are masked out; a harmless 1 m there keeps log() finite inside the loss
        return torch.where(valid, target, torch.ones_like(target)).detach(), valid

    def loss(self, outputs: Tensor, target: tuple[Tensor, Tensor], step: int) -> Tensor:
        from ..losses import depth_loss  # lazy: losses.py is optional for the other attacks

        depth, valid = target
        if outputs.shape != depth.shape:
            raise ValueError(f"Expected predicted depth {tuple(depth.shape)} (the target's shape), got {tuple(outputs.shape)}.")
        return depth_loss(outputs, depth.to(outputs.dtype), valid)  # [B]

"""EmbedAttack: push the encoder's embedding away from the clean one.

Kowalczuk et al., "Benchmarking Robust Self-Supervised Learning Across Diverse Downstream
Tasks" (2024), https://arxiv.org/abs/2407.12588, Sec. 3: task-agnostic, it only sees the encoder.

Threat model: L-inf (or L2) ball of radius eps around x, pixels in [0, 1].
Shapes: `model` is a task head that exposes `read_tokens(pixels) -> [B, ...]` (the tokens it
reads, windows and padding included: what the benchmark attacks), or a `PixelEncoder` (pixels
`[B, 3, H, W]` -> `.cls [B, D]`, `.patches [B, N, D]`, picked by `tokens` / `pre_norm`); `target` defaults to the clean embedding of the chosen tokens, computed once.
Objective per sample: `‖f(x_adv) − f(x)‖₂` over the chosen tokens, flattened (or `1 − cos` with
`distance="cosine"`, the DeACL inner maximisation). The clean point is a stationary point of
this objective (zero gradient), so keep `random_start=True`.

Example:
    >>> attack = EmbedAttack(eps=8 / 255, tokens="patch", pre_norm=True, seed=0)
    >>> adv = attack.perturb(encoder, pixels).pixels
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Attack, register_attack

TOKENS = ("cls", "patch")
DISTANCES = ("l2", "cosine")


@register_attack("embed")
@dataclass
class EmbedAttack(Attack):
    """Maximise the distance between adversarial and clean embeddings (see module docstring).

    Args:
        tokens: for a bare encoder: "cls" or "patch" (a head decides for itself).
        pre_norm: read tokens before the final layer norm (True for the depth head), after it
            (False), or the encoder's own default (None).
        distance: "l2" (the paper) or "cosine" (`1 − cos`, DeACL).
    """

    tokens: str = "cls"
    pre_norm: bool | None = None
    distance: str = "l2"

    surface: ClassVar[str] = "encoder"

    def validate(self) -> None:
        super().validate()
        if self.tokens not in TOKENS:
            raise ValueError(f"tokens must be one of {list(TOKENS)}, got {self.tokens!r}.")
        if self.distance not in DISTANCES:
            raise ValueError(f"distance must be one of {list(DISTANCES)}, got {self.distance!r}.")

    def forward(self, model: Any, pixels: Tensor) -> Tensor:
        if hasattr(model, "read_tokens"):  # a task head: exactly the tokens it reads
            return model.read_tokens(pixels).flatten(1)
        out = model(pixels) if self.pre_norm is None else model(pixels, pre_norm=self.pre_norm)
        if isinstance(out, Tensor):  # a plain feature extractor
            return out.flatten(1)
        tokens = out.cls if self.tokens == "cls" else out.patches  # [B, D] or [B, N, D]
        return tokens.flatten(1)  # [B, D'] with D' = D or N * D

    def prepare_target(self, model: Any, pixels: Tensor, target: Any) -> Tensor:
        if target is None:
            with torch.no_grad():
                return self.forward(model, pixels).detach()
        return target.detach().flatten(1)

    def loss(self, outputs: Tensor, target: Tensor, step: int) -> Tensor:
        if outputs.shape != target.shape:
            raise ValueError(f"Embedding {tuple(outputs.shape)} and target {tuple(target.shape)} differ in shape.")
        if self.distance == "cosine":
            return 1 - F.cosine_similarity(outputs, target.to(outputs.dtype), dim=1)
        return torch.linalg.vector_norm(outputs - target, dim=1)  # [B]

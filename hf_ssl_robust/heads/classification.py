"""Linear classification head on the CLS token of a frozen encoder.

Paper: Kowalczuk et al., "Benchmarking Robust Self-Supervised Learning Across Diverse Downstream
Tasks", https://arxiv.org/abs/2407.12588 (linear probe: `nn.Linear(D, K)` on the CLS token after
the final layer norm; encoder frozen, eval mode).

Shapes: `pixel_values` `[B, 3, H, W]` in [0, 1] (any size, positional embeddings interpolate);
`labels` `[B]`; output `ImageClassifierOutput(logits [B, K], loss)`.

Example:
    >>> model = SSLForImageClassification.from_encoder("dinov2-small", num_labels=10, image_size=518)
    >>> model(torch.rand(2, 3, 518, 518), labels=torch.tensor([3, 7])).loss
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from transformers.modeling_outputs import ImageClassifierOutput

from .configuration import ClassificationHeadConfig
from .modeling import SSLHeadPreTrainedModel

__all__ = ["SSLForImageClassification"]


class SSLForImageClassification(SSLHeadPreTrainedModel):
    """Frozen encoder + `Linear(hidden_size, num_labels)` on the CLS token."""

    config_class = ClassificationHeadConfig

    def __init__(self, config: ClassificationHeadConfig, encoder=None):
        super().__init__(config, encoder=encoder)
        self.classifier = nn.Linear(self.encoder.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self, pixel_values: Tensor | None = None, labels: Tensor | None = None, features: Tensor | None = None, **kwargs
    ) -> ImageClassifierOutput:
        """Args:
            pixel_values: `[B, 3, H, W]` in [0, 1].
            labels: optional `[B]` class indices; adds the cross-entropy `loss`.
            features: precomputed `encode_features` output instead of pixels (cached training).
        """
        if features is None:
            features = self.encode_features(pixel_values)
        return self.forward_features(features, None, labels)

    def encode_features(self, pixel_values: Tensor) -> Tensor:
        """What the head reads from the frozen encoder: the CLS token `[B, D]` after the final LN."""
        return self.encoder(pixel_values).cls

    def read_tokens(self, pixel_values: Tensor) -> Tensor:
        """What the head reads, for EmbedAttack: the CLS token `[B, D]`."""
        return self.encode_features(pixel_values)

    def forward_features(self, features: Tensor, image_size=None, labels: Tensor | None = None) -> ImageClassifierOutput:
        """The head alone, on `encode_features` output (training caches those)."""
        logits = self.classifier(features)  # [B, K]
        loss = F.cross_entropy(logits, labels.long()) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits)

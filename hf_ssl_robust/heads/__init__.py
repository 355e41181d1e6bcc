"""Task heads on frozen self-supervised encoders, as `transformers` models.

One `PreTrainedConfig` + `PreTrainedModel` pair per task of the paper
(https://arxiv.org/abs/2407.12588):

* classification: `ClassificationHeadConfig` (`ssl_linear_classifier`) -> `SSLForImageClassification`
  -> `ImageClassifierOutput(logits [B, K])`;
* segmentation: `SegmentationHeadConfig` (`ssl_linear_segmenter`) -> `SSLForSemanticSegmentation`
  -> `SemanticSegmenterOutput(logits [B, C, H, W])` at the input size (sliding windows);
* depth: `DepthHeadConfig` (`ssl_linear_depth`) -> `SSLForDepthEstimation`
  -> `DepthEstimatorOutput(predicted_depth [B, H, W])` in metres.

Every head also exposes `read_tokens(pixel_values) -> [B, ...]`: exactly the encoder tokens it
reads (CLS; every sliding window's patch tokens; the padded input's pre-LN CLS and patch tokens), which
EmbedAttack pushes away from their clean values.

Every model takes `pixel_values` `[B, 3, H, W]` in [0, 1] (normalisation is inside the encoder)
and returns a `loss` when `labels` are given. The encoder is frozen and always in eval mode.

Decision (DESIGN.md §3): a saved head is **lean** by default. `save_pretrained` writes the head's own
weights and `config.encoder_reference` (the encoder's Hub id at a commit, or its absolute folder, and the
SHA-256 of its weights, from `identity.encoder_identity`); `from_pretrained` loads the encoder from there
with `AutoModel.from_pretrained` and refuses other weights, so a reloaded head is bit-identical and can
never silently pair with a different revision of its encoder. `save_pretrained(..., embed_encoder=True)`
keeps today's self-contained folder (encoder + head in one `model.safetensors`, the architecture rebuilt
from `config.encoder_config`, no network). Every folder also carries remote code (`modeling_ssl_heads.py`
from `heads/remote/`, and `auto_map`), so transformers alone loads it with `trust_remote_code=True`
(`heads/lean.py`).

Importing this package registers the configs with `AutoConfig` and the models with
`AutoModelForImageClassification`, `AutoModelForSemanticSegmentation` and
`AutoModelForDepthEstimation`, so `AutoModelFor...from_pretrained(path)` works once
`hf_ssl_robust` is imported.

Example:
    >>> from hf_ssl_robust.heads import SSLForImageClassification
    >>> model = SSLForImageClassification.from_encoder("dinov2-small", num_labels=10, image_size=518)
    >>> model.save_pretrained("cifar10-head")            # then AutoModelForImageClassification.from_pretrained
"""

from transformers import (
    AutoConfig,
    AutoModelForDepthEstimation,
    AutoModelForImageClassification,
    AutoModelForSemanticSegmentation,
)

from .classification import SSLForImageClassification
from .configuration import ClassificationHeadConfig, DepthHeadConfig, SegmentationHeadConfig, SSLHeadConfig
from .depth import SSLForDepthEstimation
from .modeling import SSLHeadPreTrainedModel, build_encoder, centre_pad, freeze_encoder
from .segmentation import SSLForSemanticSegmentation, sliding_window_logits, window_count_map, window_crops, window_positions

HEADS = {
    "classification": SSLForImageClassification,
    "segmentation": SSLForSemanticSegmentation,
    "depth": SSLForDepthEstimation,
}

for _config, _model, _auto in (
    (ClassificationHeadConfig, SSLForImageClassification, AutoModelForImageClassification),
    (SegmentationHeadConfig, SSLForSemanticSegmentation, AutoModelForSemanticSegmentation),
    (DepthHeadConfig, SSLForDepthEstimation, AutoModelForDepthEstimation),
):
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    _auto.register(_config, _model, exist_ok=True)

__all__ = [
    "HEADS",
    "ClassificationHeadConfig",
    "DepthHeadConfig",
    "SSLForDepthEstimation",
    "SSLForImageClassification",
    "SSLForSemanticSegmentation",
    "SSLHeadConfig",
    "SSLHeadPreTrainedModel",
    "SegmentationHeadConfig",
    "build_encoder",
    "centre_pad",
    "freeze_encoder",
    "sliding_window_logits",
    "window_count_map",
    "window_crops",
    "window_positions",
]

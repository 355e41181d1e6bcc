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

Decision: the encoder weights are saved WITH the head. `save_pretrained` writes one
self-contained `model.safetensors` (encoder + head) and a `config.json` that records the encoder's
name (`encoder_name_or_path`) and its full backbone config (`encoder_config`). `from_pretrained`
rebuilds the encoder architecture from that config (no download, works with `HF_HUB_OFFLINE=1`)
and loads every weight, so a reloaded head is bit-identical and one Hub repo holds everything;
a head can never silently pair with a different revision of its encoder. The cost is disk size
(the encoder is duplicated per head).

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

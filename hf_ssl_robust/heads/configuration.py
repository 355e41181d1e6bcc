"""Configurations of the linear heads: Hub artifacts, so `PreTrainedConfig` subclasses.

Every head config records the encoder it was trained on twice: by name
(`encoder_name_or_path`, for people) and as the encoder's full backbone config
(`encoder_config`, a plain dict with its `model_type`), so that `from_pretrained` rebuilds the
architecture offline; the encoder *weights* are referenced (`encoder_reference`, a lean folder) or
stored in the head's own `model.safetensors` (`embed_encoder=True`; see `hf_ssl_robust.heads`).
"""

from __future__ import annotations

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig

from ..encoders import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "ClassificationHeadConfig",
    "DepthHeadConfig",
    "SSLHeadConfig",
    "SegmentationHeadConfig",
    "default_window_stride",
]

# Sliding-window strides of the paper for its two window sizes (DINO v1 at 224, DINOv2 at 518).
PAPER_WINDOW_STRIDE = {224: 100, 518: 341}


def default_window_stride(window_size: int) -> int:
    """The paper's stride for its window sizes, else half the window."""
    return PAPER_WINDOW_STRIDE.get(window_size, max(1, window_size // 2))


@strict
class SSLHeadConfig(PreTrainedConfig):
    """Fields shared by every head.

    Args:
        encoder_name_or_path: where the encoder came from (preset, Hub id or folder); informative only.
        encoder_config: the encoder backbone's `config.to_dict()` (must contain `model_type`); the
            architecture is rebuilt from it without any download.
        encoder_reference: set in a lean head folder (the default of `save_pretrained`, see `heads/lean.py`):
            where its encoder's weights are (`source`, `kind`, `revision`, `weights_sha256`); None when the
            folder's own `model.safetensors` holds them.
        image_mean, image_std: normalisation applied inside the encoder to [0, 1] pixels.
        image_size: side of the (square) images the head was trained at.
        initializer_range: std of the normal init of the head's weights.
    """

    model_type = "ssl_head"

    encoder_name_or_path: str = ""
    encoder_config: dict[str, Any] | None = None
    encoder_reference: dict[str, Any] | None = None
    image_mean: list[float] | tuple[float, ...] = IMAGENET_MEAN
    image_std: list[float] | tuple[float, ...] = IMAGENET_STD
    image_size: int = 224
    initializer_range: float = 0.01

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.encoder_config is not None and "model_type" not in self.encoder_config:
            raise ValueError(
                "encoder_config must be a backbone config dict with a 'model_type' key (use "
                "`backbone.config.to_dict()`), got keys " + repr(sorted(self.encoder_config)[:8])
            )
        for name in ("image_mean", "image_std"):
            if len(getattr(self, name)) != 3:
                raise ValueError(f"{name} needs one value per RGB channel, got {getattr(self, name)!r}.")
        if self.image_size < 1:
            raise ValueError(f"image_size must be positive, got {self.image_size}.")

    def encoder_backbone_config(self) -> PreTrainedConfig:
        """The encoder's backbone config, rebuilt from `encoder_config` (no network)."""
        if self.encoder_config is None:
            raise ValueError(
                f"{type(self).__name__}.encoder_config is empty: build heads with `from_encoder(...)` or pass "
                "`encoder=` so that the backbone architecture is recorded."
            )
        fields = dict(self.encoder_config)
        return AutoConfig.for_model(fields.pop("model_type"), **fields)


@strict
class ClassificationHeadConfig(SSLHeadConfig):
    """Linear classifier on the CLS token (`num_labels` / `id2label` from the base config)."""

    model_type = "ssl_linear_classifier"


@strict
class SegmentationHeadConfig(SSLHeadConfig):
    """BatchNorm + 1x1 conv on the patch grid, with sliding-window inference.

    Args:
        ignore_index: label of unlabelled pixels (HF convention 255), skipped by the loss.
        window_size: sliding-window side in pixels (default: `image_size`).
        window_stride: step between windows (default: the paper's 100 for 224, 341 for 518, else
            half the window); at most `window_size` so that windows cover every pixel.
    """

    model_type = "ssl_linear_segmenter"

    ignore_index: int = 255
    window_size: int | None = None
    window_stride: int | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.window_size is None:
            self.window_size = self.image_size
        if self.window_stride is None:
            self.window_stride = default_window_stride(self.window_size)
        if not 1 <= self.window_stride <= self.window_size:
            raise ValueError(
                f"window_stride={self.window_stride} must be in [1, window_size={self.window_size}]; a larger "
                "stride would leave pixels that no window covers."
            )


@strict
class DepthHeadConfig(SSLHeadConfig):
    """256-bin classification-regression depth head on pre-LN tokens (CLS concatenated).

    Args:
        min_depth, max_depth: range of the bin centres, metres (NYU: 0.001-10).
        n_bins: number of depth bins.
        upsample_factor: bilinear upsampling of the token grid before the 1x1 conv.
        use_batchnorm: BatchNorm2d on the 2D-channel features before the conv (off, as in the
            DINOv2 linear depth head, where it is commented out, and the paper's code).
    """

    model_type = "ssl_linear_depth"

    min_depth: float = 0.001
    max_depth: float = 10.0
    n_bins: int = 256
    upsample_factor: int = 4
    use_batchnorm: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if not 0 <= self.min_depth < self.max_depth:
            raise ValueError(f"Need 0 <= min_depth < max_depth, got {self.min_depth} and {self.max_depth}.")
        if self.n_bins < 2:
            raise ValueError(f"n_bins must be at least 2, got {self.n_bins}.")

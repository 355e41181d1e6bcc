"""Image processors saved next to heads and encoders, so that `transformers.pipeline` can use them.

`pipeline("image-classification" | "image-segmentation" | "depth-estimation", model=folder)` loads
the image processor from `folder/preprocessor_config.json`; without one it fails. Each processor is
a stock `transformers` class (no custom code, so the file loads anywhere), picked for what the task
needs and for its PIL backend, which works without torchvision:

| model | class | resize | rescale | normalise |
|---|---|---|---|---|
| classification head | `ViTImageProcessor` | square `image_size` (as the benchmark's evaluation) | 1/255 | off |
| segmentation head | `BeitImageProcessor` (has `post_process_semantic_segmentation`) | short side to `image_size`, aspect kept | 1/255 | off |
| depth head | `DPTImageProcessor` (has `post_process_depth_estimation`) | aspect kept, the side whose scale is closest to 1 set to `image_size` | 1/255 | off |
| encoder (plain `AutoModel`) | `ViTImageProcessor` | square native size (`config.image_size`) | 1/255 | its `encoder_config.json` mean / std, else the family's |

Decisions:
    * Heads normalise inside the model (pixels in [0, 1] is the library's contract), so their
      processors do not: `do_normalize=False`, with an identity mean 0 / std 1 kept in the file so
      that switching it on by mistake changes nothing.
    * An encoder saved for `AutoModel` is a plain backbone that does NOT normalise; its processor
      applies the family's mean and std (the values `load_encoder` uses inside `PixelEncoder`).
    * Dense heads accept any size (sliding windows / centre padding inside), so segmentation and
      depth keep the photo's aspect ratio and only bring its scale to the one the head was trained
      at; the pipelines resize the output back to the photo's size. For photos larger than
      `image_size` both rules set the short side to `image_size`, as `eval_transform` does; for a
      smaller photo the depth processor upscales less (DPT's rule; no stock depth processor has a
      short-side resize).
    * Resampling is bilinear, like the benchmark's resize (PIL's filter, so values can differ from
      `eval_transform`'s by rounding).

`save_pretrained` of every head writes its processor; `save_image_processor(folder)` adds one to a
folder saved before processors existed (our own loading never needs it).

Example:
    >>> import hf_ssl_robust
    >>> from transformers import pipeline
    >>> save_image_processor("outputs/heads/cifar10-head")              # only for folders saved before
    >>> pipeline("image-classification", model="outputs/heads/cifar10-head")(image)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from transformers import AutoConfig, BeitImageProcessorPil, DPTImageProcessorPil, PretrainedConfig, ViTImageProcessorPil
from transformers.image_processing_utils import BaseImageProcessor
from transformers.image_utils import PILImageResampling

from .encoders import ENCODER_CONFIG_FILE, get_family
from .heads.configuration import ClassificationHeadConfig, DepthHeadConfig, SegmentationHeadConfig

__all__ = ["PROCESSOR_FILE", "ensure_image_processor", "image_processor_for", "save_image_processor"]

PROCESSOR_FILE = "preprocessor_config.json"
# [0, 1] pixels in, [0, 1] pixels out: the model normalises.
_NO_NORMALISATION = dict(do_rescale=True, rescale_factor=1 / 255, do_normalize=False, image_mean=[0.0, 0.0, 0.0], image_std=[1.0, 1.0, 1.0])
_BILINEAR = PILImageResampling.BILINEAR


def image_processor_for(config: PretrainedConfig, mean=None, std=None) -> BaseImageProcessor:
    """The image processor of a head config or of an encoder (backbone) config.

    Args:
        config: a head config (`ClassificationHeadConfig`, `SegmentationHeadConfig`,
            `DepthHeadConfig`) or the config of a backbone of a supported family.
        mean, std: an encoder's normalisation (default: its family's).

    Returns:
        A PIL-backend image processor (see the module docstring for what each one does).

    Raises:
        ValueError: a backbone of an unsupported family (the message lists the supported ones).
    """
    if isinstance(config, ClassificationHeadConfig):
        side = int(config.image_size)
        return ViTImageProcessorPil(do_resize=True, size={"height": side, "width": side}, resample=_BILINEAR, **_NO_NORMALISATION)
    if isinstance(config, SegmentationHeadConfig):
        return BeitImageProcessorPil(
            do_resize=True, size={"shortest_edge": int(config.image_size)}, resample=_BILINEAR, do_center_crop=False,
            do_reduce_labels=False, **_NO_NORMALISATION,
        )  # fmt: skip
    if isinstance(config, DepthHeadConfig):
        side = int(config.image_size)
        return DPTImageProcessorPil(
            do_resize=True, size={"height": side, "width": side}, keep_aspect_ratio=True, ensure_multiple_of=1,
            resample=_BILINEAR, do_pad=False, **_NO_NORMALISATION,
        )  # fmt: skip
    family = get_family(config)  # a clear error for anything unsupported
    side = int(getattr(config, "image_size", None) or family.paper_image_size)
    return ViTImageProcessorPil(
        do_resize=True, size={"height": side, "width": side}, resample=_BILINEAR, do_rescale=True, rescale_factor=1 / 255,
        do_normalize=True, image_mean=list(mean or family.mean), image_std=list(std or family.std),
    )  # fmt: skip


def _folder_config(folder: Path) -> PretrainedConfig:
    if not (folder / "config.json").is_file():
        raise ValueError(f"{str(folder)!r} has no config.json: pass a folder written by save_pretrained.")
    model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    if model_type is None:
        raise ValueError(f"{str(folder / 'config.json')!r} has no model_type; it is not a transformers config.")
    if model_type.startswith("ssl_"):
        from . import heads  # noqa: F401  (registers the head configs with AutoConfig)
    return AutoConfig.from_pretrained(folder)


def save_image_processor(folder: str | os.PathLike, config: PretrainedConfig | None = None) -> Path:
    """Write the image processor of the model in `folder` to `folder/preprocessor_config.json`.

    Args:
        folder: a head or encoder folder written by `save_pretrained`.
        config: its config (default: read from `folder/config.json`).

    Returns:
        The path of the written file (an existing one is replaced).
    """
    folder = Path(folder)
    config = config if config is not None else _folder_config(folder)
    folder.mkdir(parents=True, exist_ok=True)
    saved = folder / ENCODER_CONFIG_FILE  # an encoder's own normalisation (PixelEncoder.save_pretrained)
    norm = json.loads(saved.read_text()) if saved.is_file() else {}
    image_processor_for(config, norm.get("image_mean"), norm.get("image_std")).save_pretrained(folder)
    return folder / PROCESSOR_FILE


def ensure_image_processor(folder: str | os.PathLike) -> Path:
    """`save_image_processor` for a folder that has none yet; an existing file is kept as it is."""
    path = Path(folder) / PROCESSOR_FILE
    return path if path.is_file() else save_image_processor(folder)

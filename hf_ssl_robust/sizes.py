"""Input sizes, sliding windows and strides of the paper, per encoder family and dataset: one table.

The paper (Kowalczuk et al., https://arxiv.org/abs/2407.12588, and its code, reference-notes §1,
§5) evaluates DINO v1 at 224 px and DINOv2 at 518 px:

* classification: images resized to a square of the family's side (CIFAR 32² and STL 96² are
  upsampled to 224² / 518²);
* segmentation: short side resized to the family's side, sliding windows of that side with stride
  100 (224) or 341 (518); Cityscapes (1024×2048) therefore becomes 224×448 / 518×1036;
* depth (NYU-Depth v2): 480×640 for every family, centre-padded to the patch size inside the head.

Families the paper did not evaluate follow the same protocol shape (one side for every task, windows
of that side, NYU at 480×640):

* DINOv3 (ViT and ConvNeXt): 512 px, windows 512 with stride 341, the crop and stride of DINOv3's
  own ADE20k linear-probe evaluation (`dinov3/eval/segmentation/config.py`); like DINOv2's 518 at
  patch 14 (37 tokens a side) it is DINOv3's dense-evaluation resolution (32 tokens a side at patch 16);
* CLIP and SigLIP: trained at one resolution, so their side is the checkpoint's own `image_size`
  (224 for every preset; windows of that side with the paper's stride for it, 100 at 224, else half).

A family is a string (`"dino"`, `"dinov2"`, `"dinov2-reg"`, `"dinov3"`; `"clip@224"`, `"siglip@384"`
for fixed-resolution families, whose rows are built from the side); families added later register
their own rows in :data:`PAPER_SIZES` (and their `model_type` in :data:`FAMILY_OF_MODEL_TYPE`).
Lookup order: `(family, dataset)`, then `(family, task)`; ShapesWorld and families with no row
use the dataset's own size.

    >>> resolve_input_size("dinov2", get_dataset_spec("cityscapes"))
    InputSize(size=(518, 1036), window=518, stride=341, crop=518)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .heads.configuration import default_window_stride

__all__ = ["FAMILY_OF_MODEL_TYPE", "InputSize", "NATIVE_SIZE_FAMILIES", "PAPER_SIZES", "encoder_family", "family_rows",
           "resolve_input_size", "sizes_table"]

Size = int | tuple[int, int]

# transformers `model_type` -> family name of the table.
FAMILY_OF_MODEL_TYPE: dict[str, str] = {
    "vit": "dino", "dinov2": "dinov2", "dinov2_with_registers": "dinov2-reg",
    "dinov3_vit": "dinov3", "dinov3_convnext": "dinov3",
    "clip_vision_model": "clip", "clip": "clip", "siglip_vision_model": "siglip", "siglip": "siglip",
}
# Families trained at one fixed resolution: their rows use the checkpoint's `image_size` ("clip@224").
NATIVE_SIZE_FAMILIES = ("clip", "siglip")


@dataclass(frozen=True)
class InputSize:
    """How one (family, dataset) pair is fed to the model.

    Attributes:
        size: evaluation resize: an int is the short side (segmentation, depth; aspect kept) or the
            square side (classification); `(h, w)` resizes exactly.
        window: segmentation sliding-window side (also the training crop); None for other tasks.
        stride: step between windows; None for other tasks.
        crop: training crop side or `(h, w)` for dense tasks (classification trains at `size`).
    """

    size: Size
    window: int | None = None
    stride: int | None = None
    crop: Size | None = None


def _family_rows(side: int, stride: int) -> dict[str, InputSize]:
    return {
        "classification": InputSize(side),
        "segmentation": InputSize(side, side, stride, side),
        "cityscapes": InputSize((side, 2 * side), side, stride, side),
        "nyu_depth_v2": InputSize((480, 640), crop=(480, 640)),
    }


PAPER_SIZES: dict[str, dict[str, InputSize]] = {
    "dino": _family_rows(224, 100),
    "dinov2": _family_rows(518, 341),
    "dinov2-reg": _family_rows(518, 341),  # the paper has no registers model; DINOv2's protocol
    "dinov3": _family_rows(512, 341),  # DINOv3's own linear-probe crop and stride (see the module docstring)
}


def encoder_family(config) -> str | None:
    """The table's family name for an encoder (None when it has no row).

    Args:
        config: a backbone config (`PretrainedConfig` or its `to_dict()`), or a bare `model_type`
            string. A fixed-resolution family needs the config: `"clip@224"` comes from its
            (vision) `image_size`; from a bare model type it is `"clip"`, which has no row.
    """
    if isinstance(config, str) or config is None:
        return FAMILY_OF_MODEL_TYPE.get(config or "")
    get = config.get if isinstance(config, dict) else lambda key: getattr(config, key, None)
    family = FAMILY_OF_MODEL_TYPE.get(get("model_type") or "")
    if family in NATIVE_SIZE_FAMILIES:
        vision = get("vision_config") or config  # a full image-text checkpoint: its vision tower
        side = vision.get("image_size") if isinstance(vision, dict) else getattr(vision, "image_size", None)
        side = side[0] if isinstance(side, (tuple, list)) else side
        return f"{family}@{side}" if side else family
    return family


def family_rows(family: str | None) -> dict[str, InputSize] | None:
    """The rows of a family: :data:`PAPER_SIZES`, or built from the side of a `"clip@224"` name."""
    if family in PAPER_SIZES:
        return PAPER_SIZES[family]
    name, _, side = (family or "").partition("@")
    if name in NATIVE_SIZE_FAMILIES and side.isdigit():
        return _family_rows(int(side), default_window_stride(int(side)))
    return None


def _own_size(spec, task: str, override: Size | None) -> InputSize:
    size = override if override is not None else spec.image_size
    if task == "classification":
        return InputSize(size)
    side = size if isinstance(size, int) else min(size)
    if task == "segmentation":
        return InputSize(size, side, default_window_stride(side), side)
    return InputSize(size, crop=size if not isinstance(size, int) else side)


def resolve_input_size(family: str | None, spec, override: Size | None = None) -> InputSize:
    """The input size, window, stride and crop of `spec` (a resolved `DatasetSpec`) for `family`.

    Args:
        family: a key of :data:`PAPER_SIZES` or a `"clip@224"`-style name (see :func:`encoder_family`), or None.
        spec: the dataset spec for its task.
        override: `--image_size`: replaces the table (int: square / short side and window side).
    """
    rows = family_rows(family)
    if override is not None or spec.source == "synthetic" or rows is None:
        return _own_size(spec, spec.task, override)
    row = rows.get(spec.name) or rows.get(spec.task)
    if row is None:  # e.g. a depth dataset the paper did not use: its own size
        return _own_size(spec, spec.task, None)
    return row if spec.task == "segmentation" else dataclasses.replace(row, window=None, stride=None)


def sizes_table(families: list[str] | None = None, datasets: list[str] | None = None) -> str:
    """A Markdown table of :data:`PAPER_SIZES` (and CLIP/SigLIP at 224) resolved for registered datasets."""
    from .data import DATASETS, get_dataset_spec

    families = families or [*PAPER_SIZES, *(f"{name}@224" for name in NATIVE_SIZE_FAMILIES)]
    names = datasets or [n for n, s in DATASETS.items() if s.source != "synthetic"]
    lines = ["| family | dataset | task | input size | window | stride | train crop |", "|---|---|---|---|---|---|---|"]
    for family in families:
        for name in names:
            for task in DATASETS[name].tasks:
                r = resolve_input_size(family, get_dataset_spec(name, task=task))
                size = f"{r.size[0]}×{r.size[1]}" if isinstance(r.size, tuple) else (f"{r.size}²" if task == "classification" else f"short side {r.size}")
                crop = "-" if r.crop is None else (f"{r.crop[0]}×{r.crop[1]}" if isinstance(r.crop, tuple) else f"{r.crop}²")
                lines.append(f"| {family} | {name} | {task} | {size} | {r.window or '-'} | {r.stride or '-'} | {crop} |")
    return "\n".join(lines) + "\n"

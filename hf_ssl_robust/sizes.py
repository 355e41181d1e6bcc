"""Input sizes, sliding windows and strides of the paper, per encoder family and dataset: one table.

The paper (Kowalczuk et al., https://arxiv.org/abs/2407.12588, and its code, reference-notes §1,
§5) evaluates DINO v1 at 224 px and DINOv2 at 518 px:

* classification: images resized to a square of the family's side (CIFAR 32² and STL 96² are
  upsampled to 224² / 518²);
* segmentation: short side resized to the family's side, sliding windows of that side with stride
  100 (224) or 341 (518); Cityscapes (1024×2048) therefore becomes 224×448 / 518×1036;
* depth (NYU-Depth v2): 480×640 for every family, centre-padded to the patch size inside the head.

A family is a string (`"dino"`, `"dinov2"`, `"dinov2-reg"`); families added later register their
own rows in :data:`PAPER_SIZES` (and their `model_type` in :data:`FAMILY_OF_MODEL_TYPE`).
Lookup order: `(family, dataset)`, then `(family, task)`; ShapesWorld and families with no row
use the dataset's own size.

    >>> resolve_input_size("dinov2", get_dataset_spec("cityscapes"))
    InputSize(size=(518, 1036), window=518, stride=341, crop=518)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .heads.configuration import default_window_stride

__all__ = ["FAMILY_OF_MODEL_TYPE", "InputSize", "PAPER_SIZES", "encoder_family", "resolve_input_size", "sizes_table"]

Size = int | tuple[int, int]

# transformers `model_type` -> family name of the table.
FAMILY_OF_MODEL_TYPE: dict[str, str] = {"vit": "dino", "dinov2": "dinov2", "dinov2_with_registers": "dinov2-reg"}


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
}


def encoder_family(model_type: str | None) -> str | None:
    """The table's family name for a `transformers` model type (None when it has no row)."""
    return FAMILY_OF_MODEL_TYPE.get(model_type or "")


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
        family: a key of :data:`PAPER_SIZES` (see :func:`encoder_family`), or None.
        spec: the dataset spec for its task.
        override: `--image_size`: replaces the table (int: square / short side and window side).
    """
    if override is not None or spec.source == "synthetic" or family not in PAPER_SIZES:
        return _own_size(spec, spec.task, override)
    rows = PAPER_SIZES[family]
    row = rows.get(spec.name) or rows.get(spec.task)
    if row is None:  # e.g. a depth dataset the paper did not use: its own size
        return _own_size(spec, spec.task, None)
    return row if spec.task == "segmentation" else dataclasses.replace(row, window=None, stride=None)


def sizes_table(families: list[str] | None = None, datasets: list[str] | None = None) -> str:
    """A Markdown table of :data:`PAPER_SIZES` resolved for registered datasets (for README / info)."""
    from .data import DATASETS, get_dataset_spec

    families = families or list(PAPER_SIZES)
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

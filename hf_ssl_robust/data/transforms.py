"""Paired transforms: the same geometry on an image, its mask and its depth map.

A sample is a dict ``{"pixel_values": [3, H, W] float in [0, 1], "mask": [H, W] int64 (optional),
"depth": [H, W] float32 metres, 0 = invalid (optional)}``; other keys (``labels``) pass through.

* image: bilinear, antialiased when downscaling; padding with ``fill`` (0 = black);
* mask: nearest, so values are never interpolated; padding with ``ignore_index``;
* depth: nearest, so a valid depth is never mixed with a 0 (invalid) neighbour; padding with 0.

Random transforms draw from the ``generator`` passed to ``__call__`` (``UnifiedDataset`` passes one
seeded per sample and epoch, which is reproducible whatever the number of workers), else from
their own generator seeded by ``seed``, else from torch's global RNG.

Example:
    >>> t = Compose([Resize(64), RandomCrop(64), RandomHorizontalFlip()])
    >>> out = t({"pixel_values": img, "mask": mask}, generator=torch.Generator().manual_seed(0))
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "Compose",
    "Resize",
    "RandomResizedCrop",
    "RandomCrop",
    "CenterCrop",
    "RandomHorizontalFlip",
    "RandomVerticalFlip",
    "PadToMultiple",
    "train_transform",
    "eval_transform",
]

Size = int | tuple[int, int]


def _pair(size: Size) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def _hw(sample: dict) -> tuple[int, int]:
    return tuple(sample["pixel_values"].shape[-2:])


def _rand(generator: torch.Generator | None) -> float:
    return float(torch.rand((), generator=generator))


def _randint(high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in ``[0, high]``."""
    return int(torch.randint(0, high + 1, (), generator=generator))


class _Random:
    """Base for random transforms: picks the generator to draw from."""

    def __init__(self, seed: int | None = None):
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def _gen(self, generator: torch.Generator | None) -> torch.Generator | None:
        return generator if generator is not None else self.generator


# --- geometry applied to every key -----------------------------------------------------------
def resize_sample(sample: dict, size: tuple[int, int]) -> dict:
    """Resize to exactly ``size=(h, w)``: bilinear image, nearest mask and depth."""
    h, w = _hw(sample)
    if (h, w) == tuple(size):
        return dict(sample)
    out = dict(sample)
    img = sample["pixel_values"]
    downscale = size[0] < h or size[1] < w
    img = F.interpolate(img[None].float(), size=size, mode="bilinear", align_corners=False, antialias=downscale)[0]
    out["pixel_values"] = img.clamp_(0.0, 1.0)
    if "mask" in sample:
        # nearest-exact on exact small integers stored as float64: values are copied, never mixed
        m = sample["mask"][None, None].to(torch.float64)
        out["mask"] = F.interpolate(m, size=size, mode="nearest-exact")[0, 0].to(sample["mask"].dtype)
    if "depth" in sample:
        d = sample["depth"][None, None]
        out["depth"] = F.interpolate(d.float(), size=size, mode="nearest-exact")[0, 0].to(sample["depth"].dtype)
    return out


def crop_sample(sample: dict, top: int, left: int, height: int, width: int) -> dict:
    """Crop the window ``[top:top+height, left:left+width]`` (must lie inside the image)."""
    out = dict(sample)
    out["pixel_values"] = sample["pixel_values"][..., top : top + height, left : left + width]
    for key in ("mask", "depth"):
        if key in sample:
            out[key] = sample[key][..., top : top + height, left : left + width]
    return out


def pad_sample(sample: dict, top: int, bottom: int, left: int, right: int, *, fill: float = 0.0, ignore_index: int = 255) -> dict:
    """Pad: image with ``fill``, mask with ``ignore_index``, depth with 0 (invalid)."""
    if top == bottom == left == right == 0:
        return dict(sample)
    pad = (left, right, top, bottom)
    out = dict(sample)
    out["pixel_values"] = F.pad(sample["pixel_values"], pad, value=fill)
    if "mask" in sample:
        out["mask"] = F.pad(sample["mask"], pad, value=ignore_index)
    if "depth" in sample:
        out["depth"] = F.pad(sample["depth"], pad, value=0.0)
    return out


def flip_sample(sample: dict, dim: int) -> dict:
    """Flip along ``dim`` (-1: horizontal, -2: vertical) for every spatial key."""
    out = dict(sample)
    for key in ("pixel_values", "mask", "depth"):
        if key in sample:
            out[key] = sample[key].flip(dim)
    return out


def _pad_to_at_least(sample: dict, size: tuple[int, int], fill: float, ignore_index: int) -> dict:
    """Centre-pad so the image is at least ``size``."""
    h, w = _hw(sample)
    ph, pw = max(size[0] - h, 0), max(size[1] - w, 0)
    return pad_sample(sample, ph // 2, ph - ph // 2, pw // 2, pw - pw // 2, fill=fill, ignore_index=ignore_index)


# --- transforms --------------------------------------------------------------------------------
class Compose:
    """Apply transforms in order, passing the same generator to each."""

    def __init__(self, transforms: Sequence):
        self.transforms = list(transforms)

    def __call__(self, sample: dict, generator: torch.Generator | None = None) -> dict:
        for t in self.transforms:
            sample = t(sample, generator=generator)
        return sample

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class Resize:
    """Resize: ``size=(h, w)`` exactly; ``size=int`` scales the short side to it, keeping aspect."""

    def __init__(self, size: Size):
        self.size = size

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        if isinstance(self.size, int):
            scale = self.size / min(h, w)
            return max(1, round(h * scale)), max(1, round(w * scale))
        return _pair(self.size)

    def __call__(self, sample: dict, generator: torch.Generator | None = None) -> dict:
        return resize_sample(sample, self.output_size(*_hw(sample)))

    def __repr__(self) -> str:
        return f"Resize({self.size!r})"


class CenterCrop:
    """Crop the centre ``size``; a smaller image is centre-padded first."""

    def __init__(self, size: Size, *, fill: float = 0.0, ignore_index: int = 255):
        self.size, self.fill, self.ignore_index = _pair(size), fill, ignore_index

    def __call__(self, sample: dict, generator: torch.Generator | None = None) -> dict:
        sample = _pad_to_at_least(sample, self.size, self.fill, self.ignore_index)
        h, w = _hw(sample)
        th, tw = self.size
        return crop_sample(sample, (h - th) // 2, (w - tw) // 2, th, tw)

    def __repr__(self) -> str:
        return f"CenterCrop({self.size!r})"


class RandomCrop(_Random):
    """Random ``size`` window after optional ``padding`` on every side; pads smaller images."""

    def __init__(self, size: Size, *, padding: int = 0, fill: float = 0.0, ignore_index: int = 255, seed: int | None = None):
        super().__init__(seed)
        self.size, self.padding, self.fill, self.ignore_index = _pair(size), padding, fill, ignore_index

    def __call__(self, sample: dict, generator: torch.Generator | None = None) -> dict:
        gen = self._gen(generator)
        p = self.padding
        sample = pad_sample(sample, p, p, p, p, fill=self.fill, ignore_index=self.ignore_index)
        sample = _pad_to_at_least(sample, self.size, self.fill, self.ignore_index)
        h, w = _hw(sample)
        th, tw = self.size
        top, left = _randint(h - th, gen), _randint(w - tw, gen)
        return crop_sample(sample, top, left, th, tw)

    def __repr__(self) -> str:
        return f"RandomCrop({self.size!r}, padding={self.padding})"


class RandomResizedCrop(_Random):
    """Crop a random area fraction in ``scale`` with aspect ratio in ``ratio``, resize to ``size``.

    The Inception-style crop (as in torchvision), 10 tries, then a centre crop of the full image.
    """

    def __init__(self, size: Size, *, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), seed: int | None = None):
        super().__init__(seed)
        if not (0 < scale[0] <= scale[1] <= 1) or not (0 < ratio[0] <= ratio[1]):
            raise ValueError(f"RandomResizedCrop: need 0 < scale[0] <= scale[1] <= 1 and 0 < ratio[0] <= ratio[1]; got {scale}, {ratio}")
        self.size, self.scale, self.ratio = _pair(size), scale, ratio

    def window(self, h: int, w: int, gen: torch.Generator | None) -> tuple[int, int, int, int]:
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            area = h * w * (self.scale[0] + (self.scale[1] - self.scale[0]) * _rand(gen))
            aspect = math.exp(log_lo + (log_hi - log_lo) * _rand(gen))
            cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if 0 < cw <= w and 0 < ch <= h:
                return _randint(h - ch, gen), _randint(w - cw, gen), ch, cw
        side = min(h, w)
        return (h - side) // 2, (w - side) // 2, side, side

    def __call__(self, sample: dict, generator: torch.Generator | None = None) -> dict:
        top, left, ch, cw = self.window(*_hw(sample), self._gen(generator))
        return resize_sample(crop_sample(sample, top, left, ch, cw), self.size)

    def __repr__(self) -> str:
        return f"RandomResizedCrop({self.size!r}, scale={self.scale}, ratio={self.ratio})"


class RandomHorizontalFlip(_Random):
    """Flip left-right with probability ``p``."""

    dim = -1

    def __init__(self, p: float = 0.5, *, seed: int | None = None):
        super().__init__(seed)
        self.p = p

    def __call__(self, sample: dict, generator: torch.Generator | None = None) -> dict:
        # Always draw, so the random stream does not depend on p or on earlier outcomes.
        return flip_sample(sample, self.dim) if _rand(self._gen(generator)) < self.p else dict(sample)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


class RandomVerticalFlip(RandomHorizontalFlip):
    """Flip top-bottom with probability ``p``."""

    dim = -2


class PadToMultiple:
    """Centre-pad so height and width are multiples of ``multiple`` (e.g. the patch size)."""

    def __init__(self, multiple: int, *, fill: float = 0.0, ignore_index: int = 255):
        if multiple < 1:
            raise ValueError(f"PadToMultiple: multiple must be >= 1, got {multiple}")
        self.multiple, self.fill, self.ignore_index = multiple, fill, ignore_index

    def __call__(self, sample: dict, generator: torch.Generator | None = None) -> dict:
        h, w = _hw(sample)
        m = self.multiple
        return _pad_to_at_least(sample, (math.ceil(h / m) * m, math.ceil(w / m) * m), self.fill, self.ignore_index)

    def __repr__(self) -> str:
        return f"PadToMultiple({self.multiple})"


def _next(seed: int | None) -> int | None:
    return None if seed is None else seed + 1


def _check_task(task: str) -> None:
    if task not in ("classification", "segmentation", "depth"):
        raise ValueError(f"Unknown task {task!r}; tasks are ['classification', 'segmentation', 'depth']")


def train_transform(task: str, image_size: Size, *, ignore_index: int = 255, seed: int | None = None) -> Compose:
    """Default training augmentation per task.

    classification: resize to ``image_size`` (square if int) + horizontal flip;
    segmentation / depth: short-side resize to ``min(image_size)``, random ``image_size`` crop
    (padded with ignore / 0 where the image is smaller) + horizontal flip.
    """
    _check_task(task)
    size = _pair(image_size)
    if task == "classification":
        return Compose([Resize(size), RandomHorizontalFlip(seed=seed)])
    crop = RandomCrop(size, ignore_index=ignore_index, seed=seed)
    return Compose([Resize(min(size)), crop, RandomHorizontalFlip(seed=_next(seed))])


def eval_transform(task: str, image_size: Size, *, ignore_index: int = 255) -> Compose:
    """Default evaluation transform per task, with no randomness.

    classification: resize to ``image_size`` (square if int); segmentation / depth: ``int`` resizes
    the short side (aspect kept; ``collate`` pads mixed sizes), ``(h, w)`` resizes exactly.
    """
    _check_task(task)
    if task == "classification":
        return Compose([Resize(_pair(image_size))])
    return Compose([Resize(image_size)])

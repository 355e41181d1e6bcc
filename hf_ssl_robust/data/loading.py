"""Load registered datasets and turn raw examples into the unified batch form.

Unified batch: ``pixel_values`` float32 ``[B, 3, H, W]`` in ``[0, 1]``; per task ``labels`` int64
``[B]``, ``mask`` int64 ``[B, H, W]`` (``spec.ignore_index`` = ignored) or ``depth`` float32
``[B, H, W]`` in metres (0 = invalid).

Sources: ShapesWorld (generated, no files), the Hub (``datasets.load_dataset``; parquet copies),
or a local folder (``save_to_disk`` output, parquet files, or an imagefolder).

Example:
    >>> loader = make_dataloader("shapes", "test", task="segmentation", batch_size=16, num_samples=64)
    >>> batch = next(iter(loader))
    >>> batch["pixel_values"].shape, batch["mask"].shape
    (torch.Size([16, 3, 64, 64]), torch.Size([16, 64, 64]))
"""

from __future__ import annotations

import functools
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .registry import DatasetSpec, datasets_offline, get_dataset_spec
from .transforms import eval_transform

__all__ = [
    "DatasetUnavailableError",
    "DEFAULT_SHAPES_SAMPLES",
    "load_split",
    "subset_indices",
    "check_columns",
    "to_unified",
    "UnifiedDataset",
    "ShapesTensorDataset",
    "collate",
    "make_dataset",
    "make_dataloader",
]


DEFAULT_SHAPES_SAMPLES: dict[str, int] = {"train": 2000, "validation": 500, "test": 256}  # test: the embedded default runs in < 10 min
_NAN_DEPTH = ("error", "invalid")


class DatasetUnavailableError(OSError):
    """A dataset that is neither in a local folder nor downloadable (offline, licence, wrong id)."""


def _resolve(name_or_spec: str | DatasetSpec, task: str | None, overrides: dict) -> DatasetSpec:
    return get_dataset_spec(name_or_spec, task=task, **overrides)


# --- loading -----------------------------------------------------------------------------------
def load_split(
    name_or_spec: str | DatasetSpec,
    split: str,
    *,
    task: str | None = None,
    data_dir: str | os.PathLike | None = None,
    num_samples: int | None = None,
    seed: int = 0,
    image_size: int | tuple[int, int] | None = None,
    **overrides: Any,
):
    """Load one split as a ``datasets.Dataset`` with the spec's columns checked.

    Args:
        name_or_spec: registry name or a :class:`DatasetSpec`.
        split: split name; ``"train"`` / ``"eval"`` resolve to the spec's train / eval split.
        task: task (needed for multi-task datasets such as ``shapes`` unless the default is wanted).
        data_dir: local folder or parquet file; overrides the spec's source.
        num_samples: keep a seeded subset of ``num_samples`` rows of the FULL split: the rows
            :func:`subset_indices` picks (a permutation seeded by ``seed``, first ``num_samples``
            entries, kept in split order), so an ordered split (classes, cities, scenes in a row)
            still gives a mixed sample, the same one on every process and for every batch size.
            The whole split when ``num_samples >= len(split)``. ShapesWorld: how many scenes to
            render from its ``seed`` stream (already an i.i.d. sample; default
            :data:`DEFAULT_SHAPES_SAMPLES`).
        seed: seeds the subset (files / Hub) or the ShapesWorld stream.
        image_size: ShapesWorld render size (default ``spec.image_size``); ignored otherwise.
        **overrides: :class:`DatasetSpec` fields (``hub_id``, ``image_column``, ``target_column``, ...).

    Raises:
        DatasetUnavailableError: the data cannot be found locally nor downloaded.
        ValueError: missing columns or split.
    """
    if num_samples is not None and (isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 0):
        raise ValueError(f"num_samples must be an int >= 0 (or None for the whole split), got {num_samples!r}.")
    spec = _resolve(name_or_spec, task, {**overrides, "data_dir": None if data_dir is None else str(data_dir)})
    split = spec.split_name(split)
    if spec.data_dir:
        ds = _load_local(spec, split)
    elif spec.source == "synthetic":
        from .synthetic import make_shapes_dataset

        n = num_samples if num_samples is not None else DEFAULT_SHAPES_SAMPLES.get(split, 500)
        return make_shapes_dataset(n, image_size=image_size or spec.image_size, seed=seed, split=split)
    elif spec.source == "local" or spec.local_only:
        raise DatasetUnavailableError(
            f"Dataset {spec.name!r} is only available from a local folder ({spec.description}). "
            f"Pass data_dir=... (CLI: --data_dir) pointing at a save_to_disk folder, parquet files or an imagefolder "
            f"with columns {spec.image_column!r} and {spec.target_column!r}."
        )
    else:
        ds = _load_hub(spec, split)
    if num_samples is not None and num_samples < len(ds):
        ds = ds.select(subset_indices(len(ds), num_samples, seed))
    check_columns(ds, spec)
    return ds


def subset_indices(total: int, num_samples: int, seed: int = 0) -> list[int]:
    """Rows of a seeded subset of a split of ``total`` rows: the first ``num_samples`` entries of
    ``torch.randperm(total)`` under a generator seeded by ``seed``, sorted (split order kept).

    Depends only on ``(total, num_samples, seed)``: every process and every batch size gets the
    same rows, and a smaller subset is a subset of a larger one with the same seed.
    """
    if num_samples >= total:
        return list(range(total))
    perm = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    return sorted(perm[:num_samples].tolist())


def _load_hub(spec: DatasetSpec, split: str):
    import datasets

    where = f"Hub id {spec.hub_id!r}" + (f", config {spec.hub_config!r}" if spec.hub_config else "")
    where += (f", revision {spec.revision!r}" if spec.revision else "") + f", split {split!r}"
    try:
        return datasets.load_dataset(spec.hub_id, spec.hub_config, split=split, revision=spec.revision)
    except OSError as err:  # ConnectionError (offline), FileNotFoundError / DatasetNotFoundError (bad id)
        hint = (
            "HF_HUB_OFFLINE is set, so nothing is downloaded: unset it on a machine with network access, or "
            if datasets_offline()
            else "Check the id and your network, or "
        )
        raise DatasetUnavailableError(
            f"Could not load dataset {spec.name!r} ({where}) and it is not in the local cache: {err}. "
            f"{hint}pass a local copy with data_dir=... (CLI: --data_dir): a save_to_disk folder, parquet files or an "
            f"imagefolder; another Hub copy can be named with hub_id=..."
        ) from err


def _load_local(spec: DatasetSpec, split: str):
    import datasets

    path = Path(spec.data_dir).expanduser()
    if not path.exists():
        raise DatasetUnavailableError(f"Dataset {spec.name!r}: data_dir {str(path)!r} does not exist")
    if path.is_file():
        if path.suffix != ".parquet":
            raise ValueError(f"Dataset {spec.name!r}: data_dir {str(path)!r} is a file but not .parquet")
        return datasets.load_dataset("parquet", data_files=str(path), split="train")
    if (path / "leftImg8bit").is_dir() and (path / "gtFine").is_dir():
        return _load_cityscapes_layout(spec, path, split)
    if (path / split / "state.json").exists():
        return datasets.load_from_disk(str(path / split))
    if (path / "dataset_dict.json").exists():
        return _pick_split(datasets.load_from_disk(str(path)), split, path)
    if (path / "state.json").exists():
        return datasets.load_from_disk(str(path))
    builder = "parquet" if any(path.rglob("*.parquet")) else "imagefolder"
    return _pick_split(datasets.load_dataset(builder, data_dir=str(path)), split, path)


def _load_cityscapes_layout(spec: DatasetSpec, path: Path, split: str):
    """The folder as downloaded from cityscapes-dataset.com: ``leftImg8bit/<split>/<city>/*_leftImg8bit.png``
    paired with ``gtFine/<split>/<city>/*_gtFine_labelIds.png`` (columns: the spec's image and target)."""
    import datasets

    splits = sorted(p.name for p in (path / "leftImg8bit").iterdir() if p.is_dir())
    if split not in splits:
        raise ValueError(f"Split {split!r} not found in {str(path / 'leftImg8bit')!r}; available: {splits} (pass train_split= / eval_split=)")
    images = sorted((path / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))
    masks = [path / "gtFine" / split / f.parent.name / f.name.replace("_leftImg8bit.png", "_gtFine_labelIds.png") for f in images]
    missing = [str(m) for m in masks if not m.is_file()]
    if missing or not images:
        raise ValueError(f"Cityscapes folder {str(path)!r}, split {split!r}: {len(images)} images, missing label files {missing[:3]}")
    features = datasets.Features({spec.image_column: datasets.Image(), spec.target_column: datasets.Image()})
    return datasets.Dataset.from_dict({spec.image_column: [str(f) for f in images], spec.target_column: [str(m) for m in masks]}, features=features)


def _pick_split(dataset_dict, split: str, path: Path):
    if split not in dataset_dict:
        raise ValueError(
            f"Split {split!r} not found in {str(path)!r}; available: {sorted(dataset_dict)} (pass train_split= / eval_split=)"
        )
    return dataset_dict[split]


def check_columns(dataset, spec: DatasetSpec) -> None:
    """Raise ``ValueError`` naming the missing and the available columns, and the override to use."""
    missing = [c for c in (spec.image_column, spec.target_column) if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"Dataset {spec.name!r} ({spec.task}) is missing column(s) {missing}; available: {dataset.column_names}. "
            f"Override with image_column=... / target_column=... (get_dataset_spec, load_split or make_dataloader)."
        )


# --- raw example -> unified sample ---------------------------------------------------------------
def _open(value: Any, index: int, column: str) -> Image.Image | np.ndarray:
    """PIL image or array from whatever a dataset stores (PIL, bytes, {bytes, path}, path, array)."""
    if value is None:
        raise ValueError(f"Sample {index}: column {column!r} is empty (missing image)")
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
        if value is None:
            raise ValueError(f"Sample {index}: column {column!r} has neither bytes nor a path (missing image)")
    try:
        if isinstance(value, (bytes, bytearray)):
            value = Image.open(io.BytesIO(value))
        elif isinstance(value, (str, os.PathLike)):
            value = Image.open(value)
        if isinstance(value, Image.Image):
            value.load()  # decode now: truncated / corrupt files fail here
            return value
    except (OSError, ValueError, SyntaxError) as err:
        raise ValueError(f"Sample {index}: column {column!r} holds an unreadable image ({type(err).__name__}: {err})") from err
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _hwc(arr: np.ndarray, index: int, column: str) -> np.ndarray:
    """[H, W], [H, W, C] or [C, H, W] (C in 1, 3, 4) -> [H, W, 3]."""
    if arr.ndim == 2:
        arr = arr[..., None]
    elif arr.ndim == 3 and arr.shape[-1] not in (1, 3, 4) and arr.shape[0] in (1, 3, 4):
        arr = arr.transpose(1, 2, 0)
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        raise ValueError(f"Sample {index}: column {column!r} has shape {arr.shape}, not an image ([H,W], [H,W,C] or [C,H,W])")
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return arr[..., :3]


def image_to_tensor(value: Any, index: int = 0, column: str = "image") -> torch.Tensor:
    """Any stored image -> RGB float32 ``[3, H, W]`` in ``[0, 1]`` (16-bit scaled by 65535)."""
    img = _open(value, index, column)
    if isinstance(img, Image.Image):
        if img.mode.startswith("I;16"):
            arr = np.asarray(img, dtype=np.float32) / 65535.0
        elif img.mode in ("I", "F"):
            arr = np.asarray(img, dtype=np.float32)
            peak = float(arr.max()) if arr.size else 0.0
            arr = arr if (img.mode == "F" and peak <= 1.0) else arr / (255.0 if peak <= 255 else 65535.0)
        else:
            arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    else:
        arr = img
        if arr.dtype == np.uint8 or arr.dtype == np.bool_:
            arr = arr.astype(np.float32) / (255.0 if arr.dtype == np.uint8 else 1.0)
        elif np.issubdtype(arr.dtype, np.integer):
            peak = int(arr.max()) if arr.size else 0
            arr = arr.astype(np.float32) / (255.0 if peak <= 255 else 65535.0)
        else:
            arr = arr.astype(np.float32)
            if arr.size and float(np.nanmax(arr)) > 1.0 + 1e-3:  # floats stored as 0..255
                arr = arr / 255.0
        if not np.isfinite(arr).all():
            raise ValueError(f"Sample {index}: column {column!r} image contains NaN or inf values")
    arr = _hwc(np.asarray(arr, dtype=np.float32), index, column)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).clamp_(0.0, 1.0)


def _plane(value: Any, index: int, column: str, kind: str) -> np.ndarray:
    """A stored mask / depth map -> 2-D array."""
    arr = _open(value, index, column)
    if isinstance(arr, Image.Image):
        arr = np.asarray(arr)  # P mode: palette indices, not colours
    arr = np.asarray(arr)
    if arr.ndim == 3 and 1 in (arr.shape[0], arr.shape[-1]):
        arr = arr.reshape(arr.shape[1:] if arr.shape[0] == 1 else arr.shape[:-1])
    elif arr.ndim == 3 and arr.shape[-1] in (3, 4) and kind == "mask":
        if not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])):
            raise ValueError(
                f"Sample {index}: mask column {column!r} is colour-coded (RGB with differing channels); convert it to class ids first"
            )
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise ValueError(f"Sample {index}: {kind} column {column!r} has shape {arr.shape}; expected [H, W]")
    return arr


def mask_to_tensor(value: Any, spec: DatasetSpec, index: int = 0) -> torch.Tensor:
    """Stored mask -> int64 ``[H, W]`` with the spec's mapping; negatives become ``ignore_index``."""
    arr = _plane(value, index, spec.target_column, "mask")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or not np.array_equal(arr, np.round(arr)):
            raise ValueError(f"Sample {index}: mask column {spec.target_column!r} holds non-integer values")
    mask = torch.from_numpy(arr.astype(np.int64))
    ignore = spec.ignore_index
    invalid = mask < 0
    if spec.label_map is not None:
        lut = torch.full((max(int(mask.max()) + 1, max(spec.label_map) + 1, 1),), ignore, dtype=torch.int64)
        for raw, new in spec.label_map.items():
            lut[raw] = new
        mask = lut[mask.clamp(min=0)]
    if spec.reduce_labels:
        keep = mask != ignore
        mask = torch.where(mask == 0, torch.full_like(mask, ignore), torch.where(keep, mask - 1, mask))
    mask[invalid] = ignore
    bad = (mask != ignore) & ((mask < 0) | (mask >= spec.num_classes))
    if bad.any():
        raise ValueError(
            f"Sample {index}: mask values {sorted(mask[bad].unique().tolist())[:10]} are outside 0..{spec.num_classes - 1} "
            f"and not ignore_index={ignore}; check num_classes, reduce_labels or label_map for {spec.name!r}"
        )
    return mask


def depth_to_tensor(value: Any, spec: DatasetSpec, index: int = 0, *, nan_depth: str = "error") -> torch.Tensor:
    """Stored depth -> float32 metres ``[H, W]``; ``<= 0``, ``> max_depth`` and inf become 0 (invalid)."""
    if nan_depth not in _NAN_DEPTH:
        raise ValueError(f"nan_depth must be one of {list(_NAN_DEPTH)}, got {nan_depth!r}")
    arr = _plane(value, index, spec.target_column, "depth")
    depth = torch.from_numpy(arr.astype(np.float32)) * spec.depth_scale
    nan = torch.isnan(depth)
    if nan.any():
        if nan_depth == "error":
            raise ValueError(
                f"Sample {index}: depth column {spec.target_column!r} has {int(nan.sum())} NaN values; "
                f"pass nan_depth='invalid' to treat them as invalid (0)"
            )
        depth[nan] = 0.0
    invalid = ~torch.isfinite(depth) | (depth <= 0)
    if spec.max_depth is not None:
        invalid |= depth > spec.max_depth
    return depth.masked_fill_(invalid, 0.0)


def to_unified(example: dict, spec: DatasetSpec, index: int = 0, *, nan_depth: str = "error") -> dict[str, torch.Tensor]:
    """One raw example -> ``{"pixel_values": [3,H,W]}`` plus ``labels`` (int64 scalar), ``mask`` or ``depth``."""
    pixels = image_to_tensor(example.get(spec.image_column), index, spec.image_column)
    target = example.get(spec.target_column)
    if spec.task == "classification":
        try:
            label = int(target)
        except (TypeError, ValueError) as err:
            raise ValueError(f"Sample {index}: label column {spec.target_column!r} holds {target!r}, not a class id") from err
        if not 0 <= label < spec.num_classes:
            raise ValueError(f"Sample {index}: label {label} outside 0..{spec.num_classes - 1} for {spec.name!r}")
        return {"pixel_values": pixels, "labels": torch.tensor(label, dtype=torch.int64)}
    if spec.task == "segmentation":
        out = {"pixel_values": pixels, "mask": mask_to_tensor(target, spec, index)}
    else:
        out = {"pixel_values": pixels, "depth": depth_to_tensor(target, spec, index, nan_depth=nan_depth)}
    key = spec.target_key
    if tuple(out[key].shape) != tuple(pixels.shape[-2:]):
        raise ValueError(f"Sample {index}: {key} shape {tuple(out[key].shape)} differs from image size {tuple(pixels.shape[-2:])}")
    return out


# --- torch datasets --------------------------------------------------------------------------------
def _sample_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * 0x9E3779B1 + epoch * 0x85EBCA77 + index * 0xC2B2AE3D) % (2**63)


class UnifiedDataset(torch.utils.data.Dataset):
    """A ``datasets.Dataset`` seen through a spec: items are unified samples, transformed.

    Random transforms get a generator seeded by ``(seed, epoch, index)``: reproducible whatever the
    number of workers; call :meth:`set_epoch` for fresh augmentations each epoch.
    """

    def __init__(self, dataset, spec: DatasetSpec, transform=None, *, seed: int = 0, nan_depth: str | None = None):
        import datasets

        check_columns(dataset, spec)
        # Decode images ourselves, so a corrupt file is reported with its index and column.
        for column in (spec.image_column, spec.target_column):
            feature = dataset.features.get(column)
            if isinstance(feature, datasets.Image) and feature.decode:
                dataset = dataset.cast_column(column, datasets.Image(decode=False))
        self.dataset, self.spec, self.transform = dataset, spec, transform
        self.seed, self.epoch, self.nan_depth = seed, 0, nan_depth or spec.nan_depth

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = to_unified(self.dataset[int(index)], self.spec, int(index), nan_depth=self.nan_depth)
        if self.transform is not None:
            gen = torch.Generator().manual_seed(_sample_seed(self.seed, self.epoch, int(index)))
            sample = self.transform(sample, generator=gen)
        return sample


class ShapesTensorDataset(UnifiedDataset):
    """ShapesWorld straight from ``render_scenes`` tensors; same items as ``UnifiedDataset`` over
    ``make_shapes_dataset`` (pixels quantised to 8 bits exactly as stored there), without PIL."""

    def __init__(self, spec: DatasetSpec, split: str, num_samples: int, *, image_size=None, seed=0, transform=None):
        from . import synthetic

        split = spec.split_name(split)
        if split not in synthetic._SPLITS:
            raise ValueError(f"Unknown ShapesWorld split {split!r}; available: {sorted(synthetic._SPLITS)}")
        stream = synthetic.split_seed(split, seed)  # the stream make_shapes_dataset uses
        scenes = synthetic.render_scenes(num_samples, image_size or spec.image_size, seed=stream, start=0)
        self.pixel_values = (scenes["pixel_values"] * 255).round().to(torch.uint8)
        self.target = {"classification": scenes["labels"], "segmentation": scenes["mask"], "depth": scenes["depth"]}[spec.task]
        self.spec, self.transform, self.seed, self.epoch = spec, transform, seed, 0

    def __len__(self) -> int:
        return len(self.pixel_values)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        index = int(index)
        sample = {"pixel_values": self.pixel_values[index].float() / 255.0}
        if self.spec.task == "depth":
            # Same as the mask / invalid rules of depth_to_tensor (a no-op for valid renders).
            sample["depth"] = depth_to_tensor(self.target[index].numpy(), self.spec, index)
        else:
            sample[self.spec.target_key] = self.target[index].to(torch.int64)
        if self.transform is not None:
            sample = self.transform(sample, generator=torch.Generator().manual_seed(_sample_seed(self.seed, self.epoch, index)))
        return sample


def collate(samples: list[dict[str, torch.Tensor]], ignore_index: int = 255) -> dict[str, torch.Tensor]:
    """Stack samples into the unified batch.

    Mixed sizes are stored padded bottom-right to the largest (image with 0, mask with
    ``ignore_index``, depth with 0 = invalid) only so that they fit in one tensor: the batch then
    carries ``image_size`` (``[B, 2]`` true heights and widths), and :func:`hf_ssl_robust.evaluation.evaluate`
    crops every image back to its own size before any model or attack sees it (DESIGN §5).
    """
    if not samples:
        raise ValueError("collate: empty list of samples")
    batch: dict[str, torch.Tensor] = {}
    sizes = [tuple(s["pixel_values"].shape[-2:]) for s in samples]
    h, w = max(s[0] for s in sizes), max(s[1] for s in sizes)
    fills = {"pixel_values": 0.0, "mask": ignore_index, "depth": 0.0}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if key in fills:
            values = [torch.nn.functional.pad(v, (0, w - v.shape[-1], 0, h - v.shape[-2]), value=fills[key]) for v in values]
        batch[key] = torch.stack(values)
    if len(set(sizes)) > 1:
        batch["image_size"] = torch.tensor(sizes, dtype=torch.int64)
    return batch


# --- the one construction function tests and scripts swap -------------------------------------
def make_dataset(
    name_or_spec: str | DatasetSpec,
    split: str,
    *,
    task: str | None = None,
    transform=None,
    num_samples: int | None = None,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    image_size: int | tuple[int, int] | None = None,
    nan_depth: str | None = None,
    fast: bool = True,
    **overrides: Any,
) -> torch.utils.data.Dataset:
    """A torch dataset of unified samples. ``transform=None``: :func:`eval_transform` at
    ``image_size`` (default ``spec.image_size``) for files; none for ShapesWorld, rendered at that
    size. ``fast`` uses :class:`ShapesTensorDataset` for ShapesWorld.

    ``num_samples``: files / Hub: a seeded subset of the full split (:func:`subset_indices` with
    ``seed``, never the first rows); ShapesWorld: how many scenes to render from its ``seed`` stream.
    ``seed`` also seeds the random transforms per item."""
    spec = _resolve(name_or_spec, task, {**overrides, "data_dir": None if data_dir is None else str(data_dir)})
    size = image_size or spec.image_size
    if spec.source == "synthetic" and not spec.data_dir:
        split = spec.split_name(split)
        n = num_samples if num_samples is not None else DEFAULT_SHAPES_SAMPLES.get(split, 500)
        if fast:
            return ShapesTensorDataset(spec, split, n, image_size=size, seed=seed, transform=transform)
        ds = load_split(spec, split, num_samples=n, seed=seed, image_size=size)
        return UnifiedDataset(ds, spec, transform, seed=seed, nan_depth=nan_depth)
    if transform is None:
        transform = eval_transform(spec.task, size, ignore_index=spec.ignore_index)
    ds = load_split(spec, split, num_samples=num_samples, seed=seed)
    return UnifiedDataset(ds, spec, transform, seed=seed, nan_depth=nan_depth)


def make_dataloader(
    name_or_spec: str | DatasetSpec,
    split: str,
    *,
    task: str | None = None,
    batch_size: int,
    transform=None,
    shuffle: bool = False,
    num_samples: int | None = None,
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
    **kw: Any,
) -> torch.utils.data.DataLoader:
    """A ``DataLoader`` of unified batches; ``**kw`` goes to :func:`make_dataset` (``data_dir``,
    ``image_size``, ``nan_depth``, spec overrides). Shuffling is seeded by ``seed``."""
    dataset = make_dataset(name_or_spec, split, task=task, transform=transform, num_samples=num_samples, seed=seed, **kw)
    spec = dataset.spec
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        drop_last=drop_last,
        collate_fn=functools.partial(collate, ignore_index=spec.ignore_index),
        generator=torch.Generator().manual_seed(seed) if shuffle else None,
    )

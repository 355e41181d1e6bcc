"""Any dataset from the command line: a :class:`DatasetSpec` built at run time from column names.

    hf-ssl-robust benchmark --dataset_name me/my-scenes --image_column img --label_column lab --mask_column seg \\
        --num_labels 21 --train_split train --eval_split validation

``--dataset_name`` is a Hub dataset id (``datasets.load_dataset``; ``--dataset_config`` and
``--dataset_revision`` pin a config and a commit, branch or tag) or a local folder: a
``DatasetDict.save_to_disk`` output, one ``Dataset.save_to_disk`` folder per split, or a folder
``datasets`` can read (parquet files, an imagefolder). The tasks follow from the target columns
given: ``--label_column`` classification, ``--mask_column`` segmentation, ``--depth_column`` depth
(``--tasks`` still filters). Everything is checked when the config is built, before any head is
trained or any attack runs: the data loads, both splits exist, every column exists (the error lists
the columns there are, with a did-you-mean), and each column's type fits its task. The spec is then
registered under its display name (the Hub id, or the folder's basename), so the rest of the
benchmark treats it like a registered dataset; :func:`dataset_identity` (source, columns, splits,
revision and resolved commit, label settings) goes into head and cell keys, so two datasets shown
under one name never share a head.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .registry import DATASETS, DatasetSpec, get_dataset_spec, register_dataset

__all__ = ["DatasetArgs", "add_custom_dataset", "build_custom_spec", "dataset_identity", "dataset_commit"]

_COLUMN_FLAGS = {"classification": "label_column", "segmentation": "mask_column", "depth": "depth_column"}
_CUSTOM: dict[str, dict] = {}  # registered name -> identity (what makes its heads and cells)
_PREPARED: dict[tuple, tuple[DatasetSpec | None, list[str]]] = {}  # options -> (spec, problems): checked once per process


@dataclass
class DatasetArgs:
    """Options of a dataset that is not in the registry (`--dataset_name` and its columns)."""

    dataset_name: str | None = field(default=None, metadata={"help": "Any dataset beside the registry: a Hub dataset id (ORG/NAME) or a local folder (save_to_disk output, parquet files or an imagefolder). Its tasks follow from --label_column / --mask_column / --depth_column; it runs alone unless --datasets names others (the default shapes is replaced)."})
    dataset_config: str | None = field(default=None, metadata={"help": "--dataset_name: Hub config name (load_dataset's second argument)."})
    dataset_revision: str | None = field(default=None, metadata={"help": "--dataset_name: Hub commit SHA, branch or tag of the dataset (recorded with the resolved commit in run_info.json)."})
    image_column: str = field(default="image", metadata={"help": "--dataset_name: column holding the image (an Image feature, or arrays that decode to one)."})
    label_column: str | None = field(default=None, metadata={"help": "--dataset_name: integer class id column (ClassLabel or int) -> classification."})
    mask_column: str | None = field(default=None, metadata={"help": "--dataset_name: per-pixel class id column (integer image or 2-D int array) -> segmentation; needs --num_labels."})
    depth_column: str | None = field(default=None, metadata={"help": "--dataset_name: depth map column (float image or 2-D array, metres after --depth_scale) -> depth."})
    num_labels: int | None = field(default=None, metadata={"help": "--dataset_name: classes of the masks (required), and of a plain int label column (a ClassLabel's own count wins)."})
    ignore_index: int = field(default=255, metadata={"help": "--dataset_name: mask value ignored by losses, attacks and mIoU."})
    reduce_labels: bool = field(default=False, metadata={"help": "--dataset_name: masks: 0 ('other') -> ignore, k -> k-1 (ADE20k's convention)."})
    max_depth: float | None = field(default=None, metadata={"help": "--dataset_name: depths above it are invalid; also the top of the depth head's bins (default 10)."})
    depth_scale: float = field(default=1.0, metadata={"help": "--dataset_name: stored depth x depth_scale = metres (0.001 for millimetre PNGs)."})
    train_split: str = field(default="train", metadata={"help": "--dataset_name: split the heads train on (a validation share is carved from it)."})
    eval_split: str = field(default="test", metadata={"help": "--dataset_name: split the benchmark scores."})


def _key(cfg) -> tuple:
    return tuple((f.name, getattr(cfg, f.name)) for f in dataclasses.fields(DatasetArgs))


def add_custom_dataset(cfg) -> list[str]:
    """Check `cfg`'s `--dataset_name` options, register the spec and put its name in `cfg.datasets`.

    Returns one message per problem (empty: registered, or no `--dataset_name`). The data is loaded
    and checked once per process for the same options (a `dataclasses.replace` of the config is free).
    """
    if not cfg.dataset_name:
        given = [f"--{f}" for f in ("dataset_config", "dataset_revision", "label_column", "mask_column", "depth_column", "num_labels")
                 if getattr(cfg, f) is not None]
        return [f"{', '.join(given)} only apply with --dataset_name (a Hub dataset id or a local folder)"] if given else []
    key = _key(cfg)
    if key not in _PREPARED:
        _PREPARED[key] = build_custom_spec(cfg)
    spec, problems = _PREPARED[key]
    if spec is None:
        return problems
    if spec.name in DATASETS and spec.name not in _CUSTOM:
        return [f"--dataset_name {cfg.dataset_name!r} would be shown as {spec.name!r}, a registered dataset: use --datasets {spec.name} "
                f"--data_dir {spec.name}=PATH for a local copy of it, or rename the folder"]
    register_dataset(spec, overwrite=True)
    _CUSTOM[spec.name] = dataset_identity_of(spec, cfg)
    if spec.name not in cfg.datasets:
        cfg.datasets = [spec.name] if list(cfg.datasets) == ["shapes"] else [*cfg.datasets, spec.name]
    return []


def dataset_identity(name: str) -> dict | None:
    """What makes a `--dataset_name` dataset (source, columns, splits, revision, label settings); None for registered ones."""
    return _CUSTOM.get(name)


def dataset_identity_of(spec: DatasetSpec, cfg) -> dict:
    return dict(source=spec.data_dir or spec.hub_id, config=spec.hub_config, revision=spec.revision,
                commit=dataset_commit(spec.hub_id, spec.revision) if spec.hub_id else None,
                image_column=spec.image_column, columns={t: spec.variants[t]["target_column"] for t in spec.variants},
                train_split=spec.train_split, eval_split=spec.eval_split, num_rows=dict(spec.num_examples),
                num_labels=cfg.num_labels, ignore_index=cfg.ignore_index, reduce_labels=cfg.reduce_labels,
                max_depth=cfg.max_depth, depth_scale=cfg.depth_scale)


def dataset_commit(repo_id: str, revision: str | None) -> str | None:
    """The commit a Hub dataset revision (default `main`) points to, from the local Hub cache only; None if unknown."""
    rev = revision or "main"
    if len(rev) == 40 and all(c in "0123456789abcdef" for c in rev):
        return rev
    from huggingface_hub import constants

    ref = Path(constants.HF_HUB_CACHE) / f"datasets--{repo_id.replace('/', '--')}" / "refs" / rev
    try:
        return ref.read_text().strip() or None
    except OSError:
        return None


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


def build_custom_spec(cfg) -> tuple[DatasetSpec | None, list[str]]:
    """`(spec, [])`, or `(None, problems)`: load both splits, check columns and types (module docstring)."""
    from ..suggestions import did_you_mean

    name = cfg.dataset_name
    targets = {t: getattr(cfg, flag) for t, flag in _COLUMN_FLAGS.items() if getattr(cfg, flag)}
    path = Path(name).expanduser()
    local = path.exists()
    where = f"--dataset_name {name!r}"
    problems = []
    if not local and _looks_like_path(name):
        return None, [f"{where}: no such folder (a Hub id is ORG/NAME)"]
    if local and (cfg.dataset_revision or cfg.dataset_config):
        problems.append(f"{where} is a local folder: --dataset_revision / --dataset_config only apply to Hub datasets")
    if cfg.train_split == cfg.eval_split:
        problems.append(f"{where}: --train_split and --eval_split are both {cfg.train_split!r}; heads must not train on the scored images")
    if local and (path / "state.json").is_file():
        problems.append(f"{where} holds a single split (Dataset.save_to_disk); save a DatasetDict with {cfg.train_split!r} and "
                        f"{cfg.eval_split!r} splits (DatasetDict(...).save_to_disk) or one save_to_disk folder per split")
    if problems:
        return None, problems
    display = path.resolve().name if local else name
    base = dict(name=display, image_column=cfg.image_column, source="local" if local else "hub",
                hub_id=None if local else name, hub_config=cfg.dataset_config, revision=cfg.dataset_revision,
                data_dir=str(path.resolve()) if local else None, train_split=cfg.train_split, eval_split=cfg.eval_split,
                description=f"{'local folder ' + str(path.resolve()) if local else 'Hub dataset ' + name} (--dataset_name)")
    splits = {}
    from .loading import _load_hub, _load_local

    probe = DatasetSpec(task="depth", target_column=cfg.image_column, **base)
    for split in dict.fromkeys((cfg.train_split, cfg.eval_split)):
        try:
            splits[split] = _load_local(probe, split) if local else _load_hub(probe, split)
        except (OSError, ValueError) as err:  # unavailable, or no such split
            problems.append(f"{where}: {str(err).splitlines()[0]}")
    if problems:
        return None, problems
    columns = list(splits[cfg.train_split].column_names)
    if not targets:
        return None, [f"{where}: give at least one target column (--label_column, --mask_column or --depth_column; "
                      f"the tasks follow from them); columns are {columns}"]
    for flag, column in (("image_column", cfg.image_column), *((_COLUMN_FLAGS[t], c) for t, c in targets.items())):
        missing = [split for split, ds in splits.items() if column not in ds.column_names]
        if missing:
            there = splits[missing[0]].column_names
            problems.append(f"{where} has no column {column!r} (--{flag}) in split{'s' if len(missing) > 1 else ''} "
                            f"{', '.join(map(repr, missing))}{did_you_mean(column, there)}; columns are {list(there)}")
    if problems:
        return None, problems
    train = splits[cfg.train_split]
    variants, problems = {}, _image_problems(train, cfg.image_column, where)
    for task, column in targets.items():
        variant, found = _VARIANTS[task](cfg, train, column, where)
        problems += found
        if variant is not None:
            variants[task] = dict(target_column=column, **variant)
    if problems:
        return None, problems
    first = next(iter(variants))
    try:
        spec = DatasetSpec(task=first, variants=variants, num_examples={s: len(d) for s, d in splits.items()},
                           **{**base, **variants[first]})
        problems += [p for task in variants for p in _first_rows(get_dataset_spec(spec, task=task), splits, where)]
    except ValueError as err:  # e.g. ignore_index among the class ids
        problems.append(f"{where}: {err}")
    if problems:
        return None, problems
    return spec, []


def _feature_of(ds, column: str):
    return ds.features.get(column)


def _dtype(feature) -> str | None:
    """The element dtype of a Value / Array2D / (nested) Sequence or List feature; None for anything else (images too)."""
    if _is_image(feature):
        return None
    while feature is not None and not hasattr(feature, "dtype"):
        feature = getattr(feature, "feature", None)
    return getattr(feature, "dtype", None)


def _is_image(feature) -> bool:
    import datasets

    return isinstance(feature, datasets.Image)


def _scalar(feature) -> bool:
    import datasets

    return isinstance(feature, (datasets.Value, datasets.ClassLabel))


def _describe(feature) -> str:
    return f"{type(feature).__name__}({_dtype(feature)})" if _dtype(feature) else type(feature).__name__


def _undecoded_row(ds, column: str) -> Any:
    import datasets

    if _is_image(_feature_of(ds, column)):
        ds = ds.cast_column(column, datasets.Image(decode=False))
    return ds[0][column] if len(ds) else None


def _image_problems(ds, column: str, where: str) -> list[str]:
    from .loading import image_to_tensor

    feature = _feature_of(ds, column)
    if _scalar(feature):
        return [f"{where}: --image_column {column!r} holds {_describe(feature)} scalars, not images"]
    if not len(ds):
        return [f"{where}: split {ds.split!s} is empty"]
    try:
        image_to_tensor(_undecoded_row(ds, column), 0, column)
    except (ValueError, TypeError) as err:
        return [f"{where}: --image_column {column!r} ({_describe(feature)}) does not decode to an image: {err}"]
    return []


def _classification(cfg, ds, column, where) -> tuple[dict | None, list[str]]:
    import datasets

    feature = _feature_of(ds, column)
    if isinstance(feature, datasets.ClassLabel):
        if cfg.num_labels is not None and cfg.num_labels != feature.num_classes and not cfg.mask_column:  # else it counts mask classes
            return None, [f"{where}: --num_labels {cfg.num_labels} disagrees with the ClassLabel column {column!r} "
                          f"({feature.num_classes} classes: {feature.names[:10]}); drop --num_labels"]
        return dict(num_classes=feature.num_classes, class_names=tuple(feature.names)), []
    dtype = _dtype(feature) or ""
    if not isinstance(feature, datasets.Value) or not dtype.startswith(("int", "uint")):
        return None, [f"{where}: --label_column {column!r} holds {_describe(feature)}; classification needs integer "
                      "class ids (a ClassLabel or int column)"]
    if cfg.num_labels is None:
        return None, [f"{where}: --label_column {column!r} is a plain {dtype} column (no ClassLabel names): pass "
                      "--num_labels K for labels 0..K-1"]
    if cfg.num_labels < 1:
        return None, [f"{where}: --num_labels must be >= 1, got {cfg.num_labels}"]
    return dict(num_classes=cfg.num_labels, class_names=None), []


def _segmentation(cfg, ds, column, where) -> tuple[dict | None, list[str]]:
    from .loading import _plane
    import numpy as np

    feature = _feature_of(ds, column)
    flag = f"--mask_column {column!r}"
    if _scalar(feature):
        return None, [f"{where}: {flag} holds {_describe(feature)} scalars, not masks (an integer image or 2-D int array); "
                      "a class id per image is --label_column"]
    dtype = _dtype(feature)
    if dtype is not None and not dtype.startswith(("int", "uint")):
        return None, [f"{where}: {flag} holds {_describe(feature)} arrays; masks need integer class ids"]
    if not _is_image(feature) and dtype is None:
        return None, [f"{where}: {flag} holds {_describe(feature)}, not an integer image or 2-D int array"]
    try:
        arr = _plane(_undecoded_row(ds, column), 0, column, "mask")
    except (ValueError, TypeError) as err:
        return None, [f"{where}: {flag} ({_describe(feature)}) does not decode to a 2-D mask: {err}"]
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.bool_)):
        return None, [f"{where}: {flag} decodes to {arr.dtype} values, not integer class ids (mode 'F' image?)"]
    if cfg.num_labels is None:
        return None, [f"{where}: {flag}: pass --num_labels (the classes in the masks, background included if it is one; "
                      f"--ignore_index {cfg.ignore_index} marks pixels to ignore)"]
    return dict(num_classes=cfg.num_labels, class_names=None, ignore_index=cfg.ignore_index, reduce_labels=cfg.reduce_labels), []


def _depth(cfg, ds, column, where) -> tuple[dict | None, list[str]]:
    from .loading import _plane

    feature = _feature_of(ds, column)
    flag = f"--depth_column {column!r}"
    if _scalar(feature) or (not _is_image(feature) and _dtype(feature) in (None, "string", "bool")):
        return None, [f"{where}: {flag} holds {_describe(feature)}, not depth maps (a float image or 2-D array)"]
    try:
        _plane(_undecoded_row(ds, column), 0, column, "depth")
    except (ValueError, TypeError) as err:
        return None, [f"{where}: {flag} ({_describe(feature)}) does not decode to a 2-D depth map: {err}"]
    if cfg.max_depth is not None and cfg.max_depth <= 0 or cfg.depth_scale <= 0:
        return None, [f"{where}: --max_depth and --depth_scale must be > 0"]
    return dict(num_classes=None, class_names=None, max_depth=cfg.max_depth, depth_scale=cfg.depth_scale), []


_VARIANTS = {"classification": _classification, "segmentation": _segmentation, "depth": _depth}


def _first_rows(spec: DatasetSpec, splits: dict, where: str) -> list[str]:
    """Every label of a classification column in range, then the first example of each split through the real
    conversion (image decoding, mask values against --num_labels, target size against image size)."""
    from .loading import UnifiedDataset

    problems = []
    if spec.task == "classification":
        for split, ds in splits.items():
            labels = [int(v) for v in ds[spec.target_column] if v is not None]
            bad = sorted({v for v in labels if not 0 <= v < spec.num_classes})
            if bad:
                problems.append(f"{where}: --label_column {spec.target_column!r} holds {bad[:5]} in split {split!r}, "
                                f"outside 0..{spec.num_classes - 1} (--num_labels {spec.num_classes})")
    for split, ds in splits.items():
        if not len(ds):
            problems.append(f"{where}: split {split!r} is empty")
        elif not problems:
            try:
                UnifiedDataset(ds.select([0]), spec)[0]
            except (ValueError, TypeError) as err:
                problems.append(f"{where} ({spec.task}, split {split!r}): {err}")
    return problems


def revision_problems(cfg) -> list[str]:
    """`--revision` pins a Hub commit, branch or tag: refused (not ignored) for a local folder or bundled encoder."""
    if not getattr(cfg, "revision", None):
        return []
    from ..encoders import bundled_encoders, resolve_encoder_name

    names = list(cfg.encoders) or list(bundled_encoders())
    local = [n for n in names if Path(resolve_encoder_name(n)).expanduser().exists()]
    return [f"--revision {cfg.revision!r} pins a Hub commit, branch or tag, but encoder {n!r} is a local folder or bundled "
            "encoder (its files are its revision): drop --revision or run that encoder separately" for n in local]


def run_provenance(cfg, identities: dict) -> dict:
    """`run_info.json`'s `revisions`: per encoder the requested revision and the commit it resolved to
    (None for folders, or a Hub id not in the cache offline); per Hub dataset the same (cached refs only)."""
    from .registry import get_dataset_spec

    datasets = {}
    for name in cfg.datasets:
        spec = get_dataset_spec(name) if name in DATASETS else None
        if spec is not None and spec.hub_id and not spec.data_dir and name not in getattr(cfg, "data_dirs", {}):
            datasets[name] = {"hub_id": spec.hub_id, "config": spec.hub_config, "requested": spec.revision,
                              "commit": dataset_commit(spec.hub_id, spec.revision)}
        elif spec is not None and (spec.data_dir or name in getattr(cfg, "data_dirs", {})):
            datasets[name] = {"path": spec.data_dir or cfg.data_dirs[name], "requested": None, "commit": None}
    encoders = {n: {"requested": cfg.revision if i.kind == "hub" else None, "commit": i.revision} for n, i in identities.items()}
    return {"revisions": {"encoders": encoders, "datasets": datasets}}

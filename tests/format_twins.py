"""Format twins: tiny local copies of every registered real dataset, in that dataset's exact format.

Each twin has what `datasets.load_dataset(<the registered Hub id>)` returns (saved with
`save_to_disk`: the same split names, column names, feature types and image modes), or, for
Cityscapes, the folder layout of the official download. Label conventions are the real ones:

* CIFAR-10/100: `img` PNG RGB 32x32, `label` / `fine_label` (+ `coarse_label`) ClassLabel; train/test.
* STL-10: `image` RGB 96x96, `label`; train/test.
* ADE20k (scene_parse_150, scene_parsing): `image` JPEG of mixed sizes (one greyscale, as in ADE),
  `annotation` PNG mode L with 0 = "other" and 1..150, `scene_category`; train/validation.
* VOC 2012 (official and SBD-augmented copies): `image` JPEG of mixed sizes (landscape and portrait),
  `mask` palette PNG (mode P) with 0..20 and 255 = void on object borders; train/val.
* Cityscapes: `leftImg8bit/<split>/<city>/*_leftImg8bit.png` (RGB, 1:2) and
  `gtFine/<split>/<city>/*_gtFine_labelIds.png` (mode L, labelIds 0..33, not train ids); train/val.
* NYU-Depth v2 (sayakpaul/nyu_depth_v2 parquet export): `image` RGB 3:4, `depth_map` float32 metres
  (mode F TIFF) with zeros (no reading) and NaN; train/validation.

Sizes are tiny (the benchmark resizes anyway); aspect ratios and modes are the real ones.
"""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
from PIL import Image

from hf_ssl_robust.data.registry import CIFAR10_CLASSES, STL10_CLASSES

VOC_PALETTE = [v for i in range(256) for v in ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)]


def _rgb(rng, h, w, mode="RGB"):
    img = Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8))
    return img.convert(mode)


def _blobs(rng, h, w, values):
    """A label map of a few rectangles drawn from `values` (what masks look like, coarsely)."""
    out = np.full((h, w), values[0], dtype=np.int64)
    for v in rng.choice(values, size=4):
        y, x = rng.integers(0, h - 2), rng.integers(0, w - 2)
        out[y : y + rng.integers(2, h // 2 + 2), x : x + rng.integers(2, w // 2 + 2)] = v
    return out


def _classification(rng, n, size, image_col, label_cols):
    rows = {image_col: [_rgb(rng, size, size) for _ in range(n)]}
    features = {image_col: datasets.Image()}
    for col, names in label_cols.items():
        rows[col] = rng.integers(0, len(names), n).tolist()
        features[col] = datasets.ClassLabel(names=list(names))
    return datasets.Dataset.from_dict(rows, features=datasets.Features(features))


def _ade(rng, n, sizes):
    images, annotations = [], []
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        images.append(_rgb(rng, h, w, "L" if i == 1 else "RGB"))  # ADE has a few greyscale JPEGs
        annotations.append(Image.fromarray(_blobs(rng, h, w, [0, 1, 3, 12, 150]).astype(np.uint8), mode="L"))
    features = datasets.Features({"image": datasets.Image(), "annotation": datasets.Image(),
                                  "scene_category": datasets.ClassLabel(num_classes=1055)})
    return datasets.Dataset.from_dict({"image": images, "annotation": annotations, "scene_category": [0] * n}, features=features)


def _voc(rng, n, sizes):
    images, masks = [], []
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        images.append(_rgb(rng, h, w))
        mask = _blobs(rng, h, w, [0, 1, 7, 15, 20])
        mask[:, w // 2] = 255  # void border
        m = Image.fromarray(mask.astype(np.uint8), mode="P")
        m.putpalette(VOC_PALETTE)
        masks.append(m)
    features = datasets.Features({"image": datasets.Image(), "mask": datasets.Image()})
    return datasets.Dataset.from_dict({"image": images, "mask": masks}, features=features)


def _nyu(rng, n, h=24, w=32):
    images, depths = [], []
    for _ in range(n):
        images.append(_rgb(rng, h, w))
        depth = (rng.random((h, w)) * 9.5 + 0.3).astype(np.float32)
        depth[0, :] = 0.0  # no reading
        depth[1, :3] = np.nan
        depths.append(Image.fromarray(depth, mode="F"))
    features = datasets.Features({"image": datasets.Image(), "depth_map": datasets.Image()})
    return datasets.Dataset.from_dict({"image": images, "depth_map": depths}, features=features)


def _cityscapes(rng, root: Path, counts: dict[str, int], h=16, w=32):
    for split, n in counts.items():
        for i in range(n):
            city = ("aachen", "bochum")[i % 2] if split == "train" else "frankfurt"
            stem = f"{city}_{i:06d}_000019"
            for kind, name, img in (
                ("leftImg8bit", f"{stem}_leftImg8bit.png", _rgb(rng, h, w)),
                ("gtFine", f"{stem}_gtFine_labelIds.png", Image.fromarray(_blobs(rng, h, w, [1, 7, 8, 11, 21, 26, 33]).astype(np.uint8), mode="L")),
            ):
                folder = root / kind / split / city
                folder.mkdir(parents=True, exist_ok=True)
                img.save(folder / name)


def write_sorted_cifar10(root: Path, per_class: int = 4, seed: int = 0) -> str:
    """A CIFAR-10 twin (`img` / `label`, split `test`) whose rows are sorted by class, as many real
    splits are ordered (Cityscapes by city, NYU by scene): the first rows hold class 0 only."""
    rng = np.random.default_rng(seed)
    ds = _classification(rng, 10 * per_class, 32, "img", {"label": CIFAR10_CLASSES})
    ds = ds.map(lambda row, i: {"label": i // per_class}, with_indices=True)
    path = Path(root) / "cifar10_sorted"
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(path))
    return str(path)


def write_format_twins(root: Path, n_train: int = 8, n_eval: int = 4, seed: int = 0) -> dict[str, str]:
    """Write every twin under `root`; returns `{registry name: folder}`."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    mixed = [(24, 32), (32, 24), (30, 40), (28, 28)]
    builders = {
        "cifar10": lambda n: _classification(rng, n, 32, "img", {"label": CIFAR10_CLASSES}),
        "cifar100": lambda n: _classification(rng, n, 32, "img", {"fine_label": [f"c{i}" for i in range(100)], "coarse_label": [f"s{i}" for i in range(20)]}),
        "stl10": lambda n: _classification(rng, n, 96, "image", {"label": STL10_CLASSES}),
        "ade20k": lambda n: _ade(rng, n, mixed),
        "voc2012": lambda n: _voc(rng, n, [(30, 40), (40, 30), (36, 40)]),
        "voc2012_aug": lambda n: _voc(rng, n, [(40, 30), (30, 40)]),
        "nyu_depth_v2": lambda n: _nyu(rng, n),
    }
    splits = {"cifar10": "test", "cifar100": "test", "stl10": "test", "ade20k": "validation", "voc2012": "val",
              "voc2012_aug": "val", "nyu_depth_v2": "validation"}
    paths = {}
    for name, build in builders.items():
        path = root / name
        datasets.DatasetDict({"train": build(n_train), splits[name]: build(n_eval)}).save_to_disk(str(path))
        paths[name] = str(path)
    _cityscapes(rng, root / "cityscapes", {"train": n_train, "val": n_eval})
    paths["cityscapes"] = str(root / "cityscapes")
    return paths

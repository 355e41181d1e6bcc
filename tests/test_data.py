"""Dataset registry, raw example -> unified sample, local / Hub / ShapesWorld loading, batches."""

import dataclasses
import importlib.util
import io
import time

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from hf_ssl_robust.data import (
    DATASETS,
    TASKS,
    DatasetSpec,
    DatasetUnavailableError,
    UnifiedDataset,
    collate,
    get_dataset_spec,
    load_split,
    make_dataloader,
    make_dataset,
    register_dataset,
    to_unified,
    train_transform,
)
from hf_ssl_robust.data.registry import CITYSCAPES_LABEL_TO_TRAIN_ID

HAS_SYNTHETIC = importlib.util.find_spec("hf_ssl_robust.data.synthetic") is not None
needs_synthetic = pytest.mark.skipif(not HAS_SYNTHETIC, reason="hf_ssl_robust.data.synthetic (ShapesWorld) not written yet")


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# --- registry ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(DATASETS))
def test_registry__every_spec_well_formed(name):
    base = DATASETS[name]
    assert base.name == name and base.tasks
    for task in base.tasks:
        spec = get_dataset_spec(name, task=task)
        assert spec.task == task in TASKS
        assert spec.image_column and spec.target_column
        assert spec.train_split and spec.eval_split and spec.description
        if task in ("classification", "segmentation"):
            assert spec.num_classes >= 1
            assert spec.class_names is None or len(spec.class_names) == spec.num_classes
        else:
            assert spec.num_classes is None and spec.max_depth
        if task == "segmentation":
            assert not 0 <= spec.ignore_index < spec.num_classes
        assert spec.source == "synthetic" or spec.hub_id or spec.local_only


def test_registry__paper_datasets_present():
    expected = {"cifar10": 10, "cifar100": 100, "stl10": 10, "ade20k": 150, "cityscapes": 19, "voc2012": 21}
    for name, k in expected.items():
        assert get_dataset_spec(name).num_classes == k
    assert get_dataset_spec("cifar100").target_column == "fine_label"
    assert get_dataset_spec("nyu_depth_v2").target_column == "depth_map"
    assert get_dataset_spec("cityscapes").local_only
    assert set(get_dataset_spec("shapes").tasks) == set(TASKS)


@needs_synthetic
def test_registry__shapes_agrees_with_synthetic():
    from hf_ssl_robust.data import synthetic

    assert get_dataset_spec("shapes").class_names == tuple(synthetic.SHAPE_CLASSES)
    assert get_dataset_spec("shapes", task="segmentation").num_classes == synthetic.NUM_CLASSES + 1
    assert get_dataset_spec("shapes", task="depth").max_depth == synthetic.MAX_DEPTH


def test_get_dataset_spec__task_variants():
    seg = get_dataset_spec("shapes", task="segmentation")
    assert (seg.target_column, seg.target_key, seg.num_classes) == ("mask", "mask", 7)
    depth = get_dataset_spec("shapes", task="depth")
    assert (depth.target_column, depth.num_classes, depth.max_depth) == ("depth", None, 10.0)
    # a resolved spec keeps its overrides when resolved again
    custom = get_dataset_spec("shapes", task="segmentation", target_column="seg")
    assert get_dataset_spec(custom).target_column == "seg"


def test_get_dataset_spec__overrides():
    spec = get_dataset_spec("ade20k", hub_id="me/ade", target_column="label", eval_split="val", data_dir="/x")
    assert (spec.hub_id, spec.target_column, spec.eval_split, spec.data_dir) == ("me/ade", "label", "val", "/x")
    assert DATASETS["ade20k"].hub_id == "zhoubolei/scene_parse_150"  # registry untouched
    assert get_dataset_spec("voc2012", hub_id=None).hub_id == "nateraw/pascal-voc-2012"  # None = keep


def test_get_dataset_spec__unknown_name():
    with pytest.raises(ValueError, match=r"Unknown dataset 'imagenet42'; available: \[.*'cifar10'"):
        get_dataset_spec("imagenet42")


def test_get_dataset_spec__unsupported_task():
    with pytest.raises(ValueError, match=r"does not support task 'depth'; supported: \['classification'\]"):
        get_dataset_spec("cifar10", task="depth")


def test_get_dataset_spec__unknown_field():
    with pytest.raises(ValueError, match="Unknown DatasetSpec field.*'img_col'"):
        get_dataset_spec("cifar10", img_col="x")


def test_dataset_spec__validation():
    with pytest.raises(ValueError, match="unknown task 'detection'"):
        DatasetSpec(name="x", task="detection", target_column="y", hub_id="a/b")
    with pytest.raises(ValueError, match="needs num_classes"):
        DatasetSpec(name="x", task="classification", target_column="y", hub_id="a/b")
    with pytest.raises(ValueError, match="ignore_index=3 collides"):
        DatasetSpec(name="x", task="segmentation", target_column="y", hub_id="a/b", num_classes=5, ignore_index=3)
    with pytest.raises(ValueError, match="needs hub_id"):
        DatasetSpec(name="x", task="depth", target_column="y")
    with pytest.raises(ValueError, match="already registered"):
        register_dataset(DATASETS["cifar10"])


# --- to_unified ------------------------------------------------------------------------------------
CLS = DatasetSpec(name="t", task="classification", image_column="image", target_column="label", num_classes=10, hub_id="a/b")
SEG = dataclasses.replace(CLS, task="segmentation", target_column="mask", num_classes=5)
DEPTH = dataclasses.replace(CLS, task="depth", target_column="depth", num_classes=None, max_depth=10.0)


@pytest.mark.parametrize(
    "img, expected",
    [
        (Image.fromarray(np.full((4, 5), 51, np.uint8)), 0.2),  # L
        (Image.fromarray(np.full((4, 5, 4), [51, 51, 51, 0], np.uint8)), 0.2),  # RGBA
        (Image.fromarray(np.full((4, 5), 13107, np.uint16)), 0.2),  # mode I;16
        (Image.new("P", (5, 4), 2), None),
        (np.full((4, 5, 3), 51, np.uint8), 0.2),
        (np.full((3, 4, 5), 0.2, np.float32), 0.2),  # CHW float
        (np.full((4, 5), 13107, np.uint16), 0.2),
    ],
)
def test_to_unified__images_become_rgb_in_unit_range(img, expected):
    if isinstance(img, Image.Image) and img.mode == "P":
        img.putpalette([0, 0, 0, 255, 255, 255, 51, 102, 153] + [0] * 759)
        expected = torch.tensor([0.2, 0.4, 0.6]).view(3, 1, 1).expand(3, 4, 5)
    for value in (img, {"bytes": png_bytes(img), "path": None}) if isinstance(img, Image.Image) else (img,):
        out = to_unified({"image": value, "label": 3}, CLS, 0)
        px = out["pixel_values"]
        assert px.shape == (3, 4, 5) and px.dtype == torch.float32
        assert torch.allclose(px, torch.as_tensor(expected).float().expand_as(px), atol=1e-6)
        assert out["labels"].dtype == torch.int64 and out["labels"].item() == 3


def test_to_unified__corrupt_image_names_index_and_column():
    data = png_bytes(Image.new("RGB", (8, 8)))
    for broken in (data[: len(data) // 2], b"not an image"):
        with pytest.raises(ValueError, match=r"Sample 17: column 'image' holds an unreadable image"):
            to_unified({"image": {"bytes": broken, "path": None}, "label": 0}, CLS, 17)
    with pytest.raises(ValueError, match=r"Sample 4: column 'image' is empty"):
        to_unified({"image": None, "label": 0}, CLS, 4)


def test_to_unified__label_out_of_range():
    with pytest.raises(ValueError, match="Sample 2: label 10 outside 0..9"):
        to_unified({"image": np.zeros((2, 2, 3), np.uint8), "label": 10}, CLS, 2)


def test_to_unified__mask_mappings():
    img = np.zeros((2, 3, 3), np.uint8)
    raw = np.array([[0, 1, 2], [255, 4, 0]], np.uint8)
    out = to_unified({"image": img, "mask": Image.fromarray(raw)}, SEG, 0)
    assert out["mask"].dtype == torch.int64 and out["mask"].tolist() == raw.tolist()
    reduced = dataclasses.replace(SEG, reduce_labels=True)  # ADE20k: 0 -> ignore, k -> k-1
    assert to_unified({"image": img, "mask": raw}, reduced, 0)["mask"].tolist() == [[255, 0, 1], [255, 3, 255]]
    city = dataclasses.replace(SEG, num_classes=19, label_map=CITYSCAPES_LABEL_TO_TRAIN_ID)
    labels = np.array([[7, 8, 33], [0, 26, 255]], np.uint8)
    assert to_unified({"image": img, "mask": labels}, city, 0)["mask"].tolist() == [[0, 1, 18], [255, 13, 255]]
    neg = np.array([[-1, 1, 2], [3, 4, -1]])
    assert to_unified({"image": img, "mask": neg}, SEG, 0)["mask"].tolist() == [[255, 1, 2], [3, 4, 255]]
    with pytest.raises(ValueError, match=r"Sample 6: mask values \[7\] are outside 0..4"):
        to_unified({"image": img, "mask": np.array([[7, 1, 2], [3, 4, 0]])}, SEG, 6)
    with pytest.raises(ValueError, match="Sample 1: mask shape"):
        to_unified({"image": img, "mask": np.zeros((3, 3), np.int64)}, SEG, 1)


def test_to_unified__depth_scaling_and_invalid():
    img = np.zeros((2, 3, 3), np.uint8)
    mm = np.array([[0, 1500, 9000], [12000, 65535, 250]], np.uint16)
    spec = dataclasses.replace(DEPTH, depth_scale=1 / 1000)
    depth = to_unified({"image": img, "depth": Image.fromarray(mm)}, spec, 0)["depth"]
    assert depth.dtype == torch.float32
    torch.testing.assert_close(depth, torch.tensor([[0.0, 1.5, 9.0], [0.0, 0.0, 0.25]]))
    metres = np.array([[[-1.0, 2.0, np.inf], [3.0, 10.0, 10.5]]], np.float32)  # [1, H, W]
    depth = to_unified({"image": img, "depth": metres}, DEPTH, 0)["depth"]
    assert depth.tolist() == [[0.0, 2.0, 0.0], [3.0, 10.0, 0.0]]


def test_to_unified__nan_depth():
    img = np.zeros((2, 2, 3), np.uint8)
    depth = np.array([[1.0, np.nan], [2.0, 3.0]], np.float32)
    with pytest.raises(ValueError, match=r"Sample 9: depth column 'depth' has 1 NaN values; pass nan_depth='invalid'"):
        to_unified({"image": img, "depth": depth}, DEPTH, 9)
    out = to_unified({"image": img, "depth": depth}, DEPTH, 9, nan_depth="invalid")
    assert out["depth"].tolist() == [[1.0, 0.0], [2.0, 3.0]]
    with pytest.raises(ValueError, match="nan_depth must be one of"):
        to_unified({"image": img, "depth": depth}, DEPTH, 9, nan_depth="drop")


# --- local datasets ------------------------------------------------------------------------------
def tiny_seg_dataset(n=4, size=(6, 8)):
    rng = np.random.default_rng(0)
    return datasets.Dataset.from_dict(
        {
            "image": [Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)) for _ in range(n)],
            "label": [Image.fromarray(rng.integers(0, 5, size, dtype=np.uint8)) for _ in range(n)],
        },
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Image()}),
    )


@pytest.fixture
def local_voc(tmp_path):
    datasets.DatasetDict({"train": tiny_seg_dataset(4), "val": tiny_seg_dataset(3)}).save_to_disk(tmp_path / "voc")
    return str(tmp_path / "voc")


def test_load_split__save_to_disk_folder(local_voc):
    ds = load_split("voc2012", "eval", data_dir=local_voc, target_column="label")
    assert len(ds) == 3
    loader = make_dataloader("voc2012", "val", batch_size=2, data_dir=local_voc, target_column="label", image_size=(6, 8))
    batch = next(iter(loader))
    assert batch["pixel_values"].shape == (2, 3, 6, 8) and batch["pixel_values"].dtype == torch.float32
    assert batch["mask"].shape == (2, 6, 8) and batch["mask"].dtype == torch.int64
    expected = torch.tensor(np.array(tiny_seg_dataset(3)[0]["label"])).long()
    assert torch.equal(batch["mask"][0], expected)


def test_load_split__single_dataset_and_parquet(tmp_path):
    tiny_seg_dataset(5).save_to_disk(tmp_path / "one")
    assert len(load_split("cityscapes", "train", data_dir=tmp_path / "one", num_samples=2)) == 2
    tiny_seg_dataset(3).to_parquet(str(tmp_path / "pq" / "validation-00000.parquet"))
    ds = load_split("cityscapes", "validation", data_dir=tmp_path / "pq", label_map=None)
    assert len(ds) == 3 and "label" in ds.column_names


@pytest.fixture(scope="module")
def sorted_cifar10(tmp_path_factory):
    from format_twins import write_sorted_cifar10

    return write_sorted_cifar10(tmp_path_factory.mktemp("sorted"), per_class=4)  # 40 rows, labels 0,0,0,0,1,...


def test_load_split__subset_is_seeded_sample_of_full_split(sorted_cifar10):
    labels = lambda seed, n=8: load_split("cifar10", "test", data_dir=sorted_cifar10, num_samples=n, seed=seed)["label"]
    first = labels(0)
    assert len(first) == 8 and len(set(first)) >= 4, first  # the first 8 rows hold classes 0 and 1 only
    assert labels(0) == first  # same seed, same rows
    assert labels(1) != first  # another seed, another subset
    assert first == sorted(first)  # split order kept
    assert len(labels(0, n=100)) == 40  # more than the split: the whole split
    with pytest.raises(ValueError, match=r"num_samples must be an int >= 0.*got -1"):
        load_split("cifar10", "test", data_dir=sorted_cifar10, num_samples=-1)


def test_make_dataset__subset_same_for_every_batch_size(sorted_cifar10):
    kw = dict(data_dir=sorted_cifar10, num_samples=12, seed=3, image_size=8)
    ds = make_dataset("cifar10", "eval", **kw)
    expected = [int(ds[i]["labels"]) for i in range(len(ds))]
    assert len(set(expected)) >= 5
    for batch_size in (1, 5):  # the subset is fixed before any loader: batching never changes it
        loader = make_dataloader("cifar10", "eval", batch_size=batch_size, **kw)
        assert torch.cat([b["labels"] for b in loader]).tolist() == expected
    train_kw = dict(kw, num_samples=10)  # head training picks its subset the same way
    assert len({int(x["labels"]) for x in make_dataset("cifar10", "train", **train_kw)}) >= 5  # first 10 rows: 3 classes


def test_load_split__missing_column_lists_available(local_voc):
    with pytest.raises(ValueError, match=r"missing column\(s\) \['mask'\]; available: \['image', 'label'\].*target_column="):
        load_split("voc2012", "val", data_dir=local_voc)


def test_load_split__missing_split(local_voc):
    with pytest.raises(ValueError, match=r"Split 'test' not found.*available: \['train', 'val'\]"):
        load_split("voc2012", "test", data_dir=local_voc, target_column="label")


def test_load_split__local_only_needs_data_dir():
    with pytest.raises(DatasetUnavailableError, match="'cityscapes' is only available from a local folder.*data_dir"):
        load_split("cityscapes", "train")


def test_load_split__hub_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(DatasetUnavailableError, match=r"'cifar10' \(Hub id 'uoft-cs/cifar10-not-cached-here'.*HF_HUB_OFFLINE.*data_dir"):
        load_split("cifar10", "test", hub_id="uoft-cs/cifar10-not-cached-here")
    assert time.perf_counter() - start < 10


def test_unified_dataset__corrupt_image_in_dataset(tmp_path):
    good = png_bytes(Image.new("RGB", (4, 4)))
    ds = datasets.Dataset.from_dict(
        {"image": [{"bytes": good, "path": None}, {"bytes": good[:20], "path": None}], "label": [1, 2]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")}),
    )
    unified = UnifiedDataset(ds, CLS)
    assert unified[0]["pixel_values"].shape == (3, 4, 4)
    with pytest.raises(ValueError, match="Sample 1: column 'image' holds an unreadable image"):
        unified[1]


def test_unified_dataset__seeded_augmentation(local_voc):
    spec = get_dataset_spec("voc2012", target_column="label")
    ds = load_split(spec, "train", data_dir=local_voc)
    a = UnifiedDataset(ds, spec, train_transform("segmentation", 4), seed=1)
    b = UnifiedDataset(ds, spec, train_transform("segmentation", 4), seed=1)
    assert all(torch.equal(a[i]["mask"], b[i]["mask"]) for i in range(len(a)))
    assert a[0]["pixel_values"].shape == (3, 4, 4)


def test_collate__pads_mixed_sizes():
    samples = [
        {"pixel_values": torch.ones(3, 2, 3), "mask": torch.zeros(2, 3, dtype=torch.long), "depth": torch.ones(2, 3)},
        {"pixel_values": torch.ones(3, 3, 2), "mask": torch.zeros(3, 2, dtype=torch.long), "depth": torch.ones(3, 2)},
    ]
    batch = collate(samples, ignore_index=255)
    assert batch["pixel_values"].shape == (2, 3, 3, 3)
    assert batch["mask"][0, 2].tolist() == [255, 255, 255] and batch["depth"][1, :, 2].tolist() == [0, 0, 0]
    labels = collate([{"pixel_values": torch.zeros(3, 2, 2), "labels": torch.tensor(i)} for i in range(3)])["labels"]
    assert labels.tolist() == [0, 1, 2] and labels.dtype == torch.int64


# --- ShapesWorld ---------------------------------------------------------------------------------
@needs_synthetic
@pytest.mark.parametrize("task", ["classification", "segmentation", "depth"])
def test_shapes__fast_path_equals_dataset_path(task):
    kw = dict(task=task, batch_size=6, num_samples=6, image_size=32, seed=3)
    fast = next(iter(make_dataloader("shapes", "test", fast=True, **kw)))
    slow = next(iter(make_dataloader("shapes", "test", fast=False, **kw)))
    assert fast.keys() == slow.keys() == {"pixel_values", get_dataset_spec("shapes", task=task).target_key}
    for key in fast:
        assert torch.equal(fast[key], slow[key]), key
    px = fast["pixel_values"]
    assert px.shape == (6, 3, 32, 32) and px.dtype == torch.float32 and 0 <= px.min() and px.max() <= 1
    if task == "segmentation":
        assert fast["mask"].dtype == torch.int64 and fast["mask"].max() <= 6
    if task == "depth":
        assert fast["depth"].dtype == torch.float32 and (fast["depth"] > 0).all() and fast["depth"].max() <= 10


@needs_synthetic
def test_shapes__load_split_and_splits_differ():
    ds = load_split("shapes", "train", task="segmentation", num_samples=4, image_size=16)
    assert len(ds) == 4 and {"image", "mask", "depth", "label"} <= set(ds.column_names)
    train = make_dataset("shapes", "train", num_samples=4, image_size=16)
    test = make_dataset("shapes", "eval", num_samples=4, image_size=16)
    assert not torch.equal(train[0]["pixel_values"], test[0]["pixel_values"])


@needs_synthetic
def test_shapes__shuffled_loader_reproducible():
    def first(seed):
        kw = dict(task="classification", batch_size=4, num_samples=16, image_size=16, shuffle=True, seed=seed)
        return next(iter(make_dataloader("shapes", "train", **kw)))["labels"]

    assert torch.equal(first(0), first(0))


def test_load_split__imagefolder(tmp_path):
    for split in ("train", "test"):
        for label in ("cat", "dog"):
            folder = tmp_path / "folder" / split / label
            folder.mkdir(parents=True)
            Image.new("RGB", (5, 5), (255, 0, 0)).save(folder / "a.png")
    loader = make_dataloader("cifar10", "test", batch_size=2, data_dir=tmp_path / "folder", image_column="image", image_size=8)
    batch = next(iter(loader))
    assert batch["pixel_values"].shape == (2, 3, 8, 8) and sorted(batch["labels"].tolist()) == [0, 1]

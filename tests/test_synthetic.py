"""ShapesWorld: determinism, label consistency, geometry and the datasets wrapper."""

import numpy as np
import pytest
import torch

from hf_ssl_robust.data.synthetic import MAX_DEPTH, NUM_CLASSES, SHAPE_CLASSES, _mix, make_shapes_dataset, render_scenes


@pytest.fixture(scope="module")
def batch():
    return render_scenes(64, image_size=64, seed=3)


def test_public_constants():
    assert NUM_CLASSES == len(SHAPE_CLASSES) == 6
    assert len(set(SHAPE_CLASSES)) == NUM_CLASSES
    assert MAX_DEPTH == 10.0


def test_shapes_dtypes_ranges(batch):
    x, y, m, d = batch["pixel_values"], batch["labels"], batch["mask"], batch["depth"]
    assert x.shape == (64, 3, 64, 64) and x.dtype == torch.float32
    assert y.shape == (64,) and y.dtype == torch.int64
    assert m.shape == (64, 64, 64) and m.dtype == torch.int64
    assert d.shape == (64, 64, 64) and d.dtype == torch.float32
    assert x.min() >= 0 and x.max() <= 1
    assert y.min() >= 0 and y.max() < NUM_CLASSES
    assert m.min() >= 0 and m.max() <= NUM_CLASSES
    assert torch.isfinite(d).all() and (d > 0).all() and (d <= MAX_DEPTH).all()
    assert x.std() > 0.1  # not blank


def test_determinism_and_slices():
    a, b = render_scenes(8, 32, seed=5), render_scenes(8, 32, seed=5)
    part = render_scenes(4, 32, seed=5, start=2)
    for key in a:
        assert torch.equal(a[key], b[key]), key
        assert torch.equal(part[key], a[key][2:6]), key
    other = render_scenes(8, 32, seed=6)
    assert not torch.equal(a["pixel_values"], other["pixel_values"])


def test_slice_independent_of_chunking(monkeypatch):
    import hf_ssl_robust.data.synthetic as synthetic

    full = render_scenes(10, 32, seed=1)
    monkeypatch.setattr(synthetic, "_CHUNK_PIXELS", 3 * 32 * 32)  # chunks of 3 samples
    chunked = render_scenes(10, 32, seed=1)
    for key in full:
        assert torch.equal(full[key], chunked[key]), key


def test_label_is_largest_visible_object(batch):
    counts = torch.stack([torch.bincount(m.flatten(), minlength=NUM_CLASSES + 1) for m in batch["mask"]])
    objects = counts[:, 1:]
    assert (objects.sum(1) > 0).all()
    assert (objects.gather(1, batch["labels"][:, None]) > 0).all()  # mask classes contain label + 1
    assert torch.equal(objects.argmax(1), batch["labels"])


def test_ground_depth_grows_toward_horizon(batch):
    d, bg = batch["depth"], batch["mask"] == 0
    height = d.shape[1]
    for i in range(d.shape[0]):
        upper = d[i, height // 4 : height // 2][bg[i, height // 4 : height // 2]]
        lower = d[i, -height // 4 :][bg[i, -height // 4 :]]
        if upper.numel() and lower.numel():
            assert upper.mean() > lower.mean()
        # background depth is one value per row (plane / sky) and never shrinks going up
        rows = torch.where(bg[i], d[i], torch.nan)
        lo, hi = rows.nan_to_num(float("inf")).amin(1), rows.nan_to_num(-float("inf")).amax(1)
        seen = bg[i].any(1)
        assert torch.allclose(lo[seen], hi[seen])
        prof = lo[seen]
        assert (prof[:-1] >= prof[1:] - 1e-5).all()


def test_objects_stand_on_the_plane(batch):
    """No object pixel is farther than the ground (or sky) of its own row: objects stand on
    the plane, so every pixel of an object lies at or above its base row."""
    d, bg = batch["depth"], batch["mask"] == 0
    for i in range(d.shape[0]):
        ground = torch.where(bg[i], d[i], torch.inf).amin(1)  # background depth of each row
        obj = torch.where(bg[i], -torch.inf, d[i]).amax(1)  # farthest object pixel of each row
        rows = bg[i].any(1) & (~bg[i]).any(1)
        assert (obj[rows] <= ground[rows] * (1 + 1e-5)).all()


def test_farther_objects_are_smaller_and_higher():
    b = render_scenes(256, 64, seed=11)
    rows = torch.arange(64, dtype=torch.float32)
    bottoms, depths, areas = [], [], []
    for m, d in zip(b["mask"], b["depth"]):
        for k in m.unique()[1:]:
            sel = m == k
            bottoms.append(rows[sel.any(1)].max())
            depths.append(d[sel].max())
            areas.append(sel.sum().float())
    bottoms, depths, areas = map(torch.stack, (bottoms, depths, areas))
    near = depths < depths.median()
    assert bottoms[near].mean() > bottoms[~near].mean()
    assert areas[near].mean() > areas[~near].mean()


def test_non_square():
    b = render_scenes(5, image_size=(48, 80), seed=2)
    assert b["pixel_values"].shape == (5, 3, 48, 80)
    assert b["mask"].shape == b["depth"].shape == (5, 48, 80)
    counts = torch.stack([torch.bincount(m.flatten(), minlength=NUM_CLASSES + 1) for m in b["mask"]])
    assert torch.equal(counts[:, 1:].argmax(1), b["labels"])
    assert torch.equal(render_scenes(2, (48, 80), seed=2, start=3)["pixel_values"], b["pixel_values"][3:5])


def test_class_balance_and_colour_independent_of_class():
    b = render_scenes(1000, 32, seed=0)
    freq = torch.bincount(b["labels"], minlength=NUM_CLASSES).float() / 1000
    assert (freq >= 0.05).all() and (freq <= 0.30).all(), freq
    # mean object colour per class is similar: colour does not give the class away
    x, m = b["pixel_values"], b["mask"]
    means = torch.stack([x.permute(1, 0, 2, 3)[:, m == k + 1].mean(1) for k in range(NUM_CLASSES)])
    assert (means.max(0).values - means.min(0).values).max() < 0.15


def test_invalid_arguments():
    with pytest.raises(ValueError):
        render_scenes(2, image_size=4)
    with pytest.raises(ValueError, match="split"):
        make_shapes_dataset(2, split="dev")


def test_dataset_round_trip():
    import datasets

    ds = make_shapes_dataset(12, image_size=(32, 40), seed=4, split="train")
    assert set(ds.column_names) == {"image", "label", "mask", "depth"}
    assert isinstance(ds.features["image"], datasets.Image)
    assert isinstance(ds.features["mask"], datasets.Image)
    assert ds.features["label"].names == list(SHAPE_CLASSES)
    ref = render_scenes(12, (32, 40), seed=_mix(4, 0x5EED, 0))  # the train stream
    row = ds[3]
    assert row["image"].mode == "RGB" and row["image"].size == (40, 32)
    assert row["mask"].mode == "L"
    assert np.array_equal(np.asarray(row["mask"]), ref["mask"][3].numpy())
    assert row["label"] == int(ref["labels"][3])
    depth = np.asarray(row["depth"], dtype=np.float32)
    assert depth.shape == (32, 40) and np.array_equal(depth, ref["depth"][3].numpy())
    pixels = np.asarray(row["image"]).astype(np.float32) / 255
    assert np.abs(pixels - ref["pixel_values"][3].permute(1, 2, 0).numpy()).max() <= 0.5 / 255 + 1e-6
    fmt = ds.with_format("numpy")[:4]
    assert fmt["depth"].shape == (4, 32, 40) and fmt["depth"].dtype == np.float32


def test_dataset_splits_disjoint():
    images = {}
    for split in ("train", "validation", "test"):
        ds = make_shapes_dataset(40, image_size=32, seed=0, split=split)
        images[split] = {np.asarray(im).tobytes() for im in ds["image"]}
        assert ds.split == split
    assert not images["train"] & images["test"]
    assert not images["train"] & images["validation"]
    assert not images["validation"] & images["test"]
    again = make_shapes_dataset(40, image_size=32, seed=0, split="test")
    assert {np.asarray(im).tobytes() for im in again["image"]} == images["test"]


def test_appearance_views_share_geometry_and_differ_in_appearance():
    own, a, b = (render_scenes(16, 48, seed=4, start=7, appearance=v) for v in (None, 0, 1))
    for key in ("labels", "mask", "depth"):  # geometry only: identical in every view, and to the scene itself
        assert torch.equal(a[key], b[key]) and torch.equal(a[key], own[key]), key
    diff = (a["pixel_values"] - b["pixel_values"]).abs().mean((1, 2, 3))
    assert (diff > 0.02).all()  # every pair looks different
    # object colours are redrawn: the mean colour of the same object pixels differs between views
    obj = (a["mask"] > 0)[:, None]
    colour = lambda x: (x * obj).sum((2, 3)) / obj.sum((2, 3))  # noqa: E731
    assert ((colour(a["pixel_values"]) - colour(b["pixel_values"])).abs().amax(1) > 0.05).float().mean() > 0.8
    # deterministic per (seed, index, appearance), whatever the slice
    again = render_scenes(4, 48, seed=4, start=9, appearance=1)
    for key in b:
        assert torch.equal(again[key], b[key][2:6]), key
    assert not torch.equal(render_scenes(4, 48, seed=4, start=9, appearance=2)["pixel_values"], again["pixel_values"])

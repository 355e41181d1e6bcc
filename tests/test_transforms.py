"""Paired transforms: same geometry on image, mask and depth; masks never interpolated; seeded."""

import pytest
import torch

from hf_ssl_robust.data.transforms import (
    CenterCrop,
    Compose,
    PadToMultiple,
    RandomCrop,
    RandomHorizontalFlip,
    RandomResizedCrop,
    RandomVerticalFlip,
    Resize,
    eval_transform,
    train_transform,
)


def coord_sample(h=12, w=16):
    """Pixels encode their coordinates: channel 0 = row, channel 1 = column (scaled into [0, 1]),
    the mask holds ``row * w + col`` and the depth ``1 + row * w + col``: every pixel is unique."""
    rows = torch.arange(h).view(h, 1).expand(h, w)
    cols = torch.arange(w).view(1, w).expand(h, w)
    code = rows * w + cols
    img = torch.stack([rows / 255.0, cols / 255.0, torch.zeros(h, w)]).float()
    return {"pixel_values": img, "mask": code.long(), "depth": (code + 1).float(), "labels": torch.tensor(3)}


def assert_aligned(out):
    """Every valid pixel of mask / depth matches the coordinates the image holds there."""
    img, mask, depth = out["pixel_values"], out["mask"], out["depth"]
    valid = mask != 255
    assert torch.equal(valid, depth > 0)
    rows, cols = (img[0] * 255).round().long(), (img[1] * 255).round().long()
    w = 16
    assert torch.equal(mask[valid], (rows * w + cols)[valid])
    assert torch.equal(depth[valid], (mask[valid] + 1).float())


def test_resize__mask_values_never_interpolated():
    torch.manual_seed(0)
    values = torch.tensor([0, 3, 7, 255])
    mask = values[torch.randint(0, 4, (37, 53))]
    depth = torch.tensor([0.0, 1.5, 9.0])[torch.randint(0, 3, (37, 53))]
    sample = {"pixel_values": torch.rand(3, 37, 53), "mask": mask, "depth": depth}
    for size in [(16, 20), (64, 90), 23, (37, 101)]:
        out = Resize(size)(sample)
        assert set(out["mask"].unique().tolist()) <= {0, 3, 7, 255}
        assert set(out["depth"].unique().tolist()) <= {0.0, 1.5, 9.0}
        assert out["mask"].dtype == torch.int64 and out["depth"].dtype == torch.float32
        assert out["pixel_values"].min() >= 0 and out["pixel_values"].max() <= 1


def test_resize__short_side_and_exact():
    sample = coord_sample(12, 16)
    assert Resize(6)(sample)["pixel_values"].shape == (3, 6, 8)
    out = Resize((5, 7))(sample)
    assert out["pixel_values"].shape == (3, 5, 7) and out["mask"].shape == (5, 7) and out["depth"].shape == (5, 7)
    assert torch.equal(out["labels"], sample["labels"])  # non-spatial keys pass through


def test_resize__upsample_integer_factor_keeps_alignment():
    out = Resize((24, 32))(coord_sample())
    assert torch.equal(out["mask"], coord_sample()["mask"].repeat_interleave(2, 0).repeat_interleave(2, 1))


@pytest.mark.parametrize("flip", [RandomHorizontalFlip(p=1.0), RandomVerticalFlip(p=1.0)])
def test_flip__identical_on_image_mask_depth(flip):
    sample = coord_sample()
    out = flip(sample)
    assert not torch.equal(out["mask"], sample["mask"])
    assert_aligned(out)


def test_flip__p_zero_is_identity():
    sample = coord_sample()
    out = RandomHorizontalFlip(p=0.0)(sample)
    assert all(torch.equal(out[k], sample[k]) for k in sample)


@pytest.mark.parametrize(
    "transform",
    [
        RandomCrop((8, 10)),
        RandomCrop(20, padding=3),
        RandomResizedCrop((12, 16), scale=(0.2, 0.6)),
        CenterCrop((7, 9)),
        CenterCrop(20),
        PadToMultiple(7),
    ],
)
def test_crops__identical_geometry(transform):
    for seed in range(5):
        out = transform(coord_sample(), generator=torch.Generator().manual_seed(seed))
        assert out["mask"].shape == out["depth"].shape == out["pixel_values"].shape[-2:]
        assert_aligned(out)


def test_random_crop__padding_uses_ignore_and_invalid():
    out = RandomCrop(30, ignore_index=255)(coord_sample(), generator=torch.Generator().manual_seed(0))
    assert out["pixel_values"].shape == (3, 30, 30)
    pad = out["mask"] == 255
    assert pad.sum() == 30 * 30 - 12 * 16
    assert (out["depth"][pad] == 0).all() and (out["pixel_values"][:, pad] == 0).all()


def test_pad_to_multiple__centred():
    out = PadToMultiple(8)(coord_sample(12, 16))
    assert out["pixel_values"].shape == (3, 16, 16)
    assert (out["mask"][:2] == 255).all() and (out["mask"][-2:] == 255).all() and (out["mask"][2:14] != 255).all()


def test_random_transforms__reproducible_with_seed():
    t = Compose([RandomResizedCrop(8), RandomCrop(6, padding=2), RandomHorizontalFlip(), RandomVerticalFlip()])
    runs = [t(coord_sample(), generator=torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    outs = [t(coord_sample(), generator=torch.Generator().manual_seed(s))["mask"] for s in range(10)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])
    # a transform's own seed works without a generator
    a = RandomCrop(5, seed=3)(coord_sample())
    b = RandomCrop(5, seed=3)(coord_sample())
    assert torch.equal(a["mask"], b["mask"])


@pytest.mark.parametrize("task", ["classification", "segmentation", "depth"])
def test_train_eval_transform__shapes_and_determinism(task):
    sample = coord_sample(40, 60)
    if task == "classification":
        sample = {"pixel_values": sample["pixel_values"], "labels": sample["labels"]}
    out = train_transform(task, 32)(sample, generator=torch.Generator().manual_seed(0))
    assert out["pixel_values"].shape == (3, 32, 32)
    ev = eval_transform(task, 32)
    first, second = ev(sample), ev(sample)
    assert all(torch.equal(first[k], second[k]) for k in first)
    expected = (32, 32) if task == "classification" else (32, 48)  # short-side resize keeps aspect
    assert tuple(first["pixel_values"].shape[-2:]) == expected
    assert tuple(eval_transform(task, (20, 30))(sample)["pixel_values"].shape[-2:]) == (20, 30)


def test_transform_helpers__unknown_task():
    with pytest.raises(ValueError, match="Unknown task 'detection'"):
        train_transform("detection", 32)
    with pytest.raises(ValueError, match="Unknown task"):
        eval_transform("detection", 32)


def test_random_resized_crop__bad_scale():
    with pytest.raises(ValueError, match="scale"):
        RandomResizedCrop(8, scale=(0.5, 2.0))


def test_pad_to_multiple__bad_multiple():
    with pytest.raises(ValueError, match="multiple must be >= 1"):
        PadToMultiple(0)

"""Metrics: hand-computed values, slow reference implementations, evaluate modules, meters."""

import doctest
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_ssl_robust.metrics import (
    METRICS,
    AccuracyMeter,
    DepthMeter,
    MeanIoUMeter,
    accuracy_counts,
    confusion_matrix,
    depth_stats,
    load_metric,
    mean_iou_from_stats,
    metric_path,
    segmentation_stats,
)
from hf_ssl_robust.metrics.functional import arrow_maps, iter_chunks, remap_labels

K = 4
# Hand-worked example (ignore = 255 at [1, 2]):
#   class 0: pred {(0,0),(0,1)}, ref {(0,0)}            -> I=1, U=2, IoU 1/2
#   class 1: pred {(0,2),(1,0)}, ref {(0,1),(0,2),(1,0)} -> I=2, U=3, IoU 2/3
#   class 2: pred {(1,1)} (+ (1,2) ignored), ref {(1,1)} -> I=1, U=1, IoU 1
#   class 3: absent from both                           -> NaN, skipped
PRED = torch.tensor([[[0, 0, 1], [1, 2, 2]]])
REF = torch.tensor([[[0, 1, 1], [1, 2, 255]]])
IOU = [1 / 2, 2 / 3, 1.0, float("nan")]


def slow_stats(preds, refs, num_labels, ignore_index=255):
    """Obvious per-image, per-class numpy loops."""
    preds, refs = np.asarray(preds), np.asarray(refs)
    keys = ("intersection", "pred_area", "label_area")
    out = {key: np.zeros((len(preds), num_labels), dtype=np.int64) for key in keys}
    for i, (p, r) in enumerate(zip(preds, refs)):
        keep = r != ignore_index
        for c in range(num_labels):
            out["intersection"][i, c] = np.sum((p == c) & (r == c) & keep)
            out["pred_area"][i, c] = np.sum((p == c) & keep)
            out["label_area"][i, c] = np.sum((r == c) & keep)
    return out


def random_masks(n=6, h=9, w=7, k=K, seed=0, ignore_frac=0.2):
    rng = np.random.default_rng(seed)
    preds = rng.integers(0, k, (n, h, w))
    refs = rng.integers(0, k, (n, h, w))
    refs[rng.random((n, h, w)) < ignore_frac] = 255
    return torch.from_numpy(preds), torch.from_numpy(refs)


@pytest.fixture(scope="module")
def modules():
    return {name: load_metric(name) for name in METRICS}


# ----------------------------------------------------------------------------- accuracy


def test_accuracy_counts__labels_and_logits():
    refs = torch.tensor([0, 1, 2, 2])
    assert accuracy_counts(torch.tensor([0, 1, 1, 2]), refs).tolist() == [True, True, False, True]
    logits = torch.tensor([[5.0, 0, 0], [0, 1, 0], [0, 2, 1], [0, 0, 3]])
    assert accuracy_counts(logits, refs).tolist() == [True, True, False, True]


def test_accuracy_counts__shape_mismatch():
    with pytest.raises(ValueError, match="same|shape"):
        accuracy_counts(torch.tensor([0, 1]), torch.tensor([0, 1, 2]))


def test_accuracy_meter__batches_and_module(modules):
    meter = AccuracyMeter()
    meter.update(torch.tensor([0, 1]), torch.tensor([0, 1]))
    meter.update(torch.tensor([1, 2]), torch.tensor([2, 2]))
    assert meter.compute() == {"accuracy": 0.75} and meter.num_samples == 4
    assert modules["accuracy"].compute(predictions=[0, 1, 1, 2], references=[0, 1, 2, 2]) == {"accuracy": 0.75}


# ----------------------------------------------------------------------------- mean IoU


def test_segmentation_stats__hand_computed():
    stats = segmentation_stats(PRED, REF, K)
    assert stats["intersection"].tolist() == [[1, 2, 1, 0]]
    assert stats["pred_area"].tolist() == [[2, 2, 1, 0]]
    assert stats["label_area"].tolist() == [[1, 3, 1, 0]]
    union = stats["pred_area"][0] + stats["label_area"][0] - stats["intersection"][0]
    out = mean_iou_from_stats(stats["intersection"][0], union, stats["label_area"][0])
    np.testing.assert_allclose(out["per_category_iou"].numpy(), IOU)  # NaN == NaN here
    assert math.isclose(out["mean_iou"], (1 / 2 + 2 / 3 + 1) / 3)  # the absent class is not in the mean
    assert math.isclose(out["overall_accuracy"], 4 / 5)
    assert math.isclose(out["mean_accuracy"], (1 + 2 / 3 + 1) / 3)  # recall per class


def test_segmentation_stats__ignore_pixels_change_nothing():
    preds, refs = random_masks()
    other = torch.where(refs == 255, (preds + 1) % K, preds)
    a, b = segmentation_stats(preds, refs, K), segmentation_stats(other, refs, K)
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_segmentation_stats__empty_and_all_ignore():
    empty = segmentation_stats(torch.zeros(2, 0, 5, dtype=torch.long), torch.zeros(2, 0, 5, dtype=torch.long), K)
    assert all(v.shape == (2, K) and int(v.sum()) == 0 for v in empty.values())
    refs = torch.full((1, 3, 3), 255)
    stats = segmentation_stats(torch.zeros(1, 3, 3, dtype=torch.long), refs, K)
    assert all(int(v.sum()) == 0 for v in stats.values())
    meter = MeanIoUMeter(K)
    meter.update(torch.zeros(1, 3, 3, dtype=torch.long), refs)
    assert all(math.isnan(v) for v in meter.compute().values())
    meter.update(PRED, REF)  # an all-ignore image contributes nothing
    assert math.isclose(meter.compute()["mean_iou"], (1 / 2 + 2 / 3 + 1) / 3)


def test_segmentation_stats__matches_numpy_loops():
    preds, refs = random_masks(n=5, h=13, w=11, k=6, seed=3)
    fast, slow = segmentation_stats(preds, refs, 6), slow_stats(preds, refs, 6)
    for key in slow:
        np.testing.assert_array_equal(fast[key].numpy(), slow[key])
    conf = confusion_matrix(preds, refs, 6)
    np.testing.assert_array_equal(conf.diagonal().numpy(), slow["intersection"].sum(0))
    np.testing.assert_array_equal(conf.sum(0).numpy(), slow["pred_area"].sum(0))
    np.testing.assert_array_equal(conf.sum(1).numpy(), slow["label_area"].sum(0))


def test_segmentation_stats__bad_labels():
    with pytest.raises(ValueError, match=r"references must lie in \[0, 4\).*\[7\]"):
        segmentation_stats(torch.zeros(1, 2, 2, dtype=torch.long), torch.tensor([[[0, 7], [1, 255]]]), K)
    with pytest.raises(ValueError, match=r"predictions must lie in \[0, 4\)"):
        segmentation_stats(torch.tensor([[[0, -1], [1, 2]]]), torch.zeros(1, 2, 2, dtype=torch.long), K)
    with pytest.raises(ValueError, match="integer class ids"):
        segmentation_stats(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), K)
    with pytest.raises(ValueError, match="shape"):
        segmentation_stats(torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 3, dtype=torch.long), K)


def test_mean_iou_meter__batches_equal_one_batch():
    preds, refs = random_masks(n=7, seed=1)
    whole, parts = MeanIoUMeter(K), MeanIoUMeter(K)
    whole.update(preds, refs)
    for p, r in zip(preds.split(3), refs.split(3)):
        parts.update(p, r)
    assert all(torch.equal(whole.totals[k], parts.totals[k]) for k in whole.totals)
    assert whole.compute() == parts.compute() and parts.num_samples == 7
    # gather receives the per-image stats
    seen = []
    MeanIoUMeter(K).update(preds, refs, gather=lambda s: seen.append(s["intersection"].shape) or s)
    assert seen == [(7, K)]


def test_mean_iou_module__equals_functional(modules):
    preds, refs = random_masks(n=5, seed=2)
    meter = MeanIoUMeter(K)
    meter.update(preds, refs)
    out = modules["mean_iou"].compute(predictions=list(preds.numpy()), references=list(refs.numpy()), num_labels=K)
    assert out["mean_iou"] == pytest.approx(meter.compute()["mean_iou"])
    assert out["overall_accuracy"] == pytest.approx(meter.compute()["overall_accuracy"])
    np.testing.assert_allclose(out["per_category_iou"], meter.per_category_iou().numpy())
    hand = modules["mean_iou"].compute(predictions=[PRED[0].numpy()], references=[REF[0].numpy()], num_labels=K)
    np.testing.assert_allclose(hand["per_category_iou"], IOU)


# The documented example of the canonical `mean_iou` module (huggingface/evaluate,
# metrics/mean_iou): its inputs and printed outputs, reproduced here.
CANONICAL_PREDS = [np.array([[1, 2], [3, 4], [5, 255]]), np.array([[2, 7], [9, 2], [3, 6]]),
                   np.array([[2, 2, 3], [8, 2, 4], [3, 255, 2]])]
CANONICAL_REFS = [np.array([[0, 3], [5, 4], [6, 255]]), np.array([[1, 7], [9, 2], [3, 6]]),
                  np.array([[1, 2, 2], [8, 2, 1], [3, 255, 1]])]
CANONICAL_KEYS = ["mean_iou", "mean_accuracy", "overall_accuracy", "per_category_iou", "per_category_accuracy"]


def test_mean_iou_module__canonical_documented_example(modules):
    out = modules["mean_iou"].compute(predictions=CANONICAL_PREDS, references=CANONICAL_REFS, num_labels=10,
                                      ignore_index=255, reduce_labels=False)
    assert list(out) == CANONICAL_KEYS
    assert out["mean_iou"] == pytest.approx(0.47750000000000004, abs=1e-15)
    assert out["mean_accuracy"] == pytest.approx(0.5916666666666666, abs=1e-15)
    assert out["overall_accuracy"] == pytest.approx(0.5263157894736842, abs=1e-15)  # 10 / 19 counted pixels
    np.testing.assert_allclose(out["per_category_iou"], [0, 0, 0.375, 0.4, 0.5, 0, 0.5, 1, 1, 1], rtol=0, atol=1e-15)
    np.testing.assert_allclose(out["per_category_accuracy"], [0, 0, 0.75, 2 / 3, 1, 0, 0.5, 1, 1, 1], rtol=0, atol=1e-15)


def test_mean_iou_module__hand_computed_single_map_and_nan_to_num(modules):
    # The canonical card's one-map example (it prints no numbers; these are worked by hand).
    # Counted pixels: 8 (one ignored). Class 1: I 0, U 3; class 2: I 2, U 5, recall 2/3; class 3:
    # I 1, U 2; class 4: I 0, U 1 (never referenced: recall NaN); class 8: I 1, U 1; classes 0, 5,
    # 6, 7, 9 appear nowhere: NaN, outside both means.
    pred, ref = CANONICAL_PREDS[2], CANONICAL_REFS[2]
    out = modules["mean_iou"].compute(predictions=[pred], references=[ref], num_labels=10, ignore_index=255)
    nan = float("nan")
    np.testing.assert_allclose(out["per_category_iou"], [nan, 0, 0.4, 0.5, 0, nan, nan, nan, 1, nan], atol=1e-15)
    np.testing.assert_allclose(out["per_category_accuracy"], [nan, 0, 2 / 3, 1, nan, nan, nan, nan, 1, nan], atol=1e-15)
    assert out["mean_iou"] == pytest.approx((0 + 0.4 + 0.5 + 0 + 1) / 5)
    assert out["mean_accuracy"] == pytest.approx((0 + 2 / 3 + 1 + 1) / 4)
    assert out["overall_accuracy"] == 4 / 8
    filled = modules["mean_iou"].compute(predictions=[pred], references=[ref], num_labels=10, nan_to_num=-1)
    np.testing.assert_array_equal(filled["per_category_iou"][[0, 5, 6, 7, 9]], -1)
    np.testing.assert_array_equal(filled["per_category_accuracy"][[0, 4, 5, 6, 7, 9]], -1)
    assert filled["mean_iou"] == pytest.approx(out["mean_iou"])  # the means skip NaN before filling
    assert not any(np.isnan(v).any() for v in filled.values())


def test_mean_iou_module__nan_to_num_fills_an_empty_split(modules):
    out = modules["mean_iou"].compute(predictions=[[[1, 1]]], references=[[[255, 255]]], num_labels=2, nan_to_num=0)
    assert out["mean_iou"] == 0.0 and out["overall_accuracy"] == 0.0 and isinstance(out["mean_iou"], float)
    plain = modules["mean_iou"].compute(predictions=[[[1, 1]]], references=[[[255, 255]]], num_labels=2)
    assert math.isnan(plain["mean_iou"]) and np.isnan(plain["per_category_iou"]).all()


def test_mean_iou_module__reduce_labels(modules):
    # 0 -> 255 (ignored), 1 -> 0, 2 -> 1, 255 stays 255
    assert remap_labels(torch.tensor([0, 1, 2, 255]), reduce_labels=True).tolist() == [255, 0, 1, 255]
    out = modules["mean_iou"].compute(predictions=[[[0, 0, 1, 1]]], references=[[[0, 1, 2, 255]]], num_labels=2,
                                      reduce_labels=True)
    assert out["mean_iou"] == 1.0 and out["overall_accuracy"] == 1.0  # only the two middle pixels count
    # Unreduced, the same references hold id 2 for a 2-class problem: a clear error, not a silent drop.
    with pytest.raises(ValueError, match=r"references must lie in \[0, 2\).*\[2\]"):
        modules["mean_iou"].compute(predictions=[[[0, 0, 1, 1]]], references=[[[0, 1, 2, 255]]], num_labels=2)
    with pytest.raises(ValueError, match="pass ignore_index=255"):
        modules["mean_iou"].compute(predictions=[[[0]]], references=[[[1]]], num_labels=2, reduce_labels=True,
                                    ignore_index=-1)


def test_mean_iou_module__label_map_reads_original_ids(modules):
    swap = {1: 2, 2: 1}  # applied one after the other, it would send both ids to 1
    assert remap_labels(torch.tensor([[1, 2, 0, 3]]), swap).tolist() == [[2, 1, 0, 3]]
    out = modules["mean_iou"].compute(predictions=[[[2, 1, 0]]], references=[[[1, 2, 0]]], num_labels=3, label_map=swap)
    assert out["mean_iou"] == 1.0
    json_style = modules["mean_iou"].compute(predictions=[[[2, 1, 0]]], references=[[[1, 2, 0]]], num_labels=3,
                                             label_map={"1": "2", "2": "1"})
    assert json_style["mean_iou"] == 1.0
    # label_map runs before reduce_labels: 5 -> 0 -> background (ignored)
    both = remap_labels(torch.tensor([5, 1]), {5: 0}, reduce_labels=True)
    assert both.tolist() == [255, 0]
    with pytest.raises(ValueError, match="label_map must map integer class ids"):
        remap_labels(torch.tensor([1]), {"one": 2})


def test_mean_iou_module__ignore_index(modules):
    # ignore_index=0: the first column counts nowhere, whatever is predicted there (even 99)
    pred, ref = [[[99, 1], [99, 0]]], [[[0, 1], [0, 1]]]
    out = modules["mean_iou"].compute(predictions=pred, references=ref, num_labels=2, ignore_index=0)
    np.testing.assert_allclose(out["per_category_iou"], [0.0, 0.5])  # class 1: I 1, U 2; class 0: predicted once
    assert out["overall_accuracy"] == 0.5
    # a prediction out of range at a counted pixel is an error (the canonical module drops it silently)
    with pytest.raises(ValueError, match=r"predictions must lie in \[0, 2\), found \[99\]"):
        modules["mean_iou"].compute(predictions=pred, references=ref, num_labels=2, ignore_index=255)
    with pytest.raises(ValueError, match="num_labels must be a positive integer"):
        modules["mean_iou"].compute(predictions=pred, references=ref, num_labels=None)


def test_mean_iou_module__add_batch_and_mixed_sizes(modules):
    metric = modules["mean_iou"]
    small = (PRED[0].numpy(), REF[0].numpy())
    big = tuple(x[0].numpy() for x in random_masks(n=1, h=5, w=6, seed=4))
    metric.add_batch(predictions=[small[0]], references=[small[1]])
    metric.add_batch(predictions=[big[0]], references=[big[1]])
    out = metric.compute(num_labels=K)
    meter = MeanIoUMeter(K)
    meter.update(*map(torch.from_numpy, small))
    meter.update(*map(torch.from_numpy, big))
    assert out["mean_iou"] == pytest.approx(meter.compute()["mean_iou"])


def test_mean_iou__big_case_runs(modules):
    # 150 classes, 64 masks of 512x512 (ADE20K-like): one chunked bincount, well under a second
    g = torch.Generator().manual_seed(0)
    preds = torch.randint(0, 150, (64, 512, 512), generator=g)
    refs = torch.randint(0, 151, (64, 512, 512), generator=g).to(torch.uint8)
    refs[refs == 150] = 255
    meter = MeanIoUMeter(150)
    meter.update(preds, refs)
    assert 0 < meter.compute()["mean_iou"] < 0.05
    # the evaluate module on a quarter of it (its Arrow cache round trip dominates the time)
    out = modules["mean_iou"].compute(predictions=preds[:16].numpy(), references=refs[:16].numpy(), num_labels=150)
    part = MeanIoUMeter(150)
    part.update(preds[:16], refs[:16])
    assert out["per_category_iou"].shape == (150,) and out["mean_iou"] == pytest.approx(part.compute()["mean_iou"])


def test_iter_chunks__bounded_and_padded():
    maps = [np.ones((2, 3)), np.ones((3, 2)), np.ones((2, 3))]
    chunks = list(iter_chunks(maps, maps, fill=float("nan"), chunk_pixels=12))
    assert [tuple(p.shape) for p, _ in chunks] == [(2, 3, 3), (1, 2, 3)]
    assert int(torch.isnan(chunks[0][1]).sum()) == 6  # 18 padded pixels - 12 real ones
    flat = list(iter_chunks(maps, maps, fill=None, chunk_pixels=12))
    assert tuple(flat[0][0].shape) == (1, 1, 12)


def test_arrow_maps__zero_copy_views():
    pa = pytest.importorskip("pyarrow")
    col = pa.chunked_array([pa.array([[[1, 2, 3], [4, 5, 6]], [], [[7], [8]]], type=pa.list_(pa.list_(pa.int32())))])
    maps = arrow_maps(col)
    assert [m.shape for m in maps] == [(2, 3), (0, 0), (2, 1)]
    assert maps[2].ravel().tolist() == [7, 8]


# ----------------------------------------------------------------------------- depth


def test_depth__rmse_per_image_then_mean():
    refs = torch.full((2, 2, 2), 2.0)
    preds = refs.clone()
    preds[1] += 2.0  # image 0: error 0, image 1: error 2 everywhere
    stats = depth_stats(preds, refs)
    assert stats["rmse"].tolist() == [0.0, 2.0]
    meter = DepthMeter()
    meter.update(preds, refs)
    assert meter.compute()["rmse"] == pytest.approx(1.0)  # mean of per-image RMSEs ...
    assert meter.compute()["rmse"] != pytest.approx(math.sqrt(2.0))  # ... not the global RMSE


def test_depth__mask_from_reference_only():
    refs = torch.tensor([[[1.0, 0.0], [11.0, float("nan")]]])  # only (0, 0) is valid (0 < d <= 10)
    a = depth_stats(torch.tensor([[[2.0, 0.0], [0.0, 0.0]]]), refs)
    b = depth_stats(torch.tensor([[[2.0, 50.0], [1e-9, 3.0]]]), refs)  # garbage off the mask
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert a["num_valid"].tolist() == [1] and a["rmse"].item() == 1.0 and a["delta1"].item() == 0.0
    # bounds: min_depth exclusive, max_depth inclusive
    edge = depth_stats(torch.ones(1, 1, 3), torch.tensor([[[0.5, 10.0, 10.5]]]), min_depth=0.5, max_depth=10.0)
    assert edge["num_valid"].tolist() == [1]


def test_depth__against_numpy_formulas():
    rng = np.random.default_rng(0)
    refs = rng.uniform(0.0, 12.0, (3, 6, 5))
    preds = np.abs(refs + rng.normal(0, 1.0, refs.shape)) + 1e-4
    preds[0, 0, 0] = 0.0  # clamped to the floor for log / ratio metrics
    stats = depth_stats(torch.from_numpy(preds), torch.from_numpy(refs))
    for i in range(3):
        keep = (refs[i] > 0) & (refs[i] <= 10)
        p, d = preds[i][keep], refs[i][keep]
        pc = np.maximum(p, 1e-3)
        expect = {
            "rmse": np.sqrt(np.mean((p - d) ** 2)),
            "abs_rel": np.mean(np.abs(p - d) / d),
            "sq_rel": np.mean((p - d) ** 2 / d),
            "log10": np.mean(np.abs(np.log10(pc) - np.log10(d))),
            "rmse_log": np.sqrt(np.mean((np.log(pc) - np.log(d)) ** 2)),
            "delta1": np.mean(np.maximum(pc / d, d / pc) < 1.25),
            "delta2": np.mean(np.maximum(pc / d, d / pc) < 1.25**2),
            "delta3": np.mean(np.maximum(pc / d, d / pc) < 1.25**3),
        }
        for key, value in expect.items():
            assert stats[key][i].item() == pytest.approx(value, rel=1e-9), key


def test_depth__nan_prediction_raises():
    preds = torch.ones(1, 2, 2)
    preds[0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        depth_stats(preds, torch.ones(1, 2, 2))
    with pytest.raises(ValueError, match="max_depth > min_depth"):
        depth_stats(torch.ones(1, 2, 2), torch.ones(1, 2, 2), min_depth=5, max_depth=1)


def test_depth__image_without_valid_pixel_is_skipped(modules):
    refs = torch.stack([torch.full((2, 2), 2.0), torch.zeros(2, 2)])  # image 1: no valid pixel
    preds = torch.full((2, 2, 2), 3.0)
    stats = depth_stats(preds, refs)
    assert math.isnan(stats["rmse"][1]) and stats["num_valid"].tolist() == [4, 0]
    meter = DepthMeter()
    meter.update(preds, refs)
    out = meter.compute()
    assert out["rmse"] == 1.0 and out["num_scored"] == 1 and meter.num_samples == 2
    module_out = modules["depth"].compute(predictions=list(preds.numpy()), references=list(refs.numpy()))
    assert module_out == pytest.approx(out)


def test_depth_module__equals_functional(modules):
    g = torch.Generator().manual_seed(0)
    refs = torch.rand(4, 6, 7, generator=g) * 12
    preds = refs + torch.rand(4, 6, 7, generator=g)
    meter = DepthMeter(max_depth=8.0)
    meter.update(preds, refs)
    out = modules["depth"].compute(predictions=list(preds.numpy()), references=list(refs.numpy()), max_depth=8.0)
    assert out == pytest.approx(meter.compute(), rel=1e-5)  # float32 storage in the module
    assert {"rmse", "abs_rel", "delta1"} <= set(out)


# ----------------------------------------------------------------------------- loading


def test_load_metric__unknown_name():
    with pytest.raises(ValueError, match="accuracy, mean_iou, depth"):
        load_metric("miou")


def test_load_metric__never_touches_the_network(monkeypatch, modules):
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    for name in METRICS:
        assert type(load_metric(name)).__name__ == type(modules[name]).__name__


@pytest.mark.parametrize("name", METRICS)
def test_metric_module__loads_by_path_with_citation(name):
    import evaluate

    module = evaluate.load(metric_path(name))  # what load_metric does; a local folder, never the Hub
    assert module.name == name and "2407.12588" in module.citation
    assert "https://arxiv.org/abs/2407.12588" in module.info.reference_urls
    if name == "mean_iou":
        assert "everingham2010pascal" in module.citation
    if name == "depth":
        assert "eigen2014depth" in module.citation


@pytest.mark.parametrize("name", METRICS)
def test_metric_card__header_parses_and_examples_run(name):
    from evaluate.utils import parse_readme
    from huggingface_hub import metadata_load

    card = Path(metric_path(name)) / "README.md"
    meta = metadata_load(card)  # the YAML block the Hub reads
    assert {"evaluate", "metric"} <= set(meta["tags"]) and meta["title"] and len(meta["description"]) > 50
    body = parse_readme(card)  # what evaluate's widget shows: the header stripped
    assert body.lstrip().startswith("# Metric Card for") and "---" not in body.splitlines()[0]
    assert "2407.12588" in body
    # Every `>>>` example in the card runs and prints what the card says.
    test = doctest.DocTestParser().get_doctest(card.read_text(), {}, f"{name}/README.md", str(card), 0)
    assert len(test.examples) >= 3
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    assert runner.summarize(verbose=False).failed == 0


@pytest.mark.parametrize(
    "predictions, match",
    [([0.7, 1, 1, 2], r"integer class ids, got float64 values such as 0\.7"), ([[0.1, 0.9]] * 4, r"shape \[4, 2\].*argmax")],
)
def test_accuracy_module__refuses_scores_instead_of_truncating(predictions, match):
    metric = load_metric("accuracy")
    with pytest.raises(ValueError, match=match):
        metric.compute(predictions=predictions, references=[0, 1, 2, 2])
    with pytest.raises(ValueError, match="integer class ids"):
        metric.add(prediction=0.5, reference=0)
    assert metric.compute(predictions=[0.0, 1.0, 1.0, 2.0], references=[0, 1, 2, 2]) == {"accuracy": 0.75}  # whole floats lose nothing
    assert metric.compute(predictions=torch.tensor([0, 1]), references=torch.tensor([0, 0])) == {"accuracy": 0.5}

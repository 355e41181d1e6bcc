import math

import pytest
import torch

from hf_ssl_robust.metrics import AccuracyMeter, DepthMeter, MeanIoUMeter
from hf_ssl_robust.results import load_records, markdown_tables
from hf_ssl_robust.uncertainty import (
    NOT_SEPARATED_NOTE,
    add_intervals,
    bootstrap_interval,
    half_width,
    interval_fields,
    resample_indices,
    resampled_metric,
)


def _bernoulli(n, p=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"correct": (torch.rand(n, generator=g) < p).long()}


def _seg_meter(n=24, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    ref = torch.randint(k, (n, 8, 8), generator=g)
    pred = torch.where(torch.rand(n, 8, 8, generator=g) < 0.6, ref, torch.randint(k, (n, 8, 8), generator=g))
    meter = MeanIoUMeter(num_labels=k)
    for i in range(0, n, 5):  # several updates: the per-image rows are concatenated in order
        meter.update(pred[i : i + 5], ref[i : i + 5])
    return meter


def _depth_meter(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    ref = torch.rand(n, 6, 6, generator=g) * 5 + 0.5
    ref[3] = 0.0  # an image with no valid pixel: skipped by the metric and by the bootstrap
    meter = DepthMeter(max_depth=10.0)
    meter.update(ref + torch.randn(n, 6, 6, generator=g), ref)
    return meter


@pytest.mark.parametrize("make,metrics", [
    (lambda: _seg_meter(), ["mean_iou", "mean_accuracy", "overall_accuracy"]),
    (lambda: _depth_meter(), ["rmse", "abs_rel", "delta1"]),
])
def test_bootstrap_interval__contains_the_meters_point_estimate(make, metrics):
    meter = make()
    stats, values = meter.per_image(), meter.compute()
    for metric in metrics:
        n = next(iter(stats.values())).shape[0]
        everyone = resampled_metric(stats, metric, torch.arange(n).view(1, -1))[0]  # the split itself
        assert float(everyone) == pytest.approx(values[metric], rel=1e-9)
        low, high = bootstrap_interval(stats, metric)
        assert low < values[metric] < high, metric


def test_bootstrap_interval__accuracy_contains_the_estimate_and_narrows_as_one_over_sqrt_n():
    widths = {}
    for n in (64, 1024):
        stats = _bernoulli(n)
        low, high = bootstrap_interval(stats, "accuracy", seed=0)
        assert low <= stats["correct"].float().mean().item() <= high
        widths[n] = high - low
    ratio = widths[64] / widths[1024]  # sqrt(1024 / 64) = 4
    assert 3.0 < ratio < 5.3, widths
    assert widths[1024] == pytest.approx(2 * 1.96 * math.sqrt(0.25 / 1024), rel=0.2)  # the normal approximation


def test_bootstrap_interval__deterministic_for_the_seed():
    stats = _bernoulli(100)
    assert bootstrap_interval(stats, "accuracy", seed=3) == bootstrap_interval(stats, "accuracy", seed=3)
    assert bootstrap_interval(stats, "accuracy", seed=3) != bootstrap_interval(stats, "accuracy", seed=4)
    assert torch.equal(resample_indices(10, 7, seed=1), resample_indices(10, 7, seed=1))


def test_resampled_metric__mean_iou_equals_a_brute_force_loop():
    # 4 images x 3 classes; class 2 appears in image 3 only, so resamples without image 3 skip it
    inter = torch.tensor([[5, 1, 0], [2, 3, 0], [0, 4, 0], [1, 0, 2]])
    pred = torch.tensor([[6, 3, 0], [4, 3, 0], [1, 6, 0], [2, 1, 3]])
    label = torch.tensor([[7, 1, 0], [2, 5, 0], [0, 5, 0], [1, 0, 4]])
    stats = {"intersection": inter, "pred_area": pred, "label_area": label}
    indices = torch.tensor([[0, 1, 2, 3], [0, 0, 0, 0], [3, 3, 1, 2], [1, 2, 1, 0], [2, 2, 2, 2]])

    def brute(rows, metric):
        i = [sum(int(inter[r, c]) for r in rows) for c in range(3)]
        p = [sum(int(pred[r, c]) for r in rows) for c in range(3)]
        lab = [sum(int(label[r, c]) for r in rows) for c in range(3)]
        if metric == "overall_accuracy":
            return sum(i) / sum(lab)
        den = [p[c] + lab[c] - i[c] for c in range(3)] if metric == "mean_iou" else lab
        present = [i[c] / den[c] for c in range(3) if den[c] > 0]
        return sum(present) / len(present)

    for metric in ("mean_iou", "mean_accuracy", "overall_accuracy"):
        got = resampled_metric(stats, metric, indices).tolist()
        assert got == pytest.approx([brute(row.tolist(), metric) for row in indices], rel=1e-12), metric


def test_resampled_metric__depth_averages_the_valid_resampled_images():
    stats = {"rmse": torch.tensor([1.0, 2.0, float("nan"), 4.0], dtype=torch.float64),
             "valid": torch.tensor([True, True, False, True])}
    indices = torch.tensor([[0, 0, 1, 3], [2, 2, 2, 2], [2, 1, 3, 3]])
    got = resampled_metric(stats, "rmse", indices)
    assert got[0] == pytest.approx(2.0) and math.isnan(got[1]) and got[2] == pytest.approx(10 / 3)


@pytest.mark.parametrize("call,match", [
    (lambda: bootstrap_interval({"correct": torch.tensor([1, 0])}, "mean_iou"), "No per-image statistics for metric 'mean_iou'"),
    (lambda: bootstrap_interval({"correct": torch.zeros(0, dtype=torch.long)}, "accuracy"), "at least one image"),
    (lambda: bootstrap_interval(_bernoulli(8), "accuracy", num_resamples=0), "num_resamples must be >= 1"),
    (lambda: bootstrap_interval(_bernoulli(8), "accuracy", level=95), r"level must be in \(0, 1\)"),
    (lambda: bootstrap_interval({"rmse": torch.ones(3), "valid": torch.ones(4, dtype=torch.bool)}, "rmse"), "one row per image"),
])
def test_bootstrap_interval__bad_input_is_refused(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_add_intervals__pairs_clean_and_attacked_and_bounded_worst_takes_its_candidate():
    clean, same, hurt = AccuracyMeter(), AccuracyMeter(), AccuracyMeter()
    labels = torch.arange(64) % 2
    clean.update(labels, labels)  # all correct
    same.update(labels, labels)  # an attack that changes nothing (eps = 0)
    hurt.update(1 - labels, labels)  # all wrong
    results = {"none": clean.compute(), "eps0": same.compute(), "pgd": hurt.compute(), "worst": {"accuracy": 0.0}}
    stats = {"none": clean.per_image(), "eps0": same.per_image(), "pgd": hurt.per_image(), "worst": same.per_image()}
    add_intervals(results, stats, seed=0)
    assert results["none"]["ci95"]["accuracy"] == [1.0, 1.0] and "separated_from_clean" not in results["none"]
    assert results["eps0"]["separated_from_clean"] == {"accuracy": False}
    assert results["pgd"]["separated_from_clean"] == {"accuracy": True}
    assert results["worst"]["ci95"] == results["pgd"]["ci95"]  # its value (0.0) came from pgd, not from its own pick
    assert interval_fields(results["eps0"], "accuracy") == {"ci95": [1.0, 1.0], "separated_from_clean": False}
    assert interval_fields({"accuracy": 0.5}, "accuracy") == {}  # no interval: no field


def _record(attack, value, **kw):
    return dict(encoder="enc", task="classification", dataset="shapes", attack=attack, eps=0.0 if attack == "none" else 8 / 255,
                steps=20, metric="accuracy", value=value, num_samples=64, **{"flags": [], **kw})


def test_markdown_tables__interval_as_plus_minus_and_the_not_separated_note():
    records = [_record("none", 0.48, ci95=[0.42, 0.54]),
               _record("embed", 0.45, ci95=[0.39, 0.51], separated_from_clean=False, flags=["not_converged"]),
               _record("pgd", 0.05, ci95=[0.0, 0.1], separated_from_clean=True),
               dict(_record("none", 1.2345, ci95=[1.2, 1.3]), task="depth", metric="rmse")]
    md = markdown_tables(records)
    assert "| shapes | enc | 0.48 ± 0.06 | 0.45 ± 0.06 ⚠N ≈ | 0.05 ± 0.05 |" in md
    assert "| shapes | enc | 1.234 ± 0.050 |" in md  # rounded like the value
    assert NOT_SEPARATED_NOTE in md and "95 % bootstrap interval" in md and "`not_converged`" in md
    assert NOT_SEPARATED_NOTE not in markdown_tables(records[:1] + records[2:])  # every attack separated: no note
    assert half_width(None) is None and half_width([float("nan"), 1.0]) is None


def test_markdown_tables__old_results_without_intervals_render_without_plus_minus(tmp_path):
    import json

    path = tmp_path / "results.json"
    path.write_text(json.dumps([_record("none", 0.48), _record("pgd", 0.05)]))
    md = markdown_tables(load_records(path))
    assert "| shapes | enc | 0.48 | 0.05 |" in md and "±" not in md and "≈" not in md


def test_run_benchmark__every_record_has_an_interval_and_eps_zero_is_not_separated(tiny_dinov2_path, tmp_path):
    from hf_ssl_robust.benchmark import BenchmarkConfig, run_benchmark

    cfg = BenchmarkConfig(encoders=[tiny_dinov2_path], output_dir=str(tmp_path), tasks=["classification", "segmentation"],
                          attacks=["embed", "pgd", "segpgd"], eps=["0", "8/255"], steps=2, max_eval_samples=8,
                          num_train_samples=32, head_epochs=1, image_size=32, batch_size=4, num_examples=0)
    records = run_benchmark(cfg)
    assert {r["encoder"] for r in records} >= {"prior"}  # the prior rows carry intervals too
    for r in records:
        low, high = r["ci95"]
        assert low <= high and (r["attack"] == "none") == ("separated_from_clean" not in r), r
    zero = [r for r in records if r["attack"] != "none" and r["eps"] == 0.0]
    assert zero and all(r["separated_from_clean"] is False for r in zero)  # eps = 0 changes nothing
    assert load_records(tmp_path / "results.json") == records
    md = (tmp_path / "results.md").read_text()
    assert " ± " in md and NOT_SEPARATED_NOTE in md


def test_markdown_tables__rows_of_a_results_dataset_show_the_interval_from_extra():
    """`sharing.py` keeps fields without a Parquet column in `extra` (JSON): the dataset card's tables read it there."""
    import json

    rows = [dict(_record("none", 0.48), extra=json.dumps({"ci95": [0.42, 0.54]})),
            dict(_record("pgd", 0.45), extra=json.dumps({"ci95": [0.39, 0.51], "separated_from_clean": False}))]
    assert "| shapes | enc | 0.48 ± 0.06 | 0.45 ± 0.06 ≈ |" in markdown_tables(rows)

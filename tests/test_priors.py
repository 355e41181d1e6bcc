"""Image-free priors: hand-computed values on tiny datasets, and their rows in the benchmark."""

import json
from types import SimpleNamespace

import pytest
import torch

from hf_ssl_robust.priors import fit_prior, score_prior
from hf_ssl_robust.tasks import get_task


def _spec(**kw):
    return SimpleNamespace(**{"num_classes": 3, "ignore_index": 255, "max_depth": 10.0, **kw})


def _data(key, values, size=(2, 2)):
    return [{"pixel_values": torch.zeros(3, *size), key: v} for v in values]


def test_fit_prior__majority_class_lowest_id_on_ties():
    task = get_task("classification")
    prior = fit_prior(task, _spec(), _data("labels", [torch.tensor(2), torch.tensor(1), torch.tensor(2), torch.tensor(1)]))
    assert int(prior.value) == 1  # tie between 1 and 2: the lowest id
    metrics = score_prior(prior, task, _spec(), _data("labels", [torch.tensor(1), torch.tensor(0), torch.tensor(1), torch.tensor(2)]))
    assert metrics == {"accuracy": 0.5, "num_samples": 4}


def test_fit_prior__per_pixel_class_prior_skips_ignored_pixels():
    task = get_task("segmentation")
    masks = [torch.tensor([[0, 1], [2, 255]]), torch.tensor([[0, 1], [1, 255]]), torch.tensor([[1, 1], [2, 2]])]
    prior = fit_prior(task, _spec(), _data("mask", masks))
    assert prior.value.tolist() == [[0, 1], [2, 2]]
    # Resized to a larger evaluation image by nearest neighbour.
    assert prior.predict(4, 4).tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2], [2, 2, 2, 2]]
    metrics = score_prior(prior, task, _spec(), _data("mask", [torch.tensor([[0, 1], [2, 2]])]))
    assert metrics["mean_iou"] == pytest.approx(1.0)


def test_fit_prior__per_pixel_mean_depth_over_valid_pixels():
    task = get_task("depth")
    nan = float("nan")
    depths = [torch.tensor([[1.0, 2.0], [0.0, 4.0]]), torch.tensor([[3.0, nan], [0.0, 20.0]])]
    prior = fit_prior(task, _spec(), _data("depth", depths))
    # (1+3)/2, only 2 valid, never valid -> the global mean of valid pixels (1+2+4+3)/4, 20 m is beyond max_depth
    torch.testing.assert_close(prior.value, torch.tensor([[2.0, 2.0], [2.5, 4.0]]))
    metrics = score_prior(prior, task, _spec(), _data("depth", [torch.tensor([[2.0, 2.0], [2.5, 4.0]])]))
    assert metrics["rmse"] == pytest.approx(0.0, abs=1e-6)


def test_benchmark__prior_rows_beside_the_encoders(tiny_dinov2_path, tmp_path):
    from hf_ssl_robust.benchmark import BenchmarkConfig, run_benchmark

    kw = dict(encoders=[tiny_dinov2_path], tasks=["classification", "depth"], attacks=["pgd", "depth_pgd"], steps=1,
              max_eval_samples=8, num_train_samples=32, head_epochs=1, image_size=32, batch_size=8, num_examples=0)
    records = run_benchmark(BenchmarkConfig(output_dir=str(tmp_path / "a"), **kw))
    priors = [r for r in records if r["encoder"] == "prior"]
    assert {(r["task"], r["attack"]) for r in priors} == {("classification", "none"), ("depth", "none")}
    assert all(r["num_samples"] == 8 for r in priors)
    md = (tmp_path / "a" / "results.md").read_text()
    assert "| shapes | prior |" in md and "per-pixel mean depth" in md
    assert json.loads((tmp_path / "a" / "run_info.json").read_text())["timings"]["priors_s"] >= 0
    none = run_benchmark(BenchmarkConfig(output_dir=str(tmp_path / "b"), priors="no", **kw))
    assert not [r for r in none if r["encoder"] == "prior"]
    with pytest.raises(ValueError, match="priors"):
        BenchmarkConfig(priors="maybe")

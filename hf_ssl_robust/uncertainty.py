"""95 % bootstrap intervals over images for every benchmark metric, from per-image statistics.

Method: the **percentile bootstrap over images**. The evaluation split's images are resampled with
replacement `num_resamples` times (seeded: one `[R, n]` index matrix from `torch.Generator(seed)`);
each resample's metric is recomputed exactly as the metric itself is defined, and the interval is
the `(1 − level)/2` and `(1 + level)/2` quantiles of those R values. Per-image statistics are what
the meters keep (`metrics.functional`), counts and values, never pixels:

* accuracy: per image, correct or not; a resample's accuracy is its share of correct images.
* mIoU (and mean / overall pixel accuracy): per image and class, intersection, predicted and
  reference areas. mIoU is a dataset-level ratio, so each resample **sums the intersections and
  unions of its images** and recomputes every class's IoU from those sums, then the mean over the
  classes whose resampled union is non-zero (as `mean_iou_from_stats` does for the split).
* depth (RMSE, AbsRel, δ1, ...): per image, the metric itself (RMSE in metres per image, the
  paper's convention) and whether the image has valid pixels; a resample averages its valid images.

Tables show an interval as `value ± half-width`, the half-width being half of `high − low` (the
percentile interval need not be symmetric around the value: `ci95` in results.json has both ends).

An attacked value is *separated from clean* when the paired bootstrap interval of the difference
(attacked − clean, on the same resampled images: clean and attacks share the index matrix) does
not contain 0; an attack that changes nothing (ε = 0) never is.

A resample draws `counts[r, i]` copies of image i (`counts` from the index matrix by `scatter_add`),
so resampled sums are one matrix product `counts @ stats` (`[R, n] @ [n, K]`), never a gathered
`[R, n, K]` tensor: 1000 resamples of 2000 ADE20K images × 150 classes stay small.

Example:
    >>> low, high = bootstrap_interval({"correct": torch.tensor([1, 0, 1, 1])}, "accuracy", seed=0)
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

import torch
from torch import Tensor

from .metrics.functional import DEPTH_METRICS

SEG_METRICS = ("mean_iou", "mean_accuracy", "overall_accuracy")
NUM_RESAMPLES = 1000
LEVEL = 0.95
NOT_SEPARATED_MARK = " ≈"
NOT_SEPARATED_NOTE = ("not separated from clean: the difference is within the 95 % intervals (the paired bootstrap "
                      "interval of attacked − clean over the same images contains 0); more images would tell")


def resample_indices(n: int, num_resamples: int = NUM_RESAMPLES, seed: int = 0) -> Tensor:
    """`[num_resamples, n]` int64 image indices drawn with replacement, the same for a given (n, seed)."""
    if n < 1:
        raise ValueError(f"The bootstrap needs at least one image, got n={n}.")
    if num_resamples < 1:
        raise ValueError(f"num_resamples must be >= 1, got {num_resamples}.")
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randint(n, (num_resamples, n), generator=generator)


def _num_images(stats: Mapping[str, Tensor]) -> int:
    sizes = {int(t.shape[0]) for t in stats.values()}
    if len(sizes) != 1:
        raise ValueError(f"Per-image statistics must all have one row per image, got row counts {sorted(sizes)}.")
    return sizes.pop()


def _kind(stats: Mapping[str, Tensor], metric: str) -> str:
    if metric == "accuracy" and "correct" in stats:
        return "accuracy"
    if metric in SEG_METRICS and {"intersection", "pred_area", "label_area"} <= set(stats):
        return "segmentation"
    if metric in DEPTH_METRICS and metric in stats and "valid" in stats:
        return "depth"
    raise ValueError(f"No per-image statistics for metric {metric!r} in {sorted(stats)}: accuracy needs `correct`, "
                     f"{'/'.join(SEG_METRICS)} need intersection/pred_area/label_area, depth metrics their values and `valid`.")


def resampled_metric(stats: Mapping[str, Tensor], metric: str, indices: Tensor) -> Tensor:
    """The metric of every resample, float64 `[R]` (NaN where a resample has nothing to score).

    Args:
        stats: per-image statistics (`AccuracyMeter.per_image()` and the like), each `[n, ...]`.
        metric: `accuracy`, `mean_iou` / `mean_accuracy` / `overall_accuracy`, or a depth metric.
        indices: `[R, n]` image indices of the resamples (`resample_indices`).
    """
    kind = _kind(stats, metric)
    n = _num_images(stats)
    counts = torch.zeros(indices.shape[0], n, dtype=torch.float64).scatter_add_(
        1, indices, torch.ones(indices.shape, dtype=torch.float64))  # [R, n] copies of each image

    def sums(t: Tensor) -> Tensor:  # [R, K] (or [R]) resampled sums of a per-image statistic
        t = torch.nan_to_num(t.detach().cpu().double(), nan=0.0)
        return counts @ t

    if kind == "accuracy":
        return sums(stats["correct"]) / n
    if kind == "depth":
        valid = stats["valid"].bool()
        scored = sums(valid.double())
        total = sums(torch.where(valid, stats[metric].double().cpu(), 0.0))
        return torch.where(scored > 0, total / scored.clamp(min=1), float("nan"))
    inter, pred, label = (sums(stats[k]) for k in ("intersection", "pred_area", "label_area"))
    if metric == "overall_accuracy":
        labelled = label.sum(1)
        return torch.where(labelled > 0, inter.sum(1) / labelled.clamp(min=1), float("nan"))
    denom = pred + label - inter if metric == "mean_iou" else label
    per_class = torch.where(denom > 0, inter / denom.clamp(min=1), float("nan"))  # [R, K]
    return per_class.nanmean(dim=1)  # classes absent from a resample are skipped, as for the split


def percentile_interval(draws: Tensor, level: float = LEVEL) -> tuple[float, float]:
    """The `(1 − level)/2` and `(1 + level)/2` quantiles of `draws` (NaN draws skipped; NaN when all are)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), e.g. 0.95, got {level}.")
    draws = draws.double()
    if bool(torch.isnan(draws).all()):
        return float("nan"), float("nan")
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    low, high = torch.nanquantile(draws, q).tolist()
    return low, high


def bootstrap_interval(stats: Mapping[str, Tensor], metric: str, num_resamples: int = NUM_RESAMPLES, seed: int = 0,
                       level: float = LEVEL) -> tuple[float, float]:
    """`(low, high)`: the percentile-bootstrap interval of `metric` over images (see the module docstring).

    Args:
        stats: per-image statistics of one evaluation (a meter's `per_image()`), one row per image.
        metric: the metric's name, as in results.json.
        num_resamples, seed: how many resamples, and the seed of their index matrix (same seed, same interval).
        level: coverage (0.95: the 2.5th and 97.5th percentiles).
    """
    indices = resample_indices(_num_images(stats), num_resamples, seed)
    return percentile_interval(resampled_metric(stats, metric, indices), level)


def half_width(interval) -> float | None:
    """Half of `high − low` (what tables show after ±); None for a missing or NaN interval."""
    if not interval or len(interval) != 2:
        return None
    low, high = (float(v) for v in interval)
    return None if math.isnan(low) or math.isnan(high) else (high - low) / 2


def add_intervals(results: dict[str, dict], stats: Mapping[str, Mapping[str, Tensor]], seed: int = 0,
                  num_resamples: int = NUM_RESAMPLES, level: float = LEVEL) -> None:
    """Add `ci95` (`{metric: [low, high]}`) to every entry of an evaluation's `results`, and to every
    attacked one `separated_from_clean` (`{metric: bool}`), in place.

    `results` is `evaluation.evaluate`'s output (`"none"`, each attack, maybe `"worst"`), `stats` the
    per-image statistics of the same names, every one over the same images in the same order, so that
    one index matrix pairs clean and attacked resamples. A `worst` metric that `bound_worst` replaced by
    a single candidate's value takes that candidate's interval.
    """
    n = _num_images(stats["none"])
    if n == 0:
        return
    indices = resample_indices(n, num_resamples, seed)
    draws: dict[str, dict[str, Tensor]] = {}
    for name, metrics in results.items():
        draws[name] = {}
        for metric, value in metrics.items():
            if not isinstance(value, float) or metric in ("num_samples", "num_scored"):
                continue
            try:
                _kind(stats[name], metric)
            except ValueError:
                continue  # a metric without per-image statistics gets no interval
            draws[name][metric] = resampled_metric(_source(name, metric, value, results, stats), metric, indices)
    for name, per_metric in draws.items():
        results[name]["ci95"] = {m: list(percentile_interval(d, level)) for m, d in per_metric.items()}
        if name != "none":
            results[name]["separated_from_clean"] = {
                m: _separated(d - draws["none"][m], level) for m, d in per_metric.items() if m in draws["none"]}


def _source(name, metric, value, results, stats) -> Mapping[str, Tensor]:
    """Whose per-image statistics give `results[name][metric]`: its own, unless `worst` was bounded by a candidate's."""
    own = stats[name]
    if name != "worst":
        return own
    picked = float(resampled_metric(own, metric, torch.arange(_num_images(own)).view(1, -1))[0])
    if math.isclose(picked, value, rel_tol=1e-9, abs_tol=1e-12):
        return own
    for other, metrics in results.items():
        if other != "worst" and other in stats and math.isclose(float(metrics.get(metric, math.nan)), value, rel_tol=1e-9, abs_tol=1e-12):
            return stats[other]
    return own


def _separated(diff: Tensor, level: float) -> bool:
    low, high = percentile_interval(diff, level)
    return not (math.isnan(low) or low <= 0.0 <= high)


def interval_fields(metrics: Mapping, metric: str) -> dict:
    """A record's interval fields for `metric` from an evaluation entry: `ci95` (`[low, high]`, left out
    when it is missing or NaN) and, for attacked entries, `separated_from_clean`."""
    out = {}
    interval = (metrics.get("ci95") or {}).get(metric)
    if half_width(interval) is not None:
        out["ci95"] = [float(v) for v in interval]
    separated = (metrics.get("separated_from_clean") or {}).get(metric)
    if separated is not None and "ci95" in out:
        out["separated_from_clean"] = bool(separated)
    return out


def _from_record(record: Mapping, key: str):
    """`record[key]`, or for a results dataset's row (`sharing.py`) the same key inside its `extra` JSON."""
    if key in record:
        return record[key]
    try:
        return json.loads(record.get("extra") or "{}").get(key)
    except (TypeError, ValueError, AttributeError):
        return None


def record_interval(record: Mapping) -> list[float] | None:
    """A record's `ci95` (`[low, high]`), None when it has none (results written before intervals)."""
    interval = _from_record(record, "ci95")
    return [float(v) for v in interval] if half_width(interval) is not None else None


def record_separated(record: Mapping) -> bool | None:
    """A record's `separated_from_clean` (None for clean records and results written before intervals)."""
    value = _from_record(record, "separated_from_clean")
    return None if value is None else bool(value)

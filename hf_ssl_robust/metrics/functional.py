"""Pure-torch metrics for the three tasks, and streaming meters that accumulate them.

Definitions (DESIGN §4 "Metrics"; reference-notes §8 for what the paper's code does):

* **Accuracy**: correct argmax predictions over the whole evaluation split.
* **mIoU**: per-class intersections and unions summed over the whole split, then
  ``IoU_c = ΣI_c / ΣU_c``, then the mean over classes whose union is non-zero (a class absent
  from both predictions and references is NaN and skipped). Pixels whose reference equals
  ``ignore_index`` count nowhere.
* **Depth**: valid pixels ``min_depth < ref <= max_depth`` (from the *reference only*, so clean
  and adversarial predictions are scored on the same pixels). RMSE in metres is computed per
  image, then averaged over images (the paper's convention, not a global RMSE); AbsRel, δ1 etc.
  likewise. An image without a valid pixel gets NaN and is skipped by the averages.

Per-sample statistics are what cross processes: ``accelerator.gather_for_metrics`` removes the
samples a distributed sampler duplicated to pad the last batch, which it cannot do for a summed
confusion matrix. Every meter therefore takes ``gather=accelerator.gather_for_metrics``.

Example:
    >>> meter = MeanIoUMeter(num_labels=150)
    >>> for batch in loader:
    ...     meter.update(logits.argmax(1), batch["label"], gather=accelerator.gather_for_metrics)
    >>> meter.compute()["mean_iou"]
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from typing import Callable

import numpy as np
import torch
from torch import Tensor

# BibTeX of the benchmark paper, which every metric module cites (some add the definition they follow).
PAPER_CITATION = """\
@misc{kowalczuk2024benchmarking,
  title         = {Benchmarking Robust Self-Supervised Learning Across Diverse Downstream Tasks},
  author        = {Kowalczuk, Antoni and Dubi{\\'n}ski, Jan and Ashari Ghomi, Atiyeh and Sui, Yi and Stein, George and Wu, Jiapeng and Cresswell, Jesse C. and Boenisch, Franziska and Dziedzic, Adam},
  year          = {2024},
  eprint        = {2407.12588},
  archivePrefix = {arXiv}
}
"""

Gather = Callable[[object], object]

SEG_STATS = ("intersection", "pred_area", "label_area")
REDUCED_BACKGROUND = 255  # what `reduce_labels` turns background 0 into (the canonical module's value)
DEPTH_METRICS = ("rmse", "abs_rel", "sq_rel", "log10", "rmse_log", "delta1", "delta2", "delta3")
_MAX_BINS = 1 << 25  # per bincount call in segmentation_stats: 32M int64 bins = 256 MB
CHUNK_PIXELS = 1 << 24  # iter_chunks: ~64 masks of 512x512, bounded int64 temporaries (~130 MB)


def _as_tensor(x, name: str) -> Tensor:
    if isinstance(x, Tensor):
        return x
    try:
        x = np.asarray(x)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a tensor or array-like, got {type(x).__name__}: {err}") from None
    if x.dtype in (np.uint16, np.uint32, np.uint64):  # torch has few kernels for these
        x = x.astype(np.int64)
    if x.dtype == object:
        raise ValueError(f"{name} must be a rectangular array; got ragged or object data (use iter_chunks).")
    if not x.flags.writeable:  # e.g. Arrow-backed: torch.from_numpy warns on read-only memory
        x = x.copy()
    return torch.from_numpy(x)


def _check_same_shape(preds: Tensor, refs: Tensor, ndim: int, what: str) -> None:
    if preds.shape != refs.shape or preds.dim() != ndim:
        raise ValueError(
            f"{what}: predictions and references must both have shape {'[B, H, W]' if ndim == 3 else '[B]'}, "
            f"got {tuple(preds.shape)} and {tuple(refs.shape)}."
        )


# ----------------------------------------------------------------------------- accuracy


def accuracy_counts(preds: Tensor, refs: Tensor) -> Tensor:
    """Which samples are classified correctly.

    Args:
        preds: class ids ``[B]`` or logits ``[B, K]`` (argmax taken over the last axis).
        refs: class ids ``[B]``.

    Returns:
        ``[B]`` bool tensor, True where the prediction equals the reference.
    """
    preds, refs = _as_tensor(preds, "predictions"), _as_tensor(refs, "references")
    if preds.dim() == 2 and refs.dim() == 1:
        preds = preds.argmax(dim=-1)
    _check_same_shape(preds, refs, 1, "accuracy")
    if preds.is_floating_point() or refs.is_floating_point():
        raise ValueError("accuracy: class ids must be integers; pass logits as [B, K] to take their argmax.")
    return preds == refs.to(preds.device)


# ----------------------------------------------------------------------------- segmentation


def _check_labels(preds: Tensor, refs: Tensor, num_labels: int, ignore_index: int | None) -> Tensor | None:
    """Validate class ids; return the mask of ignored pixels (None when no pixel is ignored)."""
    if num_labels < 1:
        raise ValueError(f"num_labels must be >= 1, got {num_labels}.")
    if preds.is_floating_point() or refs.is_floating_point():
        raise ValueError(
            "segmentation: predictions and references must be integer class ids (take the argmax of logits)."
        )
    ignored = None if ignore_index is None else refs == ignore_index
    if ignored is not None and not bool(ignored.any()):
        ignored = None
    if preds.numel() and (int(preds.min()) < 0 or int(preds.max()) >= num_labels):
        # Predictions at ignored pixels count nowhere, so any value is accepted there (the
        # canonical `evaluate` example predicts 255 where the reference is 255).
        bad_pred = (preds < 0) | (preds >= num_labels)
        if ignored is not None:
            bad_pred &= ~ignored
        if bool(bad_pred.any()):
            bad = torch.unique(preds[bad_pred])[:10].tolist()
            raise ValueError(f"segmentation: predictions must lie in [0, {num_labels}), found {bad}.")
    out_of_range = (refs < 0) | (refs >= num_labels)  # elementwise passes: no boolean gather on the hot path
    if ignored is not None:
        out_of_range &= ~ignored
    if bool(out_of_range.any()):
        bad = torch.unique(refs[out_of_range])[:10].tolist()
        raise ValueError(
            f"segmentation: references must lie in [0, {num_labels}) or equal ignore_index={ignore_index}, "
            f"found {bad}. Map void labels to the ignore index or fix num_labels."
        )
    return ignored


def _confusion(preds: Tensor, refs: Tensor, num_labels: int, ignore_index: int | None) -> Tensor:
    """Per-image confusion matrices ``[B, K, K]`` (rows: reference, columns: prediction)."""
    _check_same_shape(preds, refs, 3, "segmentation")
    ignored = _check_labels(preds, refs, num_labels, ignore_index)
    b, k = preds.shape[0], num_labels
    # Flat bin of each pixel: image * K² + ref * K + pred, so one bincount gives every image's
    # matrix. Ignored pixels go to one extra bin that is dropped (cheaper than a boolean gather).
    dtype = torch.int32 if b * k * k < 2**31 - 1 else torch.long  # int32: half the memory traffic
    index = refs.to(dtype) * k  # [B, H, W], a fresh tensor: the updates below are in place
    index += preds
    index += torch.arange(b, device=preds.device, dtype=dtype).view(b, 1, 1) * (k * k)
    if ignored is not None:
        index.masked_fill_(ignored, b * k * k)
    counts = torch.bincount(index.reshape(-1), minlength=b * k * k + 1)
    return counts[: b * k * k].view(b, k, k)


def segmentation_stats(
    preds: Tensor, refs: Tensor, num_labels: int, ignore_index: int | None = 255
) -> dict[str, Tensor]:
    """Per-image, per-class pixel counts for mIoU.

    Args:
        preds: predicted class ids ``[B, H, W]`` in ``[0, num_labels)`` (checked on every pixel).
        refs: reference class ids ``[B, H, W]`` in ``[0, num_labels)`` or ``ignore_index``.
        num_labels: number of classes K.
        ignore_index: reference value of pixels that count nowhere (None: none ignored).

    Returns:
        ``intersection``, ``pred_area``, ``label_area``: int64 ``[B, K]``. The union is
        ``pred_area + label_area − intersection``.
    """
    preds, refs = _as_tensor(preds, "predictions"), _as_tensor(refs, "references")
    refs = refs.to(preds.device)
    if preds.dim() == 2 and refs.dim() == 2:
        preds, refs = preds.unsqueeze(0), refs.unsqueeze(0)
    _check_same_shape(preds, refs, 3, "segmentation")
    # Chunk over images only when B·K² bins would not fit comfortably (very many classes).
    step = max(1, _MAX_BINS // (num_labels * num_labels))
    chunks = [_confusion(p, r, num_labels, ignore_index) for p, r in zip(preds.split(step), refs.split(step))]
    conf = torch.cat(chunks) if chunks else torch.zeros(0, num_labels, num_labels, dtype=torch.long, device=preds.device)
    return {
        "intersection": torch.diagonal(conf, dim1=1, dim2=2).clone(),
        "pred_area": conf.sum(dim=1),
        "label_area": conf.sum(dim=2),
    }


def confusion_matrix(preds: Tensor, refs: Tensor, num_labels: int, ignore_index: int | None = 255) -> Tensor:
    """Confusion matrix ``[K, K]`` summed over the batch; rows are references, columns predictions."""
    preds, refs = _as_tensor(preds, "predictions"), _as_tensor(refs, "references")
    refs = refs.to(preds.device)
    _check_same_shape(preds, refs, preds.dim(), "confusion_matrix")
    if preds.dim() == 2:
        preds, refs = preds.unsqueeze(0), refs.unsqueeze(0)
    conf = _confusion(preds.reshape(1, 1, -1), refs.reshape(1, 1, -1), num_labels, ignore_index)
    return conf[0]


def remap_labels(refs: Tensor, label_map: Mapping | None = None, reduce_labels: bool = False) -> Tensor:
    """Rewrite reference class ids the way the canonical `evaluate` mean_iou module does.

    Args:
        refs: reference class ids, any shape.
        label_map: ``{old_id: new_id}``. Every entry reads the *original* ids, so ``{1: 2, 2: 1}``
            swaps two classes. Keys and values must be integers (or strings of integers, as a
            JSON file gives them).
        reduce_labels: applied after ``label_map``: background 0 becomes 255 and every other id
            except 255 drops by one (ADE20K's convention, where 0 means "other", not a class).

    Returns:
        The rewritten ids (``refs`` itself when there is nothing to do).
    """
    if label_map:
        table = _int_map(label_map)
        values, inverse = torch.unique(refs, return_inverse=True)  # map the few distinct ids, not every pixel
        mapped = torch.tensor([table.get(v, v) for v in values.tolist()], dtype=torch.long, device=refs.device)
        refs = mapped[inverse]
    if reduce_labels:
        refs = torch.where((refs == 0) | (refs == REDUCED_BACKGROUND), REDUCED_BACKGROUND, refs - 1)
    return refs


def _int_map(label_map: Mapping) -> dict[int, int]:
    if not isinstance(label_map, Mapping):
        raise ValueError(f"label_map must be a dict {{old_id: new_id}}, got {type(label_map).__name__}.")
    table = {}
    for old, new in label_map.items():
        try:
            table[_as_int(old)] = _as_int(new)
        except (TypeError, ValueError):
            raise ValueError(f"label_map must map integer class ids to integer class ids, got {old!r}: {new!r}.") from None
    return table


def _as_int(x) -> int:
    return int(x) if isinstance(x, str) else operator.index(x)


def mean_iou_from_stats(intersection: Tensor, union: Tensor, label_area: Tensor | None = None) -> dict[str, object]:
    """mIoU and pixel accuracies from per-class counts summed over a split.

    Args:
        intersection: ``[K]`` summed intersections.
        union: ``[K]`` summed unions (``pred_area + label_area − intersection``).
        label_area: ``[K]`` summed reference areas; needed for the two accuracies (NaN without it).

    Returns:
        ``mean_iou`` (float, mean over classes with a non-zero union), ``mean_accuracy`` (mean
        per-class recall over classes present in the references), ``overall_accuracy`` (correct /
        labelled pixels), ``per_category_iou`` (float64 ``[K]``, NaN where the union is zero) and
        ``per_category_accuracy`` (float64 ``[K]`` recall, NaN where the reference area is zero).
    """
    inter = _as_tensor(intersection, "intersection").double()
    union = _as_tensor(union, "union").double()
    nan = torch.tensor(float("nan"), dtype=torch.float64, device=inter.device)
    iou = torch.where(union > 0, inter / union.clamp(min=1), nan)
    if label_area is None:
        recall, overall = torch.full_like(iou, float("nan")), float("nan")
    else:
        area = _as_tensor(label_area, "label_area").double()
        recall = torch.where(area > 0, inter / area.clamp(min=1), nan)
        total = float(area.sum())
        overall = float(inter.sum()) / total if total > 0 else float("nan")
    return {
        "mean_iou": _nanmean(iou),
        "mean_accuracy": _nanmean(recall),
        "overall_accuracy": overall,
        "per_category_iou": iou,
        "per_category_accuracy": recall,
    }


def _nanmean(x: Tensor) -> float:
    finite = x[~torch.isnan(x)]
    return float(finite.mean()) if finite.numel() else float("nan")


# ----------------------------------------------------------------------------- depth


def depth_stats(
    preds: Tensor,
    refs: Tensor,
    min_depth: float = 0.0,
    max_depth: float = 10.0,
    pred_floor: float = 1e-3,
) -> dict[str, Tensor]:
    """Per-image depth metrics over the valid pixels of each reference.

    Args:
        preds: predicted depth ``[B, H, W]`` in metres; must be finite everywhere.
        refs: reference depth ``[B, H, W]``; a pixel is valid iff ``min_depth < ref <= max_depth``
            (NaN / inf references are invalid). The mask never looks at the prediction.
        min_depth: exclusive lower bound of valid reference depth.
        max_depth: inclusive upper bound of valid reference depth.
        pred_floor: predictions are clamped to at least this for the log and ratio metrics
            (``log10``, ``rmse_log``, ``delta*``); RMSE, AbsRel and SqRel use them as given.

    Returns:
        float64 ``[B]`` tensors ``rmse``, ``abs_rel``, ``sq_rel``, ``log10``, ``rmse_log``,
        ``delta1`` / ``delta2`` / ``delta3`` (fraction with ``max(p/d, d/p) < 1.25^k``), and
        int64 ``num_valid``. Images with no valid pixel get NaN metrics and ``num_valid == 0``.
    """
    preds, refs = _as_tensor(preds, "predictions"), _as_tensor(refs, "references")
    refs = refs.to(preds.device)
    if preds.dim() == 2 and refs.dim() == 2:
        preds, refs = preds.unsqueeze(0), refs.unsqueeze(0)
    _check_same_shape(preds, refs, 3, "depth")
    if not max_depth > min_depth:
        raise ValueError(f"depth: need max_depth > min_depth, got min_depth={min_depth}, max_depth={max_depth}.")
    if pred_floor <= 0:
        raise ValueError(f"depth: pred_floor must be positive, got {pred_floor}.")
    if not bool(torch.isfinite(preds).all()):
        raise ValueError(
            "depth: predictions contain NaN or inf; check the model output (and the attack) for divergence."
        )
    pred, ref = preds.double(), refs.double()
    valid = (ref > min_depth) & (ref <= max_depth)  # NaN compares False: invalid
    count = valid.sum(dim=(1, 2))
    ref = torch.where(valid, ref, torch.ones_like(ref))  # placeholders keep logs/ratios finite off the mask
    pred = torch.where(valid, pred, torch.ones_like(pred))
    clamped = pred.clamp(min=pred_floor)
    w = valid.double()

    def mean(x: Tensor) -> Tensor:  # per-image mean over valid pixels; NaN where none
        return (x * w).sum(dim=(1, 2)) / count

    diff = pred - ref
    log_diff = clamped.log() - ref.log()
    ratio = torch.maximum(clamped / ref, ref / clamped)
    out = {
        "rmse": mean(diff.square()).sqrt(),
        "abs_rel": mean(diff.abs() / ref),
        "sq_rel": mean(diff.square() / ref),
        "log10": mean(log_diff.abs()) / math.log(10),
        "rmse_log": mean(log_diff.square()).sqrt(),
    }
    for k in (1, 2, 3):
        out[f"delta{k}"] = mean((ratio < 1.25**k).double())
    out["num_valid"] = count
    return out


# ----------------------------------------------------------------------------- streaming meters


class AccuracyMeter:
    """Top-1 accuracy accumulated over batches (and processes, through ``gather``)."""

    def __init__(self) -> None:
        self.correct = 0
        self.num_samples = 0
        self._per_image: list[Tensor] = []

    def update(self, preds: Tensor, refs: Tensor, gather: Gather | None = None) -> None:
        """Add a batch: class ids ``[B]`` or logits ``[B, K]``, references ``[B]``."""
        correct = accuracy_counts(preds, refs).long()  # int64: collective ops do not all take bool
        if gather is not None:
            correct = gather(correct)
        self.correct += int(correct.sum())
        self.num_samples += int(correct.numel())
        self._per_image.append(correct.cpu())

    def per_image(self) -> dict[str, Tensor]:
        """``{"correct": [n]}`` int64, one entry per image seen (in update order): the bootstrap's input (`uncertainty.py`)."""
        empty = torch.zeros(0, dtype=torch.long)  # cpu-ok: per-image statistics are kept on the host
        return {"correct": torch.cat(self._per_image) if self._per_image else empty}

    def compute(self) -> dict[str, float]:
        """``{"accuracy": correct / samples}`` (NaN before any update)."""
        return {"accuracy": self.correct / self.num_samples if self.num_samples else float("nan")}


class MeanIoUMeter:
    """mIoU with intersections and unions summed over the whole split."""

    def __init__(self, num_labels: int, ignore_index: int | None = 255) -> None:
        if num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {num_labels}.")
        self.num_labels = num_labels
        self.ignore_index = ignore_index
        self.totals = {key: torch.zeros(num_labels, dtype=torch.long) for key in SEG_STATS}  # cpu-ok: host totals (`.cpu()` in update)
        self.num_samples = 0
        self._per_image: list[dict[str, Tensor]] = []

    def update(self, preds: Tensor, refs: Tensor, gather: Gather | None = None) -> None:
        """Add a batch of predicted and reference masks ``[B, H, W]``."""
        stats = segmentation_stats(preds, refs, self.num_labels, self.ignore_index)
        if gather is not None:
            stats = gather(stats)
        host = {key: stats[key].cpu() for key in SEG_STATS}  # [B, K] counts per image: K integers, not pixels
        for key in SEG_STATS:
            self.totals[key] += host[key].sum(dim=0)
        self.num_samples += int(stats["intersection"].shape[0])
        self._per_image.append(host)

    def per_image(self) -> dict[str, Tensor]:
        """``intersection``, ``pred_area``, ``label_area``: int64 ``[n, K]``, one row per image seen."""
        return {key: torch.cat([p[key] for p in self._per_image]) if self._per_image
                else torch.zeros(0, self.num_labels, dtype=torch.long) for key in SEG_STATS}  # cpu-ok: host statistics

    def _result(self) -> dict[str, object]:
        t = self.totals
        union = t["pred_area"] + t["label_area"] - t["intersection"]
        return mean_iou_from_stats(t["intersection"], union, t["label_area"])

    def per_category_iou(self) -> Tensor:
        """IoU per class, float64 ``[K]``; NaN for classes absent from predictions and references."""
        return self._result()["per_category_iou"]

    def compute(self) -> dict[str, float]:
        """``mean_iou``, ``mean_accuracy`` and ``overall_accuracy`` (see `mean_iou_from_stats`)."""
        return {k: v for k, v in self._result().items() if not k.startswith("per_category")}


class DepthMeter:
    """Depth metrics computed per image, then averaged over the images that have valid pixels."""

    def __init__(self, max_depth: float = 10.0, min_depth: float = 0.0, pred_floor: float = 1e-3) -> None:
        self.kwargs = dict(min_depth=min_depth, max_depth=max_depth, pred_floor=pred_floor)
        self.sums = dict.fromkeys(DEPTH_METRICS, 0.0)
        self.num_samples = 0  # every image seen
        self.num_scored = 0  # images with at least one valid pixel
        self._per_image: list[dict[str, Tensor]] = []

    def update(self, preds: Tensor, refs: Tensor, gather: Gather | None = None) -> None:
        """Add a batch of predicted and reference depth maps ``[B, H, W]`` (metres)."""
        stats = depth_stats(preds, refs, **self.kwargs)
        if gather is not None:
            stats = gather(stats)
        scored = stats["num_valid"] > 0
        for key in DEPTH_METRICS:
            self.sums[key] += float(stats[key][scored].sum())
        self.num_samples += int(scored.numel())
        self.num_scored += int(scored.sum())
        self._per_image.append({"valid": scored.cpu(), **{key: stats[key].cpu() for key in DEPTH_METRICS}})

    def per_image(self) -> dict[str, Tensor]:
        """Each metric per image, float64 ``[n]`` (NaN where nothing is valid), and ``valid`` (bool ``[n]``)."""
        keys = ("valid", *DEPTH_METRICS)
        if not self._per_image:
            return {key: torch.zeros(0, dtype=torch.bool if key == "valid" else torch.float64) for key in keys}  # cpu-ok: host statistics
        return {key: torch.cat([p[key] for p in self._per_image]) for key in keys}

    def compute(self) -> dict[str, float]:
        """Mean of each per-image metric over scored images (NaN if none), plus ``num_scored``."""
        n = self.num_scored
        out = {key: total / n if n else float("nan") for key, total in self.sums.items()}
        out["num_scored"] = float(n)
        return out


# ----------------------------------------------------------------------------- list-of-arrays input


def iter_chunks(predictions, references, fill=None, chunk_pixels: int = CHUNK_PIXELS):
    """Batch a list of 2-D maps (what `evaluate` modules receive) into tensors of bounded size.

    Args:
        predictions, references: an ``[N, H, W]`` array, or sequences of 2-D arrays (sizes may differ).
        fill: reference value that counts nowhere, used to pad maps of different sizes to
            ``[b, H_max, W_max]`` (predictions are padded with 0). With ``fill=None`` such a chunk is
            flattened into one ``[1, 1, pixels]`` map instead (fine for summed statistics only).
        chunk_pixels: at most this many pixels per chunk (a single larger image is its own chunk).

    Yields:
        ``(preds, refs)`` tensors ``[b, H, W]``.
    """
    if len(predictions) != len(references):
        raise ValueError(f"Got {len(predictions)} predictions and {len(references)} references.")
    n, start = len(references), 0
    while start < n:
        stop, pixels = start, 0
        while stop < n and (stop == start or pixels + np.size(references[stop]) <= chunk_pixels):
            pixels += np.size(references[stop])
            stop += 1
        preds, refs = predictions[start:stop], references[start:stop]
        start = stop
        if isinstance(refs, np.ndarray) and refs.dtype != object and refs.ndim == 3:
            yield _as_tensor(preds, "predictions"), _as_tensor(refs, "references")
            continue
        preds, refs = [np.asarray(p) for p in preds], [np.asarray(r) for r in refs]
        for i, (p, r) in enumerate(zip(preds, refs)):
            if p.shape != r.shape or r.ndim != 2:
                raise ValueError(
                    f"Item {i}: prediction and reference must be 2-D of the same shape, got {p.shape} and {r.shape}."
                )
        if len({r.shape for r in refs}) == 1:
            yield _as_tensor(np.stack(preds), "predictions"), _as_tensor(np.stack(refs), "references")
        elif fill is None:
            p_flat, r_flat = np.concatenate([p.ravel() for p in preds]), np.concatenate([r.ravel() for r in refs])
            yield _as_tensor(p_flat[None, None], "predictions"), _as_tensor(r_flat[None, None], "references")
        else:
            h, w = max(r.shape[0] for r in refs), max(r.shape[1] for r in refs)
            p_out = np.zeros((len(refs), h, w), dtype=np.result_type(*preds))
            r_out = np.full((len(refs), h, w), fill, dtype=np.result_type(*refs, np.asarray(fill)))
            for i, (p, r) in enumerate(zip(preds, refs)):  # one copy per image, no per-pixel work
                p_out[i, : p.shape[0], : p.shape[1]] = p
                r_out[i, : r.shape[0], : r.shape[1]] = r
            yield _as_tensor(p_out, "predictions"), _as_tensor(r_out, "references")


def arrow_maps(column) -> list[np.ndarray]:
    """2-D numpy views of a pyarrow ``list<list<T>>`` column (one map per row), without copying.

    This is how the `evaluate` modules read their cached inputs: ``format="arrow"`` plus this
    is zero-copy on the memory-mapped cache, where ``format="numpy"`` builds every image row by row.
    Non-Arrow inputs (lists, arrays) are returned unchanged.
    """
    chunks = getattr(column, "chunks", None)
    if chunks is None:
        return column
    maps: list[np.ndarray] = []
    for chunk in chunks:
        rows = chunk.value_lengths().to_numpy(zero_copy_only=False)  # [n] rows per map
        inner = chunk.flatten()  # one list per image row
        cols = inner.value_lengths().to_numpy(zero_copy_only=False)  # [sum(rows)] length of each row
        values = inner.flatten().to_numpy(zero_copy_only=False)
        row_end = np.cumsum(rows)
        pix_end = np.cumsum(cols)
        pix_start, row_start = 0, 0
        for i, n_rows in enumerate(rows.tolist()):  # one view per image, no per-pixel work
            row_stop = int(row_end[i])
            width = int(cols[row_start]) if n_rows else 0
            if n_rows and bool((cols[row_start:row_stop] != width).any()):
                raise ValueError(f"Map {len(maps)} is ragged: its rows have different lengths.")
            pix_stop = int(pix_end[row_stop - 1]) if n_rows else pix_start
            maps.append(values[pix_start:pix_stop].reshape(n_rows, width))
            pix_start, row_start = pix_stop, row_stop
    return maps

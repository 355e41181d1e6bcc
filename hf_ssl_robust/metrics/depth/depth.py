"""Monocular depth metrics (RMSE, AbsRel, δ1, ...), as an `evaluate` module loaded by local path.

Every metric is computed per image over the pixels with ``min_depth < reference <= max_depth``
(the mask comes from the reference only), then averaged over the images that have at least one
valid pixel: the paper's convention (mean of per-image RMSEs, not a global RMSE). The arithmetic
lives in ``hf_ssl_robust.metrics.functional``.
"""

import datasets
import evaluate

from hf_ssl_robust.metrics.functional import (
    PAPER_CITATION,
    DepthMeter,
    arrow_maps,
    iter_chunks,
)

_CITATION = PAPER_CITATION + """\
@inproceedings{eigen2014depth,
  title     = {Depth Map Prediction from a Single Image using a Multi-Scale Deep Network},
  author    = {Eigen, David and Puhrsch, Christian and Fergus, Rob},
  booktitle = {Advances in Neural Information Processing Systems},
  volume    = {27},
  year      = {2014}
}
"""

_DESCRIPTION = """
Depth metrics per image over valid reference pixels (min_depth < d <= max_depth), averaged over
images: rmse (metres), abs_rel, sq_rel, log10, rmse_log, delta1/2/3 (fraction of pixels with
max(p/d, d/p) < 1.25^k). Images with no valid pixel are skipped; num_scored counts the others.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of 2-D float arrays): predicted depth in metres (must be finite).
    references (list of 2-D float arrays): reference depth in metres, same shapes.
    max_depth (float, default 10.0): inclusive upper bound of valid reference depth.
    min_depth (float, default 0.0): exclusive lower bound of valid reference depth.
    pred_floor (float, default 1e-3): predictions are clamped to this for log / ratio metrics.
Returns:
    rmse, abs_rel, sq_rel, log10, rmse_log, delta1, delta2, delta3, num_scored (floats).
Example:
    >>> metric = hf_ssl_robust.metrics.load_metric("depth")
    >>> round(metric.compute(predictions=[[[1.0, 2.0]]], references=[[[1.0, 4.0]]])["rmse"], 6)
    1.414214
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Depth(evaluate.Metric):
    """Per-image depth metrics averaged over images."""

    def _info(self):
        depth_map = datasets.Sequence(datasets.Sequence(datasets.Value("float32")))
        info = evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            reference_urls=["https://arxiv.org/abs/2407.12588", "https://arxiv.org/abs/1406.2283"],
            features=datasets.Features({"predictions": depth_map, "references": depth_map}),
        )
        # Read the cached inputs back as Arrow (zero-copy; see `arrow_maps`). The default (Python
        # lists) makes every pixel a Python object and "numpy" stacks each image row by row:
        # minutes and gigabytes for a segmentation val split. MetricInfo's __post_init__ refuses
        # any format for nested features, so set it after construction; `compute` only hands it
        # to `Dataset.set_format`, which supports it.
        info.format = "arrow"
        return info

    def _compute(self, predictions, references, max_depth=10.0, min_depth=0.0, pred_floor=1e-3):
        meter = DepthMeter(max_depth=max_depth, min_depth=min_depth, pred_floor=pred_floor)
        # Maps of different sizes are padded with NaN references, which are never valid.
        for preds, refs in iter_chunks(arrow_maps(predictions), arrow_maps(references), fill=float("nan")):
            meter.update(preds, refs)
        return meter.compute()

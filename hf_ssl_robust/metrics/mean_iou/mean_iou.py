"""Mean intersection-over-union for semantic segmentation, as an `evaluate` module.

Loaded by local path (``hf_ssl_robust.metrics.load_metric("mean_iou")``), never from the Hub.
The arithmetic lives in ``hf_ssl_robust.metrics.functional``; this file only adapts the inputs.
"""

import datasets
import evaluate
import torch

from hf_ssl_robust.metrics.functional import SEG_STATS, arrow_maps, iter_chunks, mean_iou_from_stats, segmentation_stats

_DESCRIPTION = """
Mean IoU over a split: per-class intersections and unions are summed over all images, the IoU of
each class is their ratio, and mean_iou is the mean over classes whose union is non-zero (a class
absent from both predictions and references is NaN in per_category_iou and skipped). Pixels whose
reference equals ignore_index count nowhere.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of 2-D int arrays): predicted class ids per image, in [0, num_labels).
    references (list of 2-D int arrays): reference class ids, same shapes, in [0, num_labels) or ignore_index.
    num_labels (int): number of classes.
    ignore_index (int or None, default 255): reference value that counts nowhere.
Returns:
    mean_iou (float), per_category_iou (float64 array [num_labels], NaN for absent classes),
    overall_accuracy (float: correct / counted pixels), mean_accuracy (float: mean per-class recall).
Example:
    >>> metric = hf_ssl_robust.metrics.load_metric("mean_iou")
    >>> metric.compute(predictions=[[[0, 1]]], references=[[[0, 0]]], num_labels=2)["mean_iou"]
    0.25
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MeanIoU(evaluate.Metric):
    """Mean IoU over a split (intersections and unions summed over images, then divided)."""

    def _info(self):
        mask = datasets.Sequence(datasets.Sequence(datasets.Value("int32")))
        info = evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": mask, "references": mask}),
        )
        # Read the cached inputs back as Arrow (zero-copy; see `arrow_maps`). The default (Python
        # lists) makes every pixel a Python object and "numpy" stacks each image row by row:
        # minutes and gigabytes for a segmentation val split. MetricInfo's __post_init__ refuses
        # any format for nested features, so set it after construction; `compute` only hands it
        # to `Dataset.set_format`, which supports it.
        info.format = "arrow"
        return info

    def _compute(self, predictions, references, num_labels, ignore_index=255):
        totals = {key: torch.zeros(num_labels, dtype=torch.long) for key in SEG_STATS}
        # Images of different sizes are concatenated (fill=None): only sums are needed here.
        for preds, refs in iter_chunks(arrow_maps(predictions), arrow_maps(references), fill=None):
            stats = segmentation_stats(preds, refs, num_labels, ignore_index)
            for key in SEG_STATS:
                totals[key] += stats[key].sum(dim=0)
        union = totals["pred_area"] + totals["label_area"] - totals["intersection"]
        out = mean_iou_from_stats(totals["intersection"], union, totals["label_area"])
        out["per_category_iou"] = out["per_category_iou"].numpy()
        return out

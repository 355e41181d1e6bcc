"""Mean intersection-over-union for semantic segmentation, as an `evaluate` module.

Loaded by local path (``hf_ssl_robust.metrics.load_metric("mean_iou")``), never from the Hub. It
takes the arguments of the canonical ``mean_iou`` module on the Hub and returns its keys; the
arithmetic lives in ``hf_ssl_robust.metrics.functional``, this file only adapts the inputs.
"""

import datasets
import evaluate
import numpy as np
import torch

from hf_ssl_robust.metrics.functional import (
    PAPER_CITATION,
    REDUCED_BACKGROUND,
    SEG_STATS,
    arrow_maps,
    iter_chunks,
    mean_iou_from_stats,
    remap_labels,
    segmentation_stats,
)

_CITATION = PAPER_CITATION + """\
@article{everingham2010pascal,
  title   = {The Pascal Visual Object Classes (VOC) Challenge},
  author  = {Everingham, Mark and Van Gool, Luc and Williams, Christopher K. I. and Winn, John and Zisserman, Andrew},
  journal = {International Journal of Computer Vision},
  volume  = {88},
  number  = {2},
  pages   = {303--338},
  year    = {2010}
}
"""

_DESCRIPTION = """
Mean IoU over a split: per-class intersections and unions are summed over all images, the IoU of
each class is their ratio, and mean_iou is the mean over classes whose union is non-zero (a class
absent from both predictions and references is NaN in per_category_iou and skipped). Pixels whose
reference equals ignore_index count nowhere. Also returns pixel accuracy over the split and the
per-class recall (mean_accuracy, per_category_accuracy).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of 2-D int arrays): predicted class ids per image, in [0, num_labels) (any
        value where the reference is ignored). Images may differ in size.
    references (list of 2-D int arrays): reference class ids, same shapes as the predictions, in
        [0, num_labels) or ignore_index (after label_map and reduce_labels).
    num_labels (int): number of classes.
    ignore_index (int or None, default 255): reference value whose pixels count nowhere.
    nan_to_num (float, optional): replace NaN in every returned value by this number.
    label_map (dict, optional): {old_id: new_id} applied to the references; every entry reads the
        original ids ({1: 2, 2: 1} swaps two classes).
    reduce_labels (bool, default False): after label_map, reference 0 becomes 255 and every other
        id except 255 drops by one (ADE20K-style background). Needs ignore_index=255.
Returns:
    mean_iou (float), mean_accuracy (float: mean per-class recall), overall_accuracy (float:
    correct / counted pixels), per_category_iou and per_category_accuracy (float64 arrays
    [num_labels], NaN where undefined unless nan_to_num is given).
Example:
    >>> metric = hf_ssl_robust.metrics.load_metric("mean_iou")
    >>> metric.compute(predictions=[[[0, 1]]], references=[[[0, 0]]], num_labels=2)["mean_iou"]
    0.25
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MeanIou(evaluate.Metric):
    """Mean IoU over a split (intersections and unions summed over images, then divided).

    Spelled ``MeanIou``: `evaluate` names a module after its class in snake case, and this gives
    ``mean_iou`` (the prefix `evaluate.combine` puts on its keys), where ``MeanIoU`` gives ``mean_io_u``.
    """

    def _info(self):
        mask = datasets.Sequence(datasets.Sequence(datasets.Value("int32")))
        info = evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": mask, "references": mask}),
            reference_urls=["https://arxiv.org/abs/2407.12588", "https://doi.org/10.1007/s11263-009-0275-4"],
        )
        # Read the cached inputs back as Arrow (zero-copy; see `arrow_maps`). The default (Python
        # lists) makes every pixel a Python object and "numpy" stacks each image row by row:
        # minutes and gigabytes for a segmentation val split. MetricInfo's __post_init__ refuses
        # any format for nested features, so set it after construction; `compute` only hands it
        # to `Dataset.set_format`, which supports it.
        info.format = "arrow"
        return info

    def _compute(self, predictions, references, num_labels, ignore_index=255, nan_to_num=None, label_map=None,
                 reduce_labels=False):
        if isinstance(num_labels, bool) or not isinstance(num_labels, (int, np.integer)) or num_labels < 1:
            raise ValueError(f"num_labels must be a positive integer (the number of classes), got {num_labels!r}.")
        if reduce_labels and ignore_index != REDUCED_BACKGROUND:
            raise ValueError(
                f"reduce_labels turns background 0 into {REDUCED_BACKGROUND}, which must then be ignored: pass "
                f"ignore_index={REDUCED_BACKGROUND} (got {ignore_index!r})."
            )
        totals = {key: torch.zeros(num_labels, dtype=torch.long) for key in SEG_STATS}  # cpu-ok: `evaluate` passes host arrays
        # Images of different sizes are concatenated (fill=None): only sums are needed here.
        for preds, refs in iter_chunks(arrow_maps(predictions), arrow_maps(references), fill=None):
            refs = remap_labels(refs, label_map, reduce_labels)
            stats = segmentation_stats(preds, refs, num_labels, ignore_index)
            for key in SEG_STATS:
                totals[key] += stats[key].sum(dim=0)
        union = totals["pred_area"] + totals["label_area"] - totals["intersection"]
        out = mean_iou_from_stats(totals["intersection"], union, totals["label_area"])
        out = {key: value.numpy() if torch.is_tensor(value) else value for key, value in out.items()}
        if nan_to_num is not None:
            out = {key: _fill_nan(value, nan_to_num) for key, value in out.items()}
        return out


def _fill_nan(value, fill):
    filled = np.nan_to_num(value, nan=fill)
    return float(filled) if np.ndim(filled) == 0 else filled

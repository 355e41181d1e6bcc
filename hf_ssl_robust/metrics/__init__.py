"""Metrics for the three tasks: pure-torch functions and meters, and `evaluate` modules.

`load_metric(name)` returns an `evaluate` module loaded from the script shipped inside this
package (``evaluate.load("mean_iou")`` would download one from the Hub instead); each module folder
also holds its card (README.md with evaluate's metadata header). `evaluate` is
imported only there: importing it pulls in ``transformers.pipelines`` (seconds), which the
meters used by the benchmark loop do not need.

Example:
    >>> metric = load_metric("mean_iou")
    >>> metric.compute(predictions=masks, references=labels, num_labels=150, ignore_index=255)
"""

from __future__ import annotations

from pathlib import Path

from .functional import (
    AccuracyMeter,
    DepthMeter,
    MeanIoUMeter,
    accuracy_counts,
    confusion_matrix,
    depth_stats,
    mean_iou_from_stats,
    remap_labels,
    segmentation_stats,
)

METRICS = ("accuracy", "mean_iou", "depth")
_HERE = Path(__file__).resolve().parent


def metric_path(name: str) -> str:
    """Absolute path of the folder holding the `evaluate` script for ``name``."""
    if name not in METRICS:
        from ..suggestions import did_you_mean

        raise ValueError(f"Unknown metric {name!r}{did_you_mean(name, METRICS)}; available: {', '.join(METRICS)}.")
    return str(_HERE / name)


def load_metric(name: str, **kwargs):
    """Load one of our `evaluate` modules (``accuracy``, ``mean_iou``, ``depth``) by local path.

    Args:
        name: metric name.
        **kwargs: passed to ``evaluate.load`` (e.g. ``keep_in_memory=True``, ``experiment_id``).

    Returns:
        The ``evaluate.EvaluationModule``. Nothing is fetched from the network.
    """
    path = metric_path(name)
    import evaluate  # lazy: see the module docstring

    return evaluate.load(path, **kwargs)


def evaluator(task: str = "image-classification"):
    """`evaluate.evaluator(task)` that also works with transformers 5.

    evaluate 0.4.6 checks `isinstance(model_or_pipeline, transformers.TFPreTrainedModel)` whenever it is
    handed a pipeline object or a callable, and transformers 5 dropped its TensorFlow classes, so that
    check raises `AttributeError`. This shim gives `transformers` an empty `TFPreTrainedModel` class
    (nothing can be an instance of it, which is true: there are no TensorFlow models in transformers 5)
    and returns the evaluator. A model path (a saved head folder) works without the shim; a model
    instance needs its processor too (`feature_extractor=AutoImageProcessor.from_pretrained(folder)`).

    Example:
        >>> task_evaluator = evaluator("image-classification")
        >>> task_evaluator.compute(model_or_pipeline=pipeline("image-classification", model=head_dir), data=ds,
        ...                        metric=load_metric("accuracy"), label_mapping={n: i for i, n in head.config.id2label.items()})
    """
    import evaluate
    import transformers

    if not hasattr(transformers, "TFPreTrainedModel"):

        class TFPreTrainedModel:  # noqa: D401
            """Stand-in for the TensorFlow base class transformers 5 removed (evaluate 0.4.6 still names it)."""

        transformers.TFPreTrainedModel = TFPreTrainedModel
    return evaluate.evaluator(task)


__all__ = [
    "evaluator",
    "METRICS",
    "AccuracyMeter",
    "DepthMeter",
    "MeanIoUMeter",
    "accuracy_counts",
    "confusion_matrix",
    "depth_stats",
    "load_metric",
    "mean_iou_from_stats",
    "metric_path",
    "remap_labels",
    "segmentation_stats",
]

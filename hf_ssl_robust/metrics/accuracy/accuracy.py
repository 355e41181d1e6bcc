"""Top-1 accuracy, as an `evaluate` module loaded by local path (never from the Hub).

The arithmetic lives in ``hf_ssl_robust.metrics.functional``.
"""

import datasets
import evaluate
import numpy as np

from hf_ssl_robust.metrics.functional import PAPER_CITATION, accuracy_counts

_CITATION = PAPER_CITATION

_DESCRIPTION = "Proportion of samples whose predicted class id equals the reference class id."

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class ids (integers: take the argmax of logits or scores first;
        a value with a fractional part is refused, never rounded).
    references (list of int): reference class ids.
Returns:
    accuracy (float): correct / total (NaN for no samples).
Example:
    >>> metric = hf_ssl_robust.metrics.load_metric("accuracy")
    >>> metric.compute(predictions=[0, 1, 1, 2], references=[0, 1, 2, 2])
    {'accuracy': 0.75}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    """Top-1 accuracy."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            reference_urls=["https://arxiv.org/abs/2407.12588"],
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
            format="numpy",
        )

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add a batch of class ids (floats with a fractional part are refused)."""
        _check_class_ids("predictions", predictions)
        _check_class_ids("references", references)
        return super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Add one class id (a float with a fractional part is refused)."""
        _check_class_ids("prediction", [prediction] if prediction is not None else None)
        _check_class_ids("reference", [reference] if reference is not None else None)
        return super().add(prediction=prediction, reference=reference, **kwargs)

    def _compute(self, predictions, references):
        correct = accuracy_counts(predictions, references)
        return {"accuracy": float(correct.double().mean()) if correct.numel() else float("nan")}


def _check_class_ids(name, values):
    """Refuse what `datasets.Value("int64")` would silently truncate: scores, probabilities, logits."""
    if values is None:
        return
    array = np.asarray(values.detach().cpu() if hasattr(values, "detach") else values)
    if array.ndim > 1:
        raise ValueError(f"accuracy: {name} must be one class id per sample (shape [N]), got shape {list(array.shape)}; "
                         "for logits or scores pass their argmax over the class axis.")
    if array.dtype.kind in "iub" or array.size == 0:
        return
    if array.dtype.kind == "f" and np.all(np.isfinite(array)) and np.all(array == np.round(array)):
        return  # whole numbers stored as floats lose nothing
    bad = next((v for v in array.ravel().tolist() if not (isinstance(v, (int, float)) and float(v).is_integer())), array.ravel()[0])
    raise ValueError(f"accuracy: {name} must be integer class ids, got {array.dtype} values such as {bad!r}; "
                     "they would be truncated to integers. Pass the predicted class (argmax of logits or scores).")

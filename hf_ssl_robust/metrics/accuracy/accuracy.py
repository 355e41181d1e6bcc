"""Top-1 accuracy, as an `evaluate` module loaded by local path (never from the Hub).

The arithmetic lives in ``hf_ssl_robust.metrics.functional``.
"""

import datasets
import evaluate

from hf_ssl_robust.metrics.functional import PAPER_CITATION, accuracy_counts

_CITATION = PAPER_CITATION

_DESCRIPTION = "Proportion of samples whose predicted class id equals the reference class id."

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class ids.
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

    def _compute(self, predictions, references):
        correct = accuracy_counts(predictions, references)
        return {"accuracy": float(correct.double().mean()) if correct.numel() else float("nan")}

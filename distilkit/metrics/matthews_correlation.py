"""Matthews correlation coefficient (GLUE's CoLA metric), multi-class form (numpy only, as scikit-learn)."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = (
    "Matthews correlation coefficient: a correlation between predicted and true labels in [-1, 1] that stays "
    "informative when classes are imbalanced; 0 is chance, 1 perfect. Uses the multi-class (Gorodkin) formula."
)

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted labels.
    references (list of int): true labels.
    sample_weight (list of float): optional weight of each example.
Returns:
    matthews_correlation (float): in [-1, 1]; 0 when predictions or references hold a single class.
Example:
    >>> metric = evaluate.load("distilkit/metrics/matthews_correlation.py")
    >>> metric.compute(predictions=[1, 1, 0, 0], references=[1, 0, 0, 0])
    {'matthews_correlation': 0.5773502691896258}
"""

_CITATION = ""


class MatthewsCorrelation(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, sample_weight=None):
        predictions, references = np.asarray(predictions), np.asarray(references)
        weights = np.ones(len(predictions)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        classes = np.unique(np.concatenate([predictions, references]))
        index = {c: i for i, c in enumerate(classes.tolist())}
        confusion = np.zeros((len(classes), len(classes)), dtype=np.float64)
        for truth, guess, weight in zip(references.tolist(), predictions.tolist(), weights.tolist()):
            confusion[index[truth], index[guess]] += weight
        true_counts, predicted_counts = confusion.sum(axis=1), confusion.sum(axis=0)
        correct, total = np.trace(confusion), confusion.sum()
        covariance = correct * total - np.dot(predicted_counts, true_counts)
        spread = (total**2 - np.dot(predicted_counts, predicted_counts)) * (total**2 - np.dot(true_counts, true_counts))
        return {"matthews_correlation": float(covariance / np.sqrt(spread)) if spread > 0 else 0.0}

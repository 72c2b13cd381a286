"""Spearman rank correlation (GLUE's STS-B metric, with Pearson's), numpy only; ties get their average rank."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = (
    "Spearman correlation: the Pearson correlation of the ranks of predictions and references, in [-1, 1]. It "
    "measures how well the predictions order the examples, whatever their scale."
)

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of float): predicted scores.
    references (list of float): true scores.
Returns:
    spearmanr (float): in [-1, 1]; NaN when either input is constant (the correlation is undefined).
Example:
    >>> metric = evaluate.load("distilkit/metrics/spearmanr.py")
    >>> metric.compute(predictions=[10.0, 20.0, 30.0], references=[1.0, 3.0, 2.0])
    {'spearmanr': 0.5}
"""

_CITATION = ""


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n; equal values share the mean of the ranks they span (as scipy.stats.rankdata)."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    ranks = np.empty(len(values), dtype=np.float64)
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


class Spearmanr(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
        )

    def _compute(self, predictions, references):
        x = _average_ranks(np.asarray(predictions, dtype=np.float64))
        y = _average_ranks(np.asarray(references, dtype=np.float64))
        if len(x) < 2:
            raise ValueError("spearmanr needs at least two values.")
        x, y = x - x.mean(), y - y.mean()
        spread = np.sqrt(np.dot(x, x) * np.dot(y, y))
        return {"spearmanr": float(np.dot(x, y) / spread) if spread > 0 else float("nan")}

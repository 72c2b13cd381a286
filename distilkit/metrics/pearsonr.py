"""Pearson correlation coefficient (GLUE's STS-B metric, with Spearman's), numpy only."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Pearson correlation: the linear correlation between predictions and references, in [-1, 1]."

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of float): predicted scores.
    references (list of float): true scores.
Returns:
    pearsonr (float): in [-1, 1]; NaN when either input is constant (the correlation is undefined).
Example:
    >>> metric = evaluate.load("distilkit/metrics/pearsonr.py")
    >>> metric.compute(predictions=[1.0, 2.0, 3.0], references=[1.0, 2.0, 2.5])
    {'pearsonr': 0.9819805060619656}
"""

_CITATION = ""


class Pearsonr(evaluate.Metric):
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
        x, y = np.asarray(predictions, dtype=np.float64), np.asarray(references, dtype=np.float64)
        if len(x) < 2:
            raise ValueError("pearsonr needs at least two values.")
        x, y = x - x.mean(), y - y.mean()
        spread = np.sqrt(np.dot(x, x) * np.dot(y, y))
        return {"pearsonr": float(np.dot(x, y) / spread) if spread > 0 else float("nan")}

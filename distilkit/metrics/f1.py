"""F1 score, the harmonic mean of precision and recall (numpy only, same results as scikit-learn's f1_score)."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "F1 = 2 * precision * recall / (precision + recall), per class, then averaged as `average` says."

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted labels.
    references (list of int): true labels.
    labels (list of int): the classes to score; default: every class in predictions or references.
    pos_label (int): the positive class when average="binary". Default 1.
    average (str): "binary" (F1 of pos_label; the default), "micro" (from global counts), "macro" (unweighted
        mean over classes), "weighted" (mean weighted by each class's number of references), or None (one score
        per class, in the order of `labels`).
    sample_weight (list of float): optional weight of each example.
Returns:
    f1 (float, or a list of floats when average is None). A class without true or predicted examples scores 0.
Example:
    >>> metric = evaluate.load("distilkit/metrics/f1.py")
    >>> metric.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0])
    {'f1': 0.6666666666666666}
"""

_CITATION = ""


def _per_class(predictions, references, labels, weights):
    tp = np.array([np.sum(weights * ((predictions == c) & (references == c))) for c in labels], dtype=np.float64)
    fp = np.array([np.sum(weights * ((predictions == c) & (references != c))) for c in labels], dtype=np.float64)
    fn = np.array([np.sum(weights * ((predictions != c) & (references == c))) for c in labels], dtype=np.float64)
    return tp, fp, fn


def _f1(tp, fp, fn):
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros_like(denominator), where=denominator > 0)


class F1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, labels=None, pos_label=1, average="binary", sample_weight=None):
        predictions, references = np.asarray(predictions), np.asarray(references)
        weights = np.ones(len(predictions)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        present = np.unique(np.concatenate([predictions, references]))
        if average == "binary":
            if len(present) > 2:
                raise ValueError(
                    f"average='binary' needs two classes, found {present.tolist()}; use average='macro', 'micro' "
                    "or 'weighted'."
                )
            tp, fp, fn = _per_class(predictions, references, [pos_label], weights)
            return {"f1": float(_f1(tp, fp, fn)[0])}
        labels = present if labels is None else np.asarray(labels)
        tp, fp, fn = _per_class(predictions, references, labels, weights)
        if average == "micro":
            return {"f1": float(_f1(tp.sum(keepdims=True), fp.sum(keepdims=True), fn.sum(keepdims=True))[0])}
        scores = _f1(tp, fp, fn)
        if average is None:
            return {"f1": scores.tolist()}
        if average == "macro":
            return {"f1": float(scores.mean())}
        if average == "weighted":
            support = tp + fn
            return {"f1": float(np.sum(scores * support) / support.sum()) if support.sum() > 0 else 0.0}
        raise ValueError(f"average must be 'binary', 'micro', 'macro', 'weighted' or None, got {average!r}.")

"""Evaluation metrics shipped inside distilkit, so evaluating needs no Hub access.

Each file here is a self-contained `evaluate.Metric` module (numpy only) that `evaluate.load(path)` reads offline.
`load_metric("accuracy")` loads the shipped module; any other name or path goes to `evaluate.load` unchanged
(a Hub metric then needs network access).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["SHIPPED", "load_metric", "metric_path"]

METRICS_DIR = Path(__file__).resolve().parent

# name -> file in this folder. The table is explicit so that a typo is an error, not a silent Hub lookup.
SHIPPED: dict[str, str] = {
    "accuracy": "accuracy.py",
    "f1": "f1.py",
    "matthews_correlation": "matthews_correlation.py",
    "pearsonr": "pearsonr.py",
    "spearmanr": "spearmanr.py",
}


def metric_path(name: str) -> str:
    """The file of a shipped metric, or `name` unchanged (a path to a metric script or a Hub metric id)."""
    return str(METRICS_DIR / SHIPPED[name]) if name in SHIPPED else name


def load_metric(name: str, **kwargs):
    """`evaluate.load` for a shipped metric name, a metric script path, or a Hub metric id.

    `evaluate` is imported here, not at module import: importing it takes several seconds.
    """
    import evaluate

    target = metric_path(name)
    if name not in SHIPPED and not Path(target).exists():
        import difflib

        close = difflib.get_close_matches(name, SHIPPED, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        try:
            return evaluate.load(target, **kwargs)
        except Exception as err:
            raise ValueError(
                f"Metric {name!r} is neither shipped with distilkit ({', '.join(SHIPPED)}) nor a metric script file, "
                f"and loading it from the Hub failed ({type(err).__name__}: {err}).{hint}"
            ) from err
    return evaluate.load(target, **kwargs)

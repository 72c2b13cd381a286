"""The metric modules shipped in distilkit/metrics: loaded offline with `evaluate.load(path)`, checked against
hand-computed values and, where scikit-learn/scipy are installed, against them."""

from __future__ import annotations

import numpy as np
import pytest

from distilkit.metrics import SHIPPED, load_metric, metric_path

PRED = [0, 1, 1, 0, 2, 1, 0, 2]
REF = [0, 1, 0, 0, 2, 2, 1, 2]


def compute(name, **kwargs):
    return load_metric(name, keep_in_memory=True).compute(**kwargs)


def test_every_shipped_metric_loads_offline_from_its_file():
    for name in SHIPPED:
        assert metric_path(name).endswith(f"{name}.py")
        module = load_metric(name, keep_in_memory=True)
        assert module.name == name or name.replace("_", "") in module.name.replace("_", "")


def test_accuracy_and_f1_by_hand():
    assert compute("accuracy", predictions=[0, 1, 1], references=[0, 1, 0]) == {"accuracy": pytest.approx(2 / 3)}
    # Binary F1 of class 1: tp=1, fp=1, fn=0 -> 2/3.
    assert compute("f1", predictions=[0, 1, 1, 0], references=[0, 1, 0, 0]) == {"f1": pytest.approx(2 / 3)}
    assert compute("accuracy", predictions=[1, 1], references=[1, 0], normalize=False) == {"accuracy": 1.0}


def test_matthews_correlation_by_hand():
    # tp=1, tn=2, fp=1, fn=0: (1*2 - 1*0) / sqrt(2*1*3*2) = 2 / sqrt(12)
    result = compute("matthews_correlation", predictions=[1, 1, 0, 0], references=[1, 0, 0, 0])
    assert result["matthews_correlation"] == pytest.approx(2 / np.sqrt(12))
    assert compute("matthews_correlation", predictions=[1, 1], references=[1, 1])["matthews_correlation"] == 0.0


def test_correlations_by_hand_and_ties():
    assert compute("pearsonr", predictions=[1.0, 2.0, 3.0], references=[2.0, 4.0, 6.0])["pearsonr"] == pytest.approx(1)
    # Ranks with ties: [1.5, 1.5, 3] vs [1, 2, 3] -> Pearson of the ranks.
    expected = np.corrcoef([1.5, 1.5, 3.0], [1.0, 2.0, 3.0])[0, 1]
    assert compute("spearmanr", predictions=[5.0, 5.0, 9.0], references=[1.0, 2.0, 3.0])["spearmanr"] == pytest.approx(
        expected)


def test_against_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    assert compute("accuracy", predictions=PRED, references=REF)["accuracy"] == pytest.approx(
        metrics.accuracy_score(REF, PRED))
    for average in ("macro", "micro", "weighted"):
        assert compute("f1", predictions=PRED, references=REF, average=average)["f1"] == pytest.approx(
            metrics.f1_score(REF, PRED, average=average)), average
    assert compute("f1", predictions=PRED, references=REF, average=None)["f1"] == pytest.approx(
        list(metrics.f1_score(REF, PRED, average=None)))
    assert compute("matthews_correlation", predictions=PRED, references=REF)["matthews_correlation"] == pytest.approx(
        metrics.matthews_corrcoef(REF, PRED))


def test_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=30).round(1), rng.normal(size=30).round(1)  # rounding makes ties
    assert compute("pearsonr", predictions=x, references=y)["pearsonr"] == pytest.approx(stats.pearsonr(x, y)[0])
    assert compute("spearmanr", predictions=x, references=y)["spearmanr"] == pytest.approx(stats.spearmanr(x, y)[0])


def test_binary_f1_refuses_more_than_two_classes():
    with pytest.raises(ValueError, match="average='binary' needs two classes"):
        compute("f1", predictions=PRED, references=REF)


def test_unknown_metric_name_suggests_a_shipped_one(monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match="Did you mean 'accuracy'"):
        load_metric("acuracy")

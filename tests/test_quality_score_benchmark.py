"""benchmarks/quality_score.py bookkeeping: shapes parsed and refused, Spearman's rank correlation against
hand-computed values, and the summary and report from run records written here (no models, no training)."""

import pytest
from helpers.benchmarks import import_benchmark
from transformers import BertConfig

qs = import_benchmark("quality_score")


def teacher_config():
    return BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


def test_a_uniform_shape_is_parsed_and_a_bad_one_names_the_form():
    shape = qs.harness.parse_shape("L2-h2-f32", teacher_config())
    assert shape.heads == (2, 2) and shape.ffn == (32, 32) and not shape.int8
    with pytest.raises(SystemExit, match="L<layers>-h<heads>-f<ffn>"):
        qs.harness.parse_shape("2 layers", teacher_config())
    with pytest.raises(SystemExit, match="L<layers>-h<heads>-f<ffn>, e.g. L4-h6-f768"):  # float only by default
        qs.harness.parse_shape("L2-h2-f32-int8", teacher_config())
    with pytest.raises(SystemExit, match="the teacher has 2"):
        qs.harness.parse_shape("L3-h2-f32", teacher_config())
    with pytest.raises(ValueError):
        qs.harness.parse_shape("L1-h8-f32", teacher_config())  # more heads than the teacher has


def test_a_shape_with_its_precision():
    int8 = qs.harness.parse_shape("L2-h2-f32-int8", teacher_config(), precision=True)
    both = qs.harness.parse_shape("L1-h4-f64-int8+emb", teacher_config(), precision=True)
    plain = qs.harness.parse_shape("L1-h4-f64", teacher_config(), precision=True)
    assert (int8.int8, int8.int8_embeddings, int8.num_layers) == (True, False, 2)
    assert (both.int8, both.int8_embeddings) == (True, True) and not plain.int8
    with pytest.raises(SystemExit, match=r"\[-int8\[\+emb\]\]"):
        qs.harness.parse_shape("L1-h4-f64-int4", teacher_config(), precision=True)


def test_spearman_matches_hand_computed_ranks():
    assert qs.harness.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert qs.harness.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks x: 1 2 3 4, y: 2 1 4 3 -> d^2 = 1+1+1+1 = 4 -> 1 - 6*4/(4*15) = 0.6
    assert qs.harness.spearman([0.1, 0.2, 0.3, 0.4], [5, 1, 9, 7]) == pytest.approx(0.6)
    # ties get their mean rank: x ranks 1.5 1.5 3, y ranks 1 2 3 -> Pearson of the ranks
    assert qs.harness.spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(0.8660254, rel=1e-6)
    assert qs.harness.spearman([1, 2], [1, 2]) is None and qs.harness.spearman([1, 1, 1], [1, 2, 3]) is None


def run(shape, seed, score, accuracy, parameters=1000):
    return {"shape": shape, "seed": seed, "score": score, "accuracy": accuracy, "parameters": parameters,
            "keep_layers": [0, 1], "steps": 10, "train_seconds": 60.0, "score_seconds": 1.0}


def test_a_score_that_orders_shapes_as_accuracy_does_correlates_plus_one():
    runs = [run(name, seed, score, acc + 0.002 * seed, parameters)
            for seed in (1, 2, 3)
            for name, score, acc, parameters in (("A", 0.1, 0.88, 100), ("B", 0.2, 0.86, 300), ("C", 0.4, 0.80, 200))]
    summary = qs.summarize(runs, ["A", "B", "C"])
    assert summary["rank_correlation_score_accuracy"] == pytest.approx(1.0)  # lower KL, higher accuracy
    assert summary["rank_correlation_score_accuracy_per_seed"] == {"1": pytest.approx(1.0), "2": pytest.approx(1.0),
                                                                   "3": pytest.approx(1.0)}
    assert summary["rank_correlation_parameters_accuracy"] == pytest.approx(-0.5)
    first = summary["rows"][0]
    assert first["accuracy_mean"] == pytest.approx(0.884) and first["accuracy_std"] == pytest.approx(0.002)
    assert summary["accuracy_range_points"] == pytest.approx(8.0)
    results = {"teacher": {"name": "t", "layers": 2, "dev_accuracy": 0.9}, "summary": summary,
               "data": {"labelled_rows": 10, "transfer_rows": 10, "dev_rows": 5},
               "settings": {"epochs": 1.0, "prune_every_steps": 2}, "steps": 10, "command": "python x",
               "machine": {"cpu_model": "cpu", "cpu_count": 2, "torch": "2"}, "total_train_minutes": 9.0}
    text = qs.markdown(results)
    assert "over 3 shapes: +1.000** (goal >= 0.7: met)" in text
    assert "| A | 0.00M | 0.1000 ± 0.0000 | 0,1 | 88.40 ± 0.20 | 3 |" in text

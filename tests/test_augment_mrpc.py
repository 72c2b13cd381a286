"""benchmarks/augment_mrpc.py bookkeeping: per-row statistics, gains and their verdicts, the report; no models."""

import json
import statistics

import pytest
from helpers.benchmarks import import_benchmark, table_with

am = import_benchmark("augment_mrpc")
harness = import_benchmark("harness")


def run(acc, f1, epoch=1):
    return {"test_accuracy": acc, "test_f1": f1, "chosen_epoch": epoch, "selection_accuracy": 0.8,
            "test_agreement_with_teacher": 0.9, "seconds_per_step": 0.5, "train_seconds": 100.0}


def results(rows: dict, teacher=(0.80, 0.86)):
    runs = {row: {str(seed): run(acc, f1) for seed, (acc, f1) in zip((1, 2, 3), pairs)}
            for row, pairs in rows.items() if pairs}
    return {"teacher": {"test_accuracy": teacher[0], "test_f1": teacher[1], "selection_accuracy": 0.81},
            "runs": runs}


def full():
    return results({"no_teacher": [(0.70, 0.80), (0.72, 0.81), (0.74, 0.82)],
                    "logits_labelled": [(0.71, 0.805), (0.73, 0.815), (0.75, 0.825)],
                    "logits_augmented": [(0.77, 0.85), (0.78, 0.85), (0.79, 0.85)]})


def test_summary_is_the_mean_and_sample_std_of_accuracy_and_f1():
    s = am.summarize(full())
    assert s["no_teacher"]["accuracy"]["mean"] == pytest.approx(0.72)
    assert s["no_teacher"]["accuracy"]["std"] == pytest.approx(statistics.stdev([0.70, 0.72, 0.74]))
    assert s["no_teacher"]["f1"]["std"] == pytest.approx(0.01)
    assert s["logits_augmented"]["f1"]["std"] == pytest.approx(0.0)
    assert s["logits_augmented"]["accuracy"]["percent_of_teacher"] == pytest.approx(100 * 0.78 / 0.80)
    assert s["logits_augmented"]["f1"]["percent_of_teacher"] == pytest.approx(100 * 0.85 / 0.86)
    assert s["logits_augmented"]["test_accuracy"] == [0.77, 0.78, 0.79]
    assert "gain_points" not in s["no_teacher"]["accuracy"]


def test_gains_over_no_teacher_and_their_verdicts():
    s = am.summarize(full())
    acc = s["logits_augmented"]["accuracy"]
    assert acc["gain_points"] == pytest.approx(6.0)
    assert acc["gain_points_per_seed"] == pytest.approx({"1": 7.0, "2": 6.0, "3": 5.0})
    assert acc["spread_points"] == pytest.approx(2.0) and acc["verdict"] == "gain"
    # 1 point of gain with a 2-point spread: not measurable.
    assert s["logits_labelled"]["accuracy"]["verdict"] == "no measurable gain"
    assert s["logits_labelled"]["f1"]["gain_points"] == pytest.approx(0.5)
    assert s["logits_labelled"]["f1"]["verdict"] == "no measurable gain"
    augmentation = s["comparisons"]["logits_augmented vs logits_labelled"]
    assert augmentation["accuracy"]["gain_points"] == pytest.approx(5.0)
    assert augmentation["f1"]["gain_points"] == pytest.approx(3.5) and augmentation["f1"]["verdict"] == "gain"


def test_verdict_text():
    assert am.verdict(-3.0, 1.0) == "loss"
    assert am.verdict(0.5, 1.0) == "no measurable gain"
    assert am.verdict(1.0, None) == "spread n/a (1 seed)"
    assert am.verdict(None, None) is None


def test_one_seed_and_missing_rows():
    s = am.summarize(results({"no_teacher": [(0.70, 0.80)], "logits_augmented": [(0.75, 0.83)]}))
    assert s["no_teacher"]["accuracy"]["std"] is None and s["logits_labelled"]["n"] == 0
    assert s["logits_augmented"]["accuracy"]["verdict"] == "spread n/a (1 seed)"
    assert s["comparisons"]["logits_augmented vs logits_labelled"]["accuracy"]["gain_points"] is None
    table = _table(am.markdown(_report(results({"no_teacher": [(0.70, 0.80)],
                                                "logits_augmented": [(0.75, 0.83)]}))))
    assert list(table) == list(am.ROWS)
    assert table["logits_labelled"]["test acc."] == "not run"
    assert table["no_teacher"]["test acc."].startswith("70.00 (")  # no std from one seed
    assert table["logits_augmented"]["gain over no_teacher: acc. / F1 (points)"].startswith("+5.00 (")


def test_markdown_table_holds_the_summary():
    table = _table(am.markdown(_report(full())))
    assert list(table) == list(am.ROWS)
    no_teacher = table["no_teacher"]
    assert (no_teacher["test acc."], no_teacher["test F1"]) == ("72.00 ± 2.00", "81.00 ± 1.00")
    assert no_teacher["% of teacher: acc. / F1"] == "90.0% / 94.2%"
    assert no_teacher["gain over no_teacher: acc. / F1 (points)"] == "–"
    # Gains within the spread carry the spread, gains beyond it do not.
    acc_gain, f1_gain = table["logits_labelled"]["gain over no_teacher: acc. / F1 (points)"].split(" / ")
    assert acc_gain.startswith("+1.00 (") and "2.00" in acc_gain and f1_gain.startswith("+0.50 (")
    assert table["logits_augmented"]["gain over no_teacher: acc. / F1 (points)"] == "+6.00 / +4.00"
    assert table["logits_augmented"]["per seed: acc. / F1 (epoch)"].split(", ")[0] == "s1: 77.00 / 85.00 (ep 1)"
    assert table["logits_augmented"]["agreement with teacher"] == "90.0%"


def test_results_with_other_settings_are_set_aside(tmp_path):
    path = tmp_path / "augment_mrpc.json"
    path.write_text(json.dumps({"settings": {"epochs": 3}, "runs": {"no_teacher": {"1": {}}}}))
    assert harness.load_previous(path, {"settings": {"epochs": 3}, "runs": {}})["runs"] == {"no_teacher": {"1": {}}}
    fresh = {"settings": {"epochs": 2}, "runs": {}}
    assert harness.load_previous(path, fresh) is fresh
    assert not path.exists() and len(list(tmp_path.glob("augment_mrpc.json.old-*"))) == 1


def _report(r):
    r.update(summary=am.summarize(r), seeds=[1, 2, 3], command="python benchmarks/augment_mrpc.py --seeds 1 2 3",
             threads=2, machine={}, lscpu_vnni="", omp_wait_policy="PASSIVE",
             settings={"split_seed": 0, "max_length": 128, "batch_size": 32, "teacher_epochs": 3.0,
                       "teacher_learning_rate": 5e-5, "teacher_seed": 42, "student_learning_rate": 1e-4,
                       "warmup": 0.06, "weight_decay": 0.01, "alpha": 0.5, "temperature": 2.0, "epochs": 3,
                       "augment_epochs": 2},
             data={"source": "mrpc", "labelled_rows": 3676, "selection_rows": 400, "test_rows": 1725})
    return r


def _table(md: str) -> dict:
    return {row["row"].split(":")[0]: row for row in table_with(md, "test acc.")}

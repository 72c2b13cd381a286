"""scripts/kd_sweep.py bookkeeping: one line per configuration from the transfer_benchmark results, no models."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # the scripts import each other by name

import kd_sweep  # noqa: E402


def results(row, accs, alpha=0.5, temperature=2.0, lr=1e-4, epochs=3, train_agree=0.95):
    runs = {str(seed): {"dev_accuracy": acc, "chosen_epoch": 3, "dev_agreement_with_teacher": 0.9,
                        "train_agreement_with_teacher": train_agree, "train_accuracy": 0.93}
            for seed, acc in zip((1, 2, 3), accs)}
    return {"settings": {"alpha": alpha, "temperature": temperature, "student_learning_rate": lr, "epochs": epochs},
            "runs": {row: runs}}


def test_report_lines_gains_and_spread(tmp_path):
    main = results("no_teacher", [0.84, 0.85, 0.86])
    main["runs"].update(results("logits_labelled", [0.85, 0.855, 0.86])["runs"])
    main["teacher"] = {"dev_accuracy": 0.9, "labelled_accuracy": 0.94, "labelled_mean_top_probability_T1": 0.91,
                       "dev_predictions": [1, 0]}
    (tmp_path / "transfer_sst2.json").write_text(json.dumps(main))
    sweep = tmp_path / "kd_sweep" / "kd_a1.0_T2"
    sweep.mkdir(parents=True)
    (sweep / "transfer_sst2.json").write_text(json.dumps(results("logits_labelled", [0.88, 0.89, 0.90], alpha=1.0)))

    out = kd_sweep.report(tmp_path)
    lines = {line["name"]: line for line in out["configs"]}
    assert set(lines) == {"kd_a0.5_T2 (reference)", "no_teacher (reference)", "kd_a1.0_T2"}
    assert lines["kd_a1.0_T2"]["gain_points"] == pytest.approx(4.0)
    assert lines["kd_a1.0_T2"]["alpha"] == 1.0 and lines["no_teacher (reference)"]["alpha"] is None
    assert lines["kd_a0.5_T2 (reference)"]["gain_points"] == pytest.approx(0.5)
    md = (tmp_path / "kd_sweep.md").read_text()
    assert "+4.00 |" in md and "+0.50 (within spread)" in md  # the std of no_teacher is 1.0 point
    assert "dev_predictions" not in json.dumps(out["teacher"])


def test_a_configuration_that_changes_more_than_its_flags_is_refused():
    reference = {"alpha": 0.5, "temperature": 2.0, "student_learning_rate": 1e-4, "epochs": 3, "max_length": 64}
    kd_sweep.check_one_change("kd_a1.0_T2", ["--alpha", "1.0"], {**reference, "alpha": 1.0}, reference)
    with pytest.raises(SystemExit, match=r"differs from the reference run in \['max_length'\]"):
        kd_sweep.check_one_change("kd_a1.0_T2", ["--alpha", "1.0"], {**reference, "alpha": 1.0, "max_length": 128},
                                  reference)

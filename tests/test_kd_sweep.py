"""benchmarks/kd_sweep.py bookkeeping: one line per configuration from the transfer_benchmark results, and each
configuration run as transfer_benchmark.py's own command line; no models."""

import json
import sys

import pytest
from helpers.benchmarks import BENCHMARKS, import_benchmark, table_with

kd_sweep = import_benchmark("kd_sweep")


def results(row, accs, alpha=0.5, temperature=2.0, lr=1e-4, epochs=3, train_agree=0.95):
    runs = {str(seed): {"dev_accuracy": acc, "chosen_epoch": 3, "dev_agreement_with_teacher": 0.9,
                        "train_agreement_with_teacher": train_agree, "train_accuracy": 0.93}
            for seed, acc in zip((1, 2, 3), accs)}
    return {"settings": {"alpha": alpha, "temperature": temperature, "student_learning_rate": lr, "epochs": epochs},
            "runs": {row: runs}}


def write_main(folder):
    main = results("no_teacher", [0.84, 0.85, 0.86])
    main["runs"].update(results("logits_labelled", [0.85, 0.855, 0.86])["runs"])
    main["teacher"] = {"dev_accuracy": 0.9, "labelled_accuracy": 0.94, "labelled_mean_top_probability_T1": 0.91,
                       "dev_predictions": [1, 0]}
    (folder / "transfer_sst2.json").write_text(json.dumps(main))


def test_report_lines_gains_and_spread(tmp_path):
    write_main(tmp_path)
    sweep = tmp_path / "kd_sweep" / "kd_a1.0_T2"
    sweep.mkdir(parents=True)
    (sweep / "transfer_sst2.json").write_text(json.dumps(results("logits_labelled", [0.88, 0.89, 0.90], alpha=1.0)))

    out = kd_sweep.report(tmp_path)
    lines = {line["name"]: line for line in out["configs"]}
    assert set(lines) == {"kd_a0.5_T2 (reference)", "no_teacher (reference)", "kd_a1.0_T2"}
    assert lines["kd_a1.0_T2"]["gain_points"] == pytest.approx(4.0)
    assert lines["kd_a1.0_T2"]["mean"] == pytest.approx(0.89) and lines["kd_a1.0_T2"]["std"] == pytest.approx(0.01)
    assert lines["kd_a1.0_T2"]["alpha"] == 1.0 and lines["no_teacher (reference)"]["alpha"] is None
    assert lines["kd_a0.5_T2 (reference)"]["gain_points"] == pytest.approx(0.5)
    assert lines["kd_a0.5_T2 (reference)"]["spread_points"] == pytest.approx(1.0)  # no_teacher's std, 1 point
    assert "dev_predictions" not in json.dumps(out["teacher"])
    assert json.loads((tmp_path / "kd_sweep.json").read_text()) == json.loads(json.dumps(out))

    table = {row["configuration"]: row for row in table_with((tmp_path / "kd_sweep.md").read_text(), "gain (points)")}
    assert list(table) == ["kd_a0.5_T2 (reference)", "no_teacher (reference)", "kd_a1.0_T2"]
    assert table["kd_a1.0_T2"]["dev acc. mean ± std"] == "89.00 ± 1.00"
    assert table["kd_a1.0_T2"]["gain (points)"] == "+4.00"
    # A gain smaller than the spread is marked as such, a larger one is not.
    assert table["kd_a0.5_T2 (reference)"]["gain (points)"].startswith("+0.50 (")
    assert table["no_teacher (reference)"]["gain (points)"] == "–"
    assert (table["kd_a1.0_T2"]["alpha"], table["no_teacher (reference)"]["alpha"]) == ("1", "–")


def test_a_configuration_that_changes_more_than_its_flags_is_refused():
    reference = {"alpha": 0.5, "temperature": 2.0, "student_learning_rate": 1e-4, "epochs": 3, "max_length": 64}
    kd_sweep.check_one_change("kd_a1.0_T2", ["--alpha", "1.0"], {**reference, "alpha": 1.0}, reference)
    with pytest.raises(SystemExit, match=r"differs from the reference run in \['max_length'\]"):
        kd_sweep.check_one_change("kd_a1.0_T2", ["--alpha", "1.0"], {**reference, "alpha": 1.0, "max_length": 128},
                                  reference)


def test_each_configuration_runs_transfer_benchmarks_command_line(tmp_path, monkeypatch):
    write_main(tmp_path)
    commands = []

    def run(command, check):
        assert check
        commands.append(command)
        out = tmp_path / "kd_sweep" / command[command.index("--results-dir") + 1].rsplit("/", 1)[1]
        out.mkdir(parents=True)
        (out / "transfer_sst2.json").write_text(json.dumps(results("logits_labelled", [0.87, 0.88, 0.89],
                                                                   temperature=4.0)))

    monkeypatch.setattr(kd_sweep.subprocess, "run", run)
    assert kd_sweep.main(["--configs", "kd_a0.5_T4", "--seeds", "1", "2", "3", "--threads", "1",
                          "--results-dir", str(tmp_path)]) == 0
    (command,) = commands
    assert command[:2] == [sys.executable, str(BENCHMARKS / "transfer_benchmark.py")]
    flags = command[2:]
    assert flags[flags.index("--rows") + 1] == "logits_labelled"
    assert flags[flags.index("--temperature") + 1] == "4"
    assert flags[flags.index("--teacher-from") + 1] == str(tmp_path / "transfer_sst2.json")
    assert "--skip-step-timing" in flags and flags[flags.index("--threads") + 1] == "1"
    lines = {line["name"]: line for line in json.loads((tmp_path / "kd_sweep.json").read_text())["configs"]}
    assert lines["kd_a0.5_T4"]["temperature"] == 4.0 and lines["kd_a0.5_T4"]["mean"] == pytest.approx(0.88)

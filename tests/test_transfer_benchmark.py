"""benchmarks/transfer_benchmark.py bookkeeping: per-row statistics, goal verdicts and the report, without models."""

import json
import statistics

import pytest
from helpers.benchmarks import import_benchmark, table_with

harness = import_benchmark("harness")
tb = import_benchmark("transfer_benchmark")


def run(acc, epoch=1, agree=0.9, sps=0.5):
    return {"dev_accuracy": acc, "chosen_epoch": epoch, "dev_agreement_with_teacher": agree, "seconds_per_step": sps}


def results(no_teacher, labelled, transfer, teacher=0.90, cached=1.05):
    runs = {name: {str(seed): run(acc) for seed, acc in zip((1, 2, 3), accs)}
            for name, accs in (("no_teacher", no_teacher), ("logits_labelled", labelled),
                               ("logits_transfer", transfer)) if accs}
    return {"teacher": {"dev_accuracy": teacher, "selection_accuracy": 0.9}, "runs": runs,
            "step_timing": {"plain": {"seconds_per_step": 1.0, "steps": 20},
                            "distilled_cached": {"seconds_per_step": cached, "ratio_to_plain": cached},
                            "distilled_live": {"seconds_per_step": 2.0, "ratio_to_plain": 2.0}, "warmup_steps": 2}}


def test_summary_is_the_mean_and_sample_std_per_row():
    r = results([0.80, 0.82, 0.84], [0.81, 0.83, 0.85], [0.88, 0.89, 0.90])
    s = tb.summarize(r)
    assert s["no_teacher"]["mean"] == pytest.approx(0.82)
    assert s["no_teacher"]["std"] == pytest.approx(statistics.stdev([0.80, 0.82, 0.84]))
    assert s["logits_transfer"]["gain_points"] == pytest.approx(7.0)
    assert s["logits_transfer"]["gain_points_per_seed"] == pytest.approx([8.0, 7.0, 6.0])
    assert s["logits_transfer"]["percent_of_teacher"] == pytest.approx(100 * 0.89 / 0.90)
    assert s["no_teacher"]["gain_points"] is None


def test_verdicts_on_the_means_and_gains_within_the_spread():
    r = results([0.80, 0.82, 0.84], [0.81, 0.83, 0.85], [0.88, 0.89, 0.90])
    s = tb.summarize(r)
    v = tb.verdicts(r, s)
    assert v["best_distilled"] == "logits_transfer"
    assert v["gain_over_no_teacher"]["met"] and v["gain_over_no_teacher"]["measurable"]
    assert not v["of_teacher"]["met"]  # 98.9% of the teacher
    assert v["cached_step"]["met"]
    assert v["gain_over_no_teacher"]["points"] == pytest.approx(7.0)
    assert v["gain_over_no_teacher"]["spread_points"] == pytest.approx(2.0)
    assert v["cached_step"]["ratio_to_plain"] == 1.05
    # logits_labelled gains 1 point with a 2-point spread: no measurable gain.
    assert s["logits_labelled"]["gain_points"] == pytest.approx(1.0)
    assert s["logits_labelled"]["spread_points"] == pytest.approx(2.0)
    assert harness.measurable(s["logits_labelled"]["gain_points"], s["logits_labelled"]["spread_points"]) is False
    r.update(summary=s, verdicts=v, settings=_settings(), data=_data(), seeds=[1, 2, 3], command="python x",
             threads=2, machine={}, lscpu_vnni="")
    table = {row["row"].split(":")[0]: row for row in table_with(tb.markdown(r), "% of teacher")}
    # Every MiniLM row is listed, the ones without runs as not run; the MPNet-6 rows only once they have runs.
    assert list(table) == list(tb.MAIN_ROWS + tb.EXTRA_ROWS)
    assert table["logits_transfer_2ep"]["dev acc. mean ± std"] == "not run"
    assert table["logits_transfer"]["dev acc. mean ± std"] == "89.00 ± 1.00"
    assert table["logits_transfer"]["% of teacher"] == "98.9%"
    assert table["logits_transfer"]["gain over no_teacher (points)"] == "+7.00"
    assert table["logits_labelled"]["gain over no_teacher (points)"].startswith("+1.00 (")  # within the spread
    assert table["no_teacher"]["gain over no_teacher (points)"] == "–"
    timing = {row["configuration"]: row for row in table_with(tb.markdown(r), "x plain")}
    assert (timing["distilled_cached"]["s/step"], timing["distilled_cached"]["x plain"]) == ("1.050", "1.05")


def test_one_seed_has_no_spread_and_missing_rows_are_marked():
    r = results([0.80], [], [0.83])
    s = tb.summarize(r)
    assert s["no_teacher"]["std"] is None and s["logits_labelled"]["n"] == 0
    v = tb.verdicts(r, s)
    assert v["gain_over_no_teacher"]["measurable"] is None
    r.update(summary=s, verdicts=v, settings=_settings(), data=_data(), seeds=[1], command="python x", threads=2,
             machine={}, lscpu_vnni="")
    table = {row["row"].split(":")[0]: row for row in table_with(tb.markdown(r), "% of teacher")}
    assert list(table) == list(tb.MAIN_ROWS + tb.EXTRA_ROWS)
    assert table["logits_labelled"]["dev acc. mean ± std"] == "not run"
    assert table["no_teacher"]["dev acc. mean ± std"].startswith("80.00 (")  # no std from one seed
    assert table["logits_transfer"]["gain over no_teacher (points)"].startswith("+3.00 (")


def test_report_only_rewrites_the_report_and_keeps_the_recorded_machine(tmp_path, capsys):
    r = results([0.80, 0.82, 0.84], [0.81, 0.83, 0.85], [0.88, 0.89, 0.90])
    r.update(settings=_settings(), data=_data(), seeds=[1, 2, 3], command="python benchmarks/transfer_benchmark.py",
             threads=2, machine={"cpu_model": "the machine that ran it"}, lscpu_vnni="")
    (tmp_path / "transfer_sst2.json").write_text(json.dumps(r))
    assert tb.main(["--report-only", "--results-dir", str(tmp_path)]) == 0
    written = json.loads((tmp_path / "transfer_sst2.json").read_text())
    assert written["machine"] == {"cpu_model": "the machine that ran it"}
    assert written["runs"] == r["runs"] and written["verdicts"]["best_distilled"] == "logits_transfer"
    assert written["summary"]["logits_transfer"]["mean"] == pytest.approx(0.89)
    assert (tmp_path / "transfer_sst2.md").read_text() == tb.markdown(written)


def test_teacher_facts_are_reused_from_a_run_whose_teacher_folder_is_this_runs(tmp_path, monkeypatch):
    """--teacher-from compares the recorded teacher folder ("<work-dir>/teachers/...", relative to each run's own
    --work-dir) and the split settings; a match reuses the teacher's facts instead of scoring it again."""
    args = tb.build_parser().parse_args(["--work-dir", str(tmp_path / "work"), "--results-dir", str(tmp_path / "r"),
                                         "--teacher-from", str(tmp_path / "main.json")])
    args.command, args.sampling = "python benchmarks/transfer_benchmark.py", "group_by_length"
    monkeypatch.setattr(tb.Experiment, "save", lambda self: None)
    monkeypatch.setattr(tb.Experiment, "teacher", lambda self: (_ for _ in ()).throw(LookupError("scored again")))
    experiment = tb.Experiment(args)
    folder = experiment.teacher_folder()
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"")
    facts = {"folder": f"<work-dir>/teachers/{folder.name}", "dev_accuracy": 0.9, "dev_predictions": [1, 0],
             "labelled_predictions": [0, 1]}
    (tmp_path / "main.json").write_text(json.dumps({"settings": experiment.settings, "teacher": facts}))
    experiment.run_teacher()
    assert experiment.results["teacher"] == facts

    other = tb.Experiment(args)
    (tmp_path / "main.json").write_text(json.dumps({"settings": experiment.settings,
                                                    "teacher": {**facts, "folder": "<work-dir>/teachers/another"}}))
    with pytest.raises(LookupError, match="scored again"):
        other.run_teacher()


def _settings():
    return {"split_seed": 0, "max_length": 64, "batch_size": 32, "teacher_epochs": 1.0, "teacher_learning_rate": 5e-5,
            "teacher_seed": 42, "student_learning_rate": 1e-4, "warmup": 0.06, "weight_decay": 0.01, "alpha": 0.5,
            "temperature": 2.0, "epochs": 3, "transfer_epochs": 1}


def _data():
    return {"source": "sst2", "labelled_rows": 4000, "selection_rows": 1000, "transfer_rows": 20000, "dev_rows": 872}

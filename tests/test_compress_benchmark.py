"""scripts/compress_benchmark.py bookkeeping: targets, finished runs, per-target summaries and the report, from
results files written here (no models, no clock)."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # the scripts import each other by name

import compress_benchmark as cb


def fake_run(work: Path, target: str, seed: int, accuracy: float, settings: dict | None = None) -> Path:
    folder = work / cb.run_name(target, seed)
    folder.mkdir(parents=True)
    stages = [{"stage": "teacher", "folder": None, "metrics": {"accuracy": 0.9}, "size_mb": 438.0,
               "latency_ms": 1000.0, "speedup": 1.0},
              {"stage": "03-int8", "folder": str(folder / "03-int8"), "metrics": {"accuracy": accuracy},
               "size_mb": 50.0, "latency_ms": 100.0, "speedup": 10.0}]
    (folder / "results.json").write_text(json.dumps({
        "plan": "L4-int8", "stages": stages, "target_met": True, "achieved": 10.0, "summary": "met"}))
    (folder / "bench_run.json").write_text(json.dumps({"seconds": 1.0, "threads": 1, "command": "x",
                                                       "settings": settings or {"epochs": 1.0}}))
    return folder


def measured(runs: list[dict], speedups: list[float], sizes: list[float]) -> dict:
    for run, speedup, size in zip(runs, speedups, sizes):
        kind, value = run["target"].split("=")
        run.update(speedup=speedup, latency_ms=1000.0 / speedup, size_mb=size)
        cost_ok = speedup >= float(value) if kind == "speedup" else size <= float(value)
        run.update(target_met=cost_ok, within_tolerance=cost_ok)
    return {"teacher": {"accuracy": 0.9, "latency_ms": 1000.0, "size_mb": 438.0}, "runs": runs,
            "machine": {"cpu_model": "test", "cpu_count": 2}, "latency_setup": {"what": "median", "rounds": 3},
            "command": "python scripts/compress_benchmark.py --phase measure", "settings": cb.run_settings(runs),
            "hand_made": None}


@pytest.mark.parametrize("text, expected", [("speedup=8", {"target_speedup": 8.0}),
                                            ("size_mb=60", {"target_size_mb": 60.0}),
                                            ("latency_ms=120.5", {"target_latency_ms": 120.5})])
def test_targets_parse(text, expected):
    assert cb.parse_target(text) == expected


@pytest.mark.parametrize("text", ["speed=8", "speedup=", "speedup=fast", "8"])
def test_a_bad_target_names_what_would_be_right(text):
    with pytest.raises(SystemExit, match="speedup=<x>, latency_ms=<ms> or size_mb=<MB>|expected a number"):
        cb.parse_target(text)


def test_seeds_of_a_target_are_summarised_with_mean_and_spread(tmp_path):
    for seed, acc in ((1, 0.86), (2, 0.88), (3, 0.87)):
        fake_run(tmp_path, "speedup=8", seed, acc)
    fake_run(tmp_path, "size_mb=60", 1, 0.85)
    (tmp_path / "speedup4-seed1").mkdir()  # unfinished: no results.json, not reported
    runs = cb.finished_runs(tmp_path, ["speedup=8", "size_mb=60", "speedup=4"])
    assert sorted((r["target"], r["seed"]) for r in runs) == [("size_mb=60", 1), ("speedup=8", 1),
                                                             ("speedup=8", 2), ("speedup=8", 3)]
    results = measured(runs, [8.5 if r["target"] == "speedup=8" else 9.0 for r in runs],
                       [55.0] * len(runs))
    rows = {row["target"]: row for row in cb.summarize(results)}
    assert rows["speedup=8"]["seeds"] == [1, 2, 3]
    assert rows["speedup=8"]["accuracy_mean"] == pytest.approx(87.0)
    assert rows["speedup=8"]["accuracy_std"] == pytest.approx(1.0)
    assert rows["size_mb=60"]["accuracy_std"] is None and rows["size_mb=60"]["target_met"]
    md = cb.markdown(results)
    assert "| speedup=8 | 1,2,3 | L4-int8 | 87.00 ± 1.00 | -3.00 |" in md
    assert "| size_mb=60 | 1 |" in md and "85.00 | -5.00 |" in md
    (tmp_path / "speedup8-seed1" / "plan.md").write_text("# plan")
    cb.copy_run_reports(runs, tmp_path / "reports")
    assert (tmp_path / "reports" / "speedup8-seed1" / "plan.md").read_text() == "# plan"
    assert (tmp_path / "reports" / "size_mb60-seed1" / "results.json").is_file()


def test_a_missed_target_is_reported_as_missed(tmp_path):
    fake_run(tmp_path, "speedup=12", 1, 0.8)
    results = measured(cb.finished_runs(tmp_path, ["speedup=12"]), [11.0], [50.0])
    row = cb.summarize(results)[0]
    assert not row["target_met"]
    assert "| no (no) |" in cb.markdown(results)


def test_runs_with_other_training_settings_are_listed_apart(tmp_path):
    fake_run(tmp_path, "speedup=8", 1, 0.86, {"epochs": 1.0})
    fake_run(tmp_path, "speedup=8", 2, 0.87, {"epochs": 2.0})
    settings = cb.run_settings(cb.finished_runs(tmp_path, ["speedup=8"]))
    assert isinstance(settings, list) and [s["settings"]["epochs"] for s in settings] == [1.0, 2.0]


def test_a_measured_result_is_judged_by_the_targets_own_rule_loosened_by_the_tolerance():
    assert not cb.met("speedup=8", 125.0, 140.0, 932.5, 0.0)  # 7.46x
    assert cb.met("speedup=8", 122.5, 140.0, 932.5, 0.05) and not cb.met("speedup=8", 125.0, 140.0, 932.5, 0.05)
    assert cb.met("size_mb=60", 500.0, 55.2, 932.5, 0.0) and not cb.met("size_mb=60", 1.0, 61.0, 932.5, 0.0)
    assert cb.met("latency_ms=100", 104.0, 1.0, 932.5, 0.05) and not cb.met("latency_ms=100", 106.0, 1.0, 932.5, 0.05)

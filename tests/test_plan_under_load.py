"""benchmarks/plan_under_load.py's report, from made-up plans (no models, no clock); the busy loops stop."""

import time

from helpers.benchmarks import import_benchmark, table_with

pul = import_benchmark("plan_under_load")


def run(chosen, busy=None, speedups=None, error=None):
    return {"chosen": chosen, "error": error, "busy": busy, "seconds": 10.0, "loadavg_before_after": [0.1, 0.2],
            "teacher_ms": None if error else 100.0, "speedups": speedups or {}}


def results(quiet, loaded):
    return {"machine": {"cpu_model": "test", "cpu_count": 2, "torch": "x"}, "busy_loops": 2, "target_speedup": 3.0,
            "batch_size": 8, "seq_len": 128, "threads": 2, "rounds": 10, "command": "python x", "quiet": quiet,
            "loaded": loaded}


def test_the_report_says_whether_the_plans_agree_and_how_the_speedups_moved():
    same = pul.markdown(results(run("A", speedups={"A": 3.2, "B": 2.0}),
                                run("A", busy="1 of 2 twins ...", speedups={"A": 3.52, "B": 2.0})))
    assert same.startswith("# The same plan with and without 2 busy loops: yes")
    rows = table_with(same, "made on a busy machine")
    assert [r["made on a busy machine"] for r in rows] == ["no", "1 of 2 twins ..."]
    assert "min 1.000, max 1.100" in same
    failed = pul.markdown(results(run("A", speedups={"A": 3.2}), run(None, error="cannot meet target_speedup=3")))
    assert failed.startswith("# The same plan with and without 2 busy loops: NO")
    assert "cannot meet target_speedup=3" in failed and "loaded over quiet" not in failed
    assert pul.summary("cannot meet", 1.0, (0.1, 0.2))["error"] == "cannot meet"


def test_busy_loops_run_until_stopped():
    loops = pul.busy_loops(1)
    time.sleep(0.2)
    assert loops[0].poll() is None
    pul.stop(loops)
    assert loops[0].returncode is not None

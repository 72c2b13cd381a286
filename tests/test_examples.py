"""examples/: each script run end to end on tiny random models (hidden 32, 2 layers, a word-level tokenizer) and a
few csv rows written here, offline, a few steps; then what it wrote is loaded back and checked."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.cli_fixtures import save_tiny_teacher, sentences, write_csv
from helpers.fake_timing import timing_by
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import distilkit
import distilkit.measure
from distilkit.compress import ModelShape
from distilkit.quantization import Int8Linear

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def example(name: str):
    """examples/<name>.py as a module, to call its main(argv) like its command line."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def csv_file(folder: Path, name: str, n: int, seed: int, labels: bool = True) -> Path:
    rows = sentences(n, seed=seed)
    if not labels:
        rows = [{"sentence": row["sentence"]} for row in rows]
    return write_csv(folder / name, rows)


@torch.inference_mode()
def logits(model, folder: Path, texts: list[str]) -> torch.Tensor:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return model.eval()(**tokenizer(texts, padding=True, return_tensors="pt")).logits


def test_the_examples_use_public_names_only_and_never_each_other():
    for path in EXAMPLES.glob("*.py"):
        text = path.read_text()
        assert "distilkit.cli" not in text and "from examples" not in text and "import examples" not in text
        assert len(text.splitlines()) <= 150, f"{path.name} is {len(text.splitlines())} lines"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["distill_with_transfer_data", "prune_and_quantize", "compress_to_budget"])
def test_each_example_is_a_command_line(name):
    """Run as a user runs it (a fresh process, the file's own folder on sys.path): --help lists its flags."""
    out = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), "--help"], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=True).stdout
    assert "--output_dir" in out


def test_distill_with_transfer_data(tmp_path):
    teacher = save_tiny_teacher(tmp_path / "teacher", layers=2, seed=0)
    student = save_tiny_teacher(tmp_path / "student", layers=1, seed=1)  # a smaller model with the same tokenizer
    train = csv_file(tmp_path, "train.csv", 16, seed=0)
    transfer = csv_file(tmp_path, "transfer.csv", 12, seed=1, labels=False)
    validation = csv_file(tmp_path, "validation.csv", 8, seed=2)
    out = tmp_path / "distilled"
    result = example("distill_with_transfer_data").main([
        "--teacher", str(teacher), "--student", str(student), "--train_file", str(train),
        "--transfer_file", str(transfer), "--validation_file", str(validation), "--output_dir", str(out),
        "--max_steps", "4", "--batch_size", "8", "--max_length", "16"])

    assert result["steps"] == 4
    assert (result["labelled_rows"], result["transfer_rows"], result["training_rows"]) == (16, 12, 28)
    assert 0.0 <= result["metrics"]["eval_accuracy"] <= 1.0
    # The folder reloads as a plain transformers classifier with its tokenizer, and it is the trained student:
    # the same shape as the student it started from, different weights.
    texts = [row["sentence"] for row in sentences(5, seed=3)]
    trained = AutoModelForSequenceClassification.from_pretrained(out)
    before = AutoModelForSequenceClassification.from_pretrained(student)
    assert trained.config.num_hidden_layers == 1 and trained.config.num_labels == 2
    assert logits(trained, out, texts).shape == (5, 2)
    assert not torch.allclose(logits(trained, out, texts), logits(before, student, texts))


def test_prune_and_quantize(tmp_path):
    model = save_tiny_teacher(tmp_path / "fine-tuned", layers=2, seed=0)  # 2 layers x 4 heads
    data = csv_file(tmp_path, "data.csv", 24, seed=0)
    out = tmp_path / "pruned-int8"
    summary = example("prune_and_quantize").main([
        "--model", str(model), "--data_file", str(data), "--prune_fraction", "0.25", "--scoring_batches", "2",
        "--batch_size", "8", "--recovery_steps", "2", "--quantize_embeddings", "--output_dir", str(out)])

    assert summary["heads"]["before"] == 8 and summary["heads"]["after"] == 6
    assert sum(len(heads) for heads in summary["heads"]["removed"].values()) == 2
    # What was saved is what was measured: the reloaded int8 model gives the in-memory model's logits.
    assert summary["max_logit_difference_reloaded"] <= 1e-5
    assert summary["accuracy"]["reloaded"] == summary["accuracy"]["pruned + int8"]
    assert summary["weights_mb"]["saved"] < summary["weights_mb"]["fine-tuned"]

    reloaded = distilkit.from_pretrained(out)
    assert sum(len(layer) for layer in distilkit.pruning.kept_heads(reloaded)) == 6
    assert any(isinstance(module, Int8Linear) for module in reloaded.modules())
    float_model = AutoModelForSequenceClassification.from_pretrained(model)
    texts = [row["sentence"] for row in sentences(6, seed=4)]
    assert logits(reloaded, out, texts).shape == logits(float_model, model, texts).shape == (6, 2)


def fake_ms(shape: ModelShape) -> float:
    """A deterministic latency read off a shape (one unit per head, one per 8 FFN neurons; int8 halves them)."""
    return 1 + sum(h + f / 8 for h, f in zip(shape.heads, shape.ffn)) * (0.5 if shape.int8 else 1)


@pytest.fixture
def fake_latency(monkeypatch):
    """Latency from the models' shapes instead of a clock, so a speedup target is met or missed for certain."""
    monkeypatch.setattr(distilkit.measure, "interleaved_timing", timing_by(lambda m: fake_ms(ModelShape.of(m))))


@pytest.mark.parametrize("target, value", [("--target_speedup", "3"), ("--target_size_mb", "0.05")])
def test_compress_to_budget(tmp_path, fake_latency, target, value):
    teacher = save_tiny_teacher(tmp_path / "teacher", layers=2, seed=0)
    train = csv_file(tmp_path, "train.csv", 16, seed=0)
    validation = csv_file(tmp_path, "validation.csv", 8, seed=1)
    transfer = csv_file(tmp_path, "transfer.csv", 8, seed=2, labels=False)
    out = tmp_path / "compressed"
    result = example("compress_to_budget").main([
        "--teacher", str(teacher), "--train_file", str(train), "--validation_file", str(validation),
        "--transfer_file", str(transfer), target, value, "--latency_batch_size", "2", "--latency_seq_len", "12",
        "--latency_threads", "1", "--latency_cache", str(tmp_path / "latency.json"), "--output_dir", str(out),
        "--max_steps", "2", "--prune_every_steps", "1", "--batch_size", "4", "--max_length", "12"])

    assert result.plan.target.name == target.removeprefix("--") and result.plan.target.value == float(value)
    assert result.target_met
    final = distilkit.from_pretrained(result.final.source)
    assert (out / "results.json").is_file()
    planned, built = result.plan.shape, ModelShape.of(final)
    assert (built.num_layers, sum(built.heads), sum(built.ffn), built.int8) == \
        (planned.num_layers, sum(planned.heads), sum(planned.ffn), planned.int8)
    if target == "--target_size_mb":
        assert distilkit.measure.folder_size_mb(result.final.source) <= 0.05
    else:
        assert result.achieved >= 3.0  # the final model's measured speedup over the teacher
    assert "accuracy" in result.final.metrics

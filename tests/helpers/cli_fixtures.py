"""Helpers for the CLI tests (this module holds no tests): a tiny teacher saved with a word-level tokenizer,
small CSV data sets, and recipe files that point at them. Everything is built here; nothing is downloaded."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import yaml
from transformers import BertTokenizer

from helpers.tiny_models import tiny_model

POSITIVE = "good great fine lovely happy superb nice brilliant warm sweet bright clever".split()
NEGATIVE = "bad awful poor dull sad boring nasty weak cold sour grim clumsy".split()
NEUTRAL = "the a film book meal room it was is very quite and but with this that of day night show".split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tiny_tokenizer() -> BertTokenizer:
    words = SPECIAL + POSITIVE + NEGATIVE + NEUTRAL
    return BertTokenizer(vocab={word: i for i, word in enumerate(words)})


def save_tiny_teacher(folder: Path, num_labels: int = 2, layers: int = 2, seed: int = 0) -> Path:
    """A tiny BERT classifier (hidden 32, vocab 100, no dropout so runs are comparable) and its tokenizer."""
    model = tiny_model("seq", "bert", seed=seed, attn="sdpa", layers=layers, num_labels=num_labels,
                       hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def sentences(n: int, seed: int, pairs: bool = False) -> list[dict]:
    """Rows with a sentence (and a second one for pairs) whose label is 1 when positive words dominate."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        mood = POSITIVE if label else NEGATIVE
        words = rng.choices(NEUTRAL, k=rng.randint(3, 6)) + rng.choices(mood, k=2)
        rng.shuffle(words)
        row = {"sentence": " ".join(words), "label": label}
        if pairs:
            row["other"] = " ".join(rng.choices(NEUTRAL + mood, k=4))
        rows.append(row)
    return rows


def write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_data(folder: Path, n_train: int = 32, n_validation: int = 8, pairs: bool = False) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return (write_csv(folder / "train.csv", sentences(n_train, 1, pairs)),
            write_csv(folder / "validation.csv", sentences(n_validation, 2, pairs)))


def tiny_recipe(tmp_path: Path, **sections) -> Path:
    """A recipe for `distill` with a tiny teacher and data under tmp_path; `sections` update its sections."""
    teacher = tmp_path / "teacher"
    if not (teacher / "config.json").is_file():
        save_tiny_teacher(teacher)
    train, validation = write_data(tmp_path / "data")
    recipe = {
        "model": {"teacher": str(teacher), "student_layers": 1},
        "data": {"train_file": str(train), "validation_file": str(validation), "text_column": "sentence",
                 "max_length": 16},
        "training": {"output_dir": str(tmp_path / "run"), "max_steps": 4, "per_device_train_batch_size": 4,
                     "learning_rate": 1e-3, "logging_steps": 1, "save_strategy": "no", "report_to": "none",
                     "use_cpu": True, "seed": 0, "temperature": 2.0, "alpha": 0.5, "disable_tqdm": True},
        "evaluation": {"latency_batch_size": 2, "latency_seq_len": 16, "latency_threads": 1},
    }
    for name, values in sections.items():
        recipe.setdefault(name, {}).update(values)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return path

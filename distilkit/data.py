"""Text-classification data from local files (csv, tsv, json, jsonl, parquet), tokenised for training.

Local files are first-class because many training machines have no Hub access. TSV files are read without quote
processing: GLUE's MRPC contains unbalanced '"' characters that a quoting reader would use to merge rows.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from datasets import Dataset

# GLUE tasks as they are laid out in ../shared/data (and in GLUE's own distribution).
GLUE_LOCAL = {
    "sst2": {"train": "train.tsv", "validation": "dev.tsv", "text": "sentence", "text_pair": None, "label": "label"},
    "mrpc": {"train": "train.tsv", "validation": "test.tsv", "text": "#1 String", "text_pair": "#2 String",
             "label": "Quality"},
}


def read_table(path: str | os.PathLike) -> Dataset:
    """A `datasets.Dataset` from one local file; the format comes from the extension."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Data file {str(path)!r} does not exist.")
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".csv"):
        with path.open(encoding="utf-8-sig", newline="") as handle:
            if suffix == ".tsv":
                reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            else:
                reader = csv.DictReader(handle)
            rows = list(reader)
        if not rows:
            raise ValueError(f"{path} has a header but no rows.")
        return Dataset.from_list(rows)
    if suffix in (".json", ".jsonl"):
        return Dataset.from_json(str(path))
    if suffix == ".parquet":
        return Dataset.from_parquet(str(path))
    raise ValueError(f"Unsupported data file {path.name!r}: use .csv, .tsv, .json, .jsonl or .parquet.")


def prepare_classification(
    dataset: Dataset,
    tokenizer,
    text_column: str,
    label_column: str,
    text_pair_column: str | None = None,
    max_length: int = 128,
    num_labels: int | None = None,
) -> Dataset:
    """Tokenise one or two text columns and turn the label column into integer `labels`.

    Checks the columns and labels before tokenising anything, so a typo fails in a second, not after a pass
    over the data. Padding is left to the collator (dynamic padding).
    """
    if len(dataset) == 0:
        raise ValueError("The dataset is empty; check the file or the split.")
    wanted = [c for c in (text_column, text_pair_column, label_column) if c]
    missing = [c for c in wanted if c not in dataset.column_names]
    if missing:
        raise ValueError(f"Columns {missing} not found; the data has columns {dataset.column_names}.")
    try:
        labels = [int(v) for v in dataset[label_column]]
    except (TypeError, ValueError) as err:
        raise ValueError(f"Label column {label_column!r} must hold integers: {err}.") from err
    if num_labels is not None:
        bad = sorted({v for v in labels if not 0 <= v < num_labels})
        if bad:
            raise ValueError(f"Labels {bad[:10]} are outside 0..{num_labels - 1} (num_labels={num_labels}).")

    def tokenize(batch):
        pair = batch[text_pair_column] if text_pair_column else None
        return tokenizer(batch[text_column], pair, truncation=True, max_length=max_length)

    encoded = dataset.map(tokenize, batched=True, remove_columns=dataset.column_names)
    return encoded.add_column("labels", labels)


def load_glue_local(task: str, data_dir: str | os.PathLike, split: str, limit: int | None = None) -> tuple[Dataset, dict]:
    """A GLUE split from local files laid out like ../shared/data/<task>/ and the task's column spec."""
    if task not in GLUE_LOCAL:
        raise ValueError(f"Unknown local GLUE task {task!r}; known: {sorted(GLUE_LOCAL)}.")
    spec = GLUE_LOCAL[task]
    dataset = read_table(Path(data_dir) / task / spec[split])
    if limit is not None and limit < len(dataset):
        dataset = dataset.shuffle(seed=0).select(range(limit))
    return dataset, spec

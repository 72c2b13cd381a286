"""Training data from the Hub or from local files (csv, tsv, json, jsonl, parquet), tokenised for training.

Local files are first-class because many training machines have no Hub access. TSV files are read without quote
processing: GLUE's MRPC contains unbalanced '"' characters that a quoting reader would use to merge rows.
Padding is left to the collator (`DataCollatorWithPadding`), so each batch is padded only to its longest example.
"""

from __future__ import annotations

import csv
import json
import os
from itertools import chain
from pathlib import Path

from datasets import Dataset

_DOUBLE_ENCODED_BOM = "\u00ef\u00bb\u00bf"


def read_table(path: str | os.PathLike) -> Dataset:
    """A `datasets.Dataset` from one local file; the format comes from the extension (.txt: one row per line)."""
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
            if reader.fieldnames:
                # A byte-order mark that was encoded twice (MRPC's files) survives utf-8-sig as "\u00ef\u00bb\u00bf".
                reader.fieldnames = [reader.fieldnames[0].removeprefix(_DOUBLE_ENCODED_BOM), *reader.fieldnames[1:]]
            rows = list(reader)
        if not rows:
            raise ValueError(f"{path} has a header but no rows.")
        return Dataset.from_list(rows)
    if suffix in (".json", ".jsonl"):
        return Dataset.from_json(str(path))
    if suffix == ".parquet":
        return Dataset.from_parquet(str(path))
    if suffix == ".txt":  # a plain text corpus: one document or paragraph per non-empty line, column "text"
        lines = [line.rstrip("\n") for line in path.open(encoding="utf-8-sig")]
        rows = [{"text": line} for line in lines if line.strip()]
        if not rows:
            raise ValueError(f"{path} holds no text.")
        return Dataset.from_list(rows)
    raise ValueError(f"Unsupported data file {path.name!r}: use .csv, .tsv, .json, .jsonl, .parquet or .txt.")


def prepare_classification(
    dataset: Dataset,
    tokenizer,
    text_column: str,
    label_column: str,
    text_pair_column: str | None = None,
    max_length: int = 128,
    num_labels: int | None = None,
    teacher_tokenizer=None,
) -> Dataset:
    """Tokenise one or two text columns and turn the label column into integer `labels`.

    Checks the columns and labels before tokenising anything, so a typo fails in a second, not after a pass
    over the data. Padding is left to the collator (dynamic padding). With `teacher_tokenizer` (a teacher whose
    tokenizer differs from the student's) the text is tokenised a second time for the teacher, into columns
    prefixed `teacher_`; collate with `TeacherInputsCollator`.
    """
    _check_columns(dataset, [text_column, text_pair_column, label_column])
    try:
        labels = [int(v) for v in dataset[label_column]]
    except (TypeError, ValueError) as err:
        raise ValueError(f"Label column {label_column!r} must hold integers: {err}.") from err
    if num_labels is not None:
        bad = sorted({v for v in labels if not 0 <= v < num_labels})
        if bad:
            raise ValueError(f"Labels {bad[:10]} are outside 0..{num_labels - 1} (num_labels={num_labels}).")
    encoded = tokenize_texts(dataset, tokenizer, text_column, text_pair_column, max_length, teacher_tokenizer)
    return encoded.add_column("labels", labels)


def tokenize_texts(dataset: Dataset, tokenizer, text_column: str, text_pair_column: str | None = None,
                   max_length: int = 128, teacher_tokenizer=None) -> Dataset:
    """The tokenised text alone (no labels): the model inputs, and the teacher's own (`teacher_` columns) when it
    has its own tokenizer. Every other column is dropped."""
    _check_columns(dataset, [text_column, text_pair_column])

    def tokenize(batch):
        pair = batch[text_pair_column] if text_pair_column else None
        encoded = tokenizer(batch[text_column], pair, truncation=True, max_length=max_length)
        if teacher_tokenizer is not None:
            for key, value in teacher_tokenizer(batch[text_column], pair, truncation=True,
                                                max_length=max_length).items():
                encoded[TEACHER_PREFIX + key] = value
        return encoded

    return dataset.map(tokenize, batched=True, remove_columns=dataset.column_names)


def _check_columns(dataset: Dataset, wanted: list[str | None]) -> None:
    if len(dataset) == 0:
        raise ValueError("The dataset is empty; check the file or the split.")
    missing = [c for c in wanted if c and c not in dataset.column_names]
    if missing:
        raise ValueError(f"Columns {missing} not found; the data has columns {dataset.column_names}.")


TEACHER_PREFIX = "teacher_"
# The inputs a teacher with its own tokenizer receives, as columns of the training data.
TEACHER_INPUT_COLUMNS = tuple(TEACHER_PREFIX + name for name in ("input_ids", "attention_mask", "token_type_ids"))


def pop_teacher_inputs(inputs: dict) -> dict:
    """Remove the teacher's own inputs from `inputs` (a feature or a batch) and return them unprefixed."""
    return {key[len(TEACHER_PREFIX):]: inputs.pop(key) for key in TEACHER_INPUT_COLUMNS if key in inputs}


class TeacherInputsCollator:
    """Collates the student's features with `collator` and the `teacher_` ones with the teacher's tokenizer.

    Each model reads the raw text through its own tokenizer, so logit distillation works between models with
    different vocabularies (sequence-level tasks: the logits do not depend on how the text was split).
    """

    def __init__(self, collator, teacher_tokenizer):
        self.collator = collator
        self.teacher_tokenizer = teacher_tokenizer

    def __call__(self, features):
        teacher = [pop_teacher_inputs(f) for f in features]
        batch = self.collator(features)
        if not any(teacher):  # evaluation data carries the student's inputs only
            return batch
        padded = self.teacher_tokenizer.pad(teacher, return_tensors="pt")
        for key, value in padded.items():
            batch[TEACHER_PREFIX + key] = value
        return batch


def _hub_unreachable(err: Exception) -> bool:
    from huggingface_hub import constants

    text = f"{type(err).__name__} {err}".lower()
    return (
        constants.HF_HUB_OFFLINE
        or isinstance(err, ConnectionError)
        or any(word in text for word in ("offline", "connect", "resolve", "timed out", "timeout", "network"))
    )


def load_hub_split(name: str, config: str | None, split: str) -> Dataset:
    """One split of a Hub dataset (or a local dataset folder); a clear error when the Hub cannot be reached.

    Set HF_HUB_OFFLINE=1 on machines without network access: loading then fails at once instead of retrying.
    """
    import datasets

    try:
        return datasets.load_dataset(name, config, split=split)
    except Exception as err:
        described = f"{name!r}" + (f" (config {config!r})" if config else "") + f", split {split!r}"
        if not _hub_unreachable(err):
            raise ValueError(f"Could not load dataset {described}: {type(err).__name__}: {err}") from err
        raise ConnectionError(
            f"Could not load dataset {described}: the Hugging Face Hub cannot be reached ({type(err).__name__}: "
            f"{err}).\nWithout Hub access, point the recipe at local files instead (csv, tsv, json, jsonl or "
            "parquet), and leave `dataset` unset:\n"
            "  data:\n"
            "    train_file: path/to/train.csv\n"
            "    validation_file: path/to/validation.csv\n"
            "    text_column: sentence        # and text_pair_column: for sentence pairs\n"
            "    label_column: label\n"
            "or on the command line: --train_file path/to/train.csv --validation_file path/to/validation.csv. "
            "Set HF_HUB_OFFLINE=1 to fail at once instead of retrying."
        ) from err


def read_split(file: str | os.PathLike | None, dataset: str | None = None, dataset_config: str | None = None,
               split: str | None = None) -> Dataset:
    """One split: the local `file` when given, else `split` of the Hub (or local folder) `dataset`."""
    return read_table(file) if file else load_hub_split(dataset, dataset_config, split)


def load_splits(
    dataset: str | None = None,
    dataset_config: str | None = None,
    train_file: str | os.PathLike | None = None,
    validation_file: str | os.PathLike | None = None,
    train_split: str = "train",
    validation_split: str | None = "validation",
) -> dict[str, Dataset]:
    """{"train": ..., "validation": ...} from a Hub dataset or local files ("validation" may be absent)."""
    if bool(dataset) == bool(train_file):
        raise ValueError("Give either a Hub dataset name or a local train_file (exactly one of them).")
    splits = {"train": read_split(train_file, dataset, dataset_config, train_split)}
    validation = validation_file if train_file else validation_split  # local files, or Hub splits
    if validation:
        splits["validation"] = read_split(validation_file, dataset, dataset_config, validation_split)
    return splits


def subsample(dataset: Dataset, limit: int | None, seed: int = 0) -> Dataset:
    """At most `limit` rows, a seeded random subset (the dataset itself when it is small enough)."""
    if limit is None or limit >= len(dataset):
        return dataset
    return dataset.shuffle(seed=seed).select(range(limit))


def label_names(splits: dict[str, Dataset], label_column: str) -> list[str] | None:
    """Names of the classes when the labels are names ("positive") or a `ClassLabel`; None for integer labels.

    Names are sorted, so "negative" -> 0 and "positive" -> 1 whichever appears first in the file.
    """
    train = splits["train"]
    if label_column not in train.column_names:
        return None  # prepare_classification reports the missing column with the available ones
    feature = train.features[label_column]
    if hasattr(feature, "names"):  # datasets.ClassLabel
        return list(feature.names)
    values = {str(v).strip() for split in splits.values() if label_column in split.column_names
              for v in split[label_column]}
    try:
        for value in values:
            int(value)
        return None
    except ValueError:
        return sorted(values)


def encode_label_names(dataset: Dataset, label_column: str, names: list[str]) -> Dataset:
    """Replace label names by their index in `names` (an unknown name is an error that lists the known ones)."""
    index = {name: i for i, name in enumerate(names)}
    values = [str(v).strip() for v in dataset[label_column]]
    unknown = sorted(set(values) - set(index))
    if unknown:
        raise ValueError(f"Labels {unknown[:5]} are not among the training labels {names}.")
    return dataset.remove_columns(label_column).add_column(label_column, [index[v] for v in values])


def labels_to_model_ids(dataset: Dataset, label_column: str, label2id: dict[str, int]) -> Dataset:
    """Labels in a model's own numbering: label names map through the model's `label2id` (exact, or ignoring case
    when that is unambiguous); integer labels stay as they are. A name the model does not know is an error that
    lists the names it knows."""
    if label_column not in dataset.column_names:
        return dataset  # prepare_classification reports the missing column with the available ones
    feature = dataset.features[label_column]
    if hasattr(feature, "names"):  # datasets.ClassLabel: integers, numbered by the dataset's own names
        if not set(feature.names) <= set(label2id):
            return dataset
        values = [feature.names[v] for v in dataset[label_column]]
    else:
        values = [str(v).strip() for v in dataset[label_column]]
        try:
            [int(v) for v in values]
            return dataset
        except ValueError:
            pass
    folded: dict[str, list[int]] = {}
    for name, index in label2id.items():
        folded.setdefault(str(name).lower(), []).append(index)

    def lookup(value: str) -> int | None:
        if value in label2id:
            return label2id[value]
        matches = folded.get(value.lower(), [])
        return matches[0] if len(matches) == 1 else None

    ids = [lookup(v) for v in values]
    unknown = sorted({v for v, i in zip(values, ids) if i is None})
    if unknown:
        raise ValueError(
            f"Labels {unknown[:5]} in column {label_column!r} are not labels of the model, which knows "
            f"{sorted(label2id)} (its config's label2id). Use those names or the integer ids 0..{len(label2id) - 1}."
        )
    return dataset.remove_columns(label_column).add_column(label_column, ids)


def prepare_causal_lm(dataset: Dataset, tokenizer, text_column: str, block_size: int) -> Dataset:
    """Tokenise a text corpus and cut the token stream into blocks of `block_size` tokens (as run_clm does).

    Documents are joined with the tokenizer's end-of-sequence token, so a block may span two documents but the
    model sees where one ends. The labels (the inputs, shifted inside the model) are made by the collator.
    """
    if len(dataset) == 0:
        raise ValueError("The dataset is empty; check the file or the split.")
    if text_column not in dataset.column_names:
        raise ValueError(f"Column {text_column!r} not found; the data has columns {dataset.column_names}.")
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []

    def tokenize(batch):
        texts = [t for t in batch[text_column] if t and t.strip()]
        return {"input_ids": [ids + eos for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]}

    def group(batch):
        stream = list(chain.from_iterable(batch["input_ids"]))
        usable = (len(stream) // block_size) * block_size
        blocks = [stream[i:i + block_size] for i in range(0, usable, block_size)]
        return {"input_ids": blocks, "attention_mask": [[1] * block_size for _ in blocks]}

    tokens = dataset.map(tokenize, batched=True, remove_columns=dataset.column_names)
    blocks = tokens.map(group, batched=True, batch_size=1000)
    if len(blocks) == 0:
        raise ValueError(
            f"The corpus has fewer than {block_size} tokens (max_length), so it makes no training block; "
            "use more text or a smaller max_length."
        )
    return blocks


def _write_csv(dataset: Dataset, path: Path, delimiter: str) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        if delimiter == "\t":  # read back without quote processing (distilkit.data.read_table)
            writer = csv.writer(handle, delimiter="\t", quoting=csv.QUOTE_NONE, lineterminator="\n")
        else:
            writer = csv.writer(handle)
        writer.writerow(dataset.column_names)
        for row in dataset.iter(batch_size=1000):
            writer.writerows(zip(*(row[column] for column in dataset.column_names)))


def _write_json_lines(dataset: Dataset, path: Path) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for row in dataset:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def _write_text(dataset: Dataset, path: Path) -> None:
    (column,) = dataset.column_names
    with path.open("w", encoding="utf-8") as handle:
        handle.writelines(text + "\n" for text in dataset[column])


WRITERS = {
    ".csv": lambda dataset, path: _write_csv(dataset, path, ","),
    ".tsv": lambda dataset, path: _write_csv(dataset, path, "\t"),
    ".json": _write_json_lines,
    ".jsonl": _write_json_lines,
    ".parquet": lambda dataset, path: dataset.to_parquet(str(path)),
    ".txt": _write_text,
}


def write_table(dataset: Dataset, path: str | os.PathLike) -> Path:
    """Write `dataset` in the format of the suffix, atomically (complete or not at all)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from .serialization.atomic import publishing_file

    with publishing_file(path) as staging:
        WRITERS[path.suffix.lower()](dataset, staging)
    return path

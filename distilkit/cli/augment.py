"""Write augmented copies of a local data file: N altered copies of each example (distilkit.augment).

The input is augment_input (default: data.train_file), read like training data; the columns are the data
section's text_column, text_pair_column and label_column. Replacement words come from the teacher (model.teacher:
neighbours in its input embeddings, or its masked-LM head with --augment_mlm teacher) or from a fill-mask model
named by --augment_mlm; the tokenizer is the teacher's (else model.tokenizer, else the named masked LM's). Only
the copies are written (not the original examples), without labels unless --keep_labels, in the format of
augment_output's suffix. The file appears complete or not at all: it is written to a temporary file in the same
folder, then renamed.

Example:
    distilkit augment --teacher runs/sst2/teacher --augment_input train.tsv --text_column sentence \\
        --augment_output train_augmented.tsv --num_copies 20
    distilkit augment --config recipes/sst2.yaml --augment_output aug.jsonl --methods mask ngram
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from datasets import Dataset

from ..augment import augment_dataset
from ..augment.candidates import check_replacement_source
from ..augment.dataset import check_input
from ..data import read_table
from ..serialization.atomic import publishing_file
from .parser import RecipeError
from .recipe import Recipe

SECTIONS = ("model", "data", "augment")


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
    with publishing_file(path) as staging:
        WRITERS[path.suffix.lower()](dataset, staging)
    return path


def _load_teacher(source: str, masked_lm: bool):
    from transformers import AutoModel, AutoModelForMaskedLM

    try:
        return (AutoModelForMaskedLM if masked_lm else AutoModel).from_pretrained(source)
    except (OSError, ValueError) as err:
        kind = "a masked LM (augment_mlm='teacher')" if masked_lm else "a model"
        raise RecipeError(f"Could not load the teacher from {source!r} as {kind}: {err}") from err


def _load_tokenizer(sources: list[str]):
    """The first tokenizer that loads: the teacher's comes first, as its ids index the teacher's embeddings."""
    from transformers import AutoTokenizer

    failures = []
    for source in sources:
        try:
            return AutoTokenizer.from_pretrained(source)
        except (OSError, ValueError) as err:
            failures.append(f"{source!r}: {err}")
    raise RecipeError("Could not load a tokenizer from " + "; ".join(failures))


def run(recipe: Recipe) -> None:
    m, d, a = recipe.model, recipe.data, recipe.augment
    source = a.augment_input or d.train_file
    if not source:
        raise RecipeError("Nothing to augment: give --augment_input FILE (or data.train_file).")
    if not a.augment_output:
        raise RecipeError("No output file: give --augment_output FILE (.csv, .tsv, .jsonl, ...).")
    output = Path(a.augment_output)
    if output.resolve() == Path(source).resolve():
        raise RecipeError(f"augment_output is the input file {source!r}: write the copies to another file.")
    text_columns = [d.text_column] + ([d.text_pair_column] if d.text_pair_column else [])
    if output.suffix.lower() == ".txt" and (len(text_columns) > 1 or a.keep_labels):
        raise RecipeError(f"augment_output {str(output)!r}: a .txt file holds one text column without labels; "
                          "use .csv, .tsv or .jsonl for sentence pairs or keep_labels.")
    named_mlm = a.augment_mlm if a.augment_mlm != "teacher" else None
    tokenizer_sources = [source for source in (m.teacher, m.tokenizer, named_mlm) if source]
    if "mask" in a.methods and not tokenizer_sources:
        raise RecipeError("methods includes 'mask' but no tokenizer is named to give the mask token: set "
                          "model.teacher or model.tokenizer.")
    if m.teacher is None:
        try:
            check_replacement_source(a, tokenizer=None, teacher=None)
        except ValueError as err:
            raise RecipeError(str(err)) from err
    try:
        dataset = read_table(source)
        check_input(dataset, text_columns, d.label_column, a)
    except ValueError as err:
        raise RecipeError(f"{source}: {err}") from err

    tokenizer = _load_tokenizer(tokenizer_sources) if tokenizer_sources else None
    teacher = None
    if m.teacher and "replace" in a.methods:
        teacher = _load_teacher(m.teacher, masked_lm=a.augment_mlm == "teacher")
    try:
        augmented = augment_dataset(dataset, tokenizer, d.text_column, d.text_pair_column, teacher=teacher, args=a,
                                    label_column=d.label_column)
    except ValueError as err:
        raise RecipeError(str(err)) from err
    write_table(augmented, output)
    print(f"Wrote {len(augmented)} augmented examples ({a.num_copies} per example of {len(dataset)}) to {output}.")

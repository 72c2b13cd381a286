"""The task's data as a run reads it: the recipe's files or Hub dataset, checked, split and tokenised, with the
transfer data and augmented copies; every mistake is reported before a model is loaded or trained."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..data import (
    TeacherInputsCollator,
    encode_label_names,
    label_names,
    labels_to_model_ids,
    load_splits,
    prepare_causal_lm,
    prepare_classification,
    read_split,
    subsample,
    tokenize_texts,
)
from .recipe import DataArguments, RecipeError

@dataclasses.dataclass
class TaskData:
    train: object | None
    validation: object | None
    collator: object
    num_labels: int | None = None
    label_names: list[str] | None = None
    description: str = ""  # the validation data, where the metrics come from
    transfer: object | None = None  # unlabelled examples the teacher labels (distilkit.transfer)


def describe_data(data: DataArguments, split: str = "train") -> str:
    """A short name of the data, e.g. "glue/sst2 (validation)" or "dev.tsv"."""
    if data.dataset:
        name = data.dataset + (f"/{data.dataset_config}" if data.dataset_config else "")
        return f"{name} ({data.train_split if split == 'train' else data.validation_split})"
    path = data.train_file if split == "train" else data.validation_file
    return Path(path).name if path else "(no data)"


def load_task_data(data: DataArguments, tokenizer, task: str, seed: int = 42, teacher_tokenizer=None) -> TaskData:
    """Read, check and tokenise the data; every mistake is reported before a model is loaded or trained.

    `teacher_tokenizer`: a teacher whose tokenizer differs from the student's also gets the text tokenised its
    own way (sequence classification only; see distilkit.data.TeacherInputsCollator).
    """
    from transformers import DataCollatorForLanguageModeling, DataCollatorWithPadding

    if data.validation_file and not data.train_file:
        raise RecipeError(
            f"validation_file is set ({data.validation_file!r}) but train_file is not; training needs both local "
            "files (distilkit evaluate needs only validation_file)."
        )
    if not data.has_source:
        raise RecipeError(
            "The recipe names no data: set data.dataset (a Hub dataset) or data.train_file and "
            "data.validation_file (local csv/tsv/json/jsonl/parquet files)."
        )
    if data.has_transfer and task != "sequence-classification":
        raise RecipeError(
            f"Transfer data ({data.transfer_file or data.transfer_dataset}) works for sequence classification only, "
            f"not {task}: a causal LM's text is its own label, so add it to the training text instead."
        )
    try:
        splits = load_splits(data.dataset, data.dataset_config, data.train_file, data.validation_file,
                             data.train_split, data.validation_split)
        splits["train"] = subsample(splits["train"], data.max_train_samples, seed)
        if "validation" in splits:
            splits["validation"] = subsample(splits["validation"], data.max_eval_samples, seed)
        if task == "causal-lm":
            prepared = {name: prepare_causal_lm(split, tokenizer, data.text_column, data.max_length)
                        for name, split in splits.items()}
            collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
            return TaskData(prepared["train"], prepared.get("validation"), collator,
                            description=describe_data(data, "validation"))
        names = label_names(splits, data.label_column)
        if names is not None and not hasattr(splits["train"].features.get(data.label_column), "names"):
            splits = {k: encode_label_names(v, data.label_column, names) for k, v in splits.items()}
        if names is not None:
            num_labels = len(names)
        else:
            labels = [int(v) for split in splits.values() if data.label_column in split.column_names
                      for v in split[data.label_column]]
            num_labels = max(labels) + 1 if labels else None
        prepared = {
            name: prepare_classification(split, tokenizer, data.text_column, data.label_column,
                                         data.text_pair_column, data.max_length, num_labels,
                                         teacher_tokenizer=teacher_tokenizer if name == "train" else None)
            for name, split in splits.items()
        }
    except (ValueError, OSError, KeyError) as err:  # ConnectionError is an OSError
        raise RecipeError(f"data ({describe_data(data)}): {err}") from err
    collator = DataCollatorWithPadding(tokenizer)
    if teacher_tokenizer is not None:
        collator = TeacherInputsCollator(collator, teacher_tokenizer)
    transfer = load_transfer_data(data, tokenizer, task, seed, teacher_tokenizer) if data.has_transfer else None
    return TaskData(prepared["train"], prepared.get("validation"), collator, num_labels=num_labels,
                    label_names=names, description=describe_data(data, "validation"), transfer=transfer)


def load_transfer_data(data: DataArguments, tokenizer, task: str, seed: int = 42, teacher_tokenizer=None):
    """data.transfer_file or data.transfer_dataset, tokenised like the training text, without labels."""
    source = data.transfer_file or data.transfer_dataset
    text_column = data.transfer_text_column or data.text_column
    pair_column = data.transfer_text_pair_column or data.text_pair_column
    try:
        split = read_split(data.transfer_file, data.transfer_dataset, data.transfer_dataset_config,
                           data.transfer_split)
        if data.label_column in split.column_names and not data.transfer_ignore_labels:
            raise ValueError(
                f"it has a label column {data.label_column!r}, but transfer data is text the teacher labels. Remove "
                "the column, add the rows to the training data instead, or set transfer_ignore_labels: true to use "
                "the text and never read the labels."
            )
        split = subsample(split, data.max_transfer_samples, seed)
        return tokenize_texts(split, tokenizer, text_column, pair_column, data.max_length, teacher_tokenizer)
    except (ValueError, OSError, KeyError) as err:
        raise RecipeError(f"transfer data ({source}): {err}") from err


def check_augment(recipe) -> None:
    """What `distill`'s augment section may ask for, checked before anything is loaded."""
    a = recipe.augment
    given = [name for name in ("augment_input", "augment_output") if getattr(a, name)]
    if given:
        raise RecipeError(f"{', '.join(given)} belong to `distilkit augment` (it writes a file); distill augments "
                          "its training data itself with augment_train: true.")
    if not a.augment_train:
        return
    if recipe.model.task != "sequence-classification":
        raise RecipeError(f"augment_train adds unlabelled copies as transfer data, which works for sequence "
                          f"classification only, not {recipe.model.task}.")
    if a.keep_labels:
        raise RecipeError("distill adds augmented copies without labels (the teacher labels them); keep_labels is "
                          "for files written by `distilkit augment` (then give the file as train_file).")


def add_augmented_copies(data: TaskData, data_args: DataArguments, augment_args, tokenizer, seed: int, teacher,
                         teacher_tokenizer=None) -> TaskData:
    """`data` with augmented copies of its training text added to the transfer data (distilkit.augment): the raw
    training split is read again, altered with the teacher's tokenizer and embeddings, and tokenised like the rest."""
    from datasets import concatenate_datasets

    from ..augment import augment_dataset

    try:
        raw = read_split(data_args.train_file, data_args.dataset, data_args.dataset_config, data_args.train_split)
        raw = subsample(raw, data_args.max_train_samples, seed)
        copies = augment_dataset(raw, teacher_tokenizer or tokenizer, data_args.text_column,
                                 data_args.text_pair_column, teacher=teacher, args=augment_args,
                                 label_column=data_args.label_column)
        tokenized = tokenize_texts(copies, tokenizer, data_args.text_column, data_args.text_pair_column,
                                   data_args.max_length, teacher_tokenizer)
    except (ValueError, OSError, KeyError) as err:
        raise RecipeError(f"augment: {err}") from err
    transfer = tokenized if data.transfer is None else concatenate_datasets([data.transfer, tokenized])
    return dataclasses.replace(data, transfer=transfer)


def load_eval_data(data: DataArguments, tokenizer, task: str, model, seed: int = 42) -> TaskData:
    """The validation data alone, for evaluating `model` (no training data needed): data.validation_file, or the
    validation split of data.dataset. Label names in the data map through the model's own label2id (then
    `label_names` is the model's names; None when the data gave integer labels)."""
    from transformers import DataCollatorForLanguageModeling, DataCollatorWithPadding

    if not (data.validation_file or (data.dataset and data.validation_split)):
        raise RecipeError(
            "Nothing to evaluate on: set data.validation_file (a local csv/tsv/json/jsonl/parquet file) or "
            "data.dataset with data.validation_split."
        )
    description = describe_data(data, "validation")
    try:
        split = read_split(data.validation_file, data.dataset, data.dataset_config, data.validation_split)
        split = subsample(split, data.max_eval_samples, seed)
        if task == "causal-lm":
            prepared = prepare_causal_lm(split, tokenizer, data.text_column, data.max_length)
            return TaskData(None, prepared, DataCollatorForLanguageModeling(tokenizer, mlm=False),
                            description=description)
        mapped = labels_to_model_ids(split, data.label_column, dict(model.config.label2id))
        named = mapped is not split  # the data gave label names, now read through the model's label2id
        split, num_labels = mapped, model.config.num_labels
        prepared = prepare_classification(split, tokenizer, data.text_column, data.label_column,
                                          data.text_pair_column, data.max_length, num_labels)
    except (ValueError, OSError, KeyError) as err:
        raise RecipeError(f"data ({description}): {err}") from err
    names = [model.config.id2label[i] for i in range(num_labels)] if named else None
    return TaskData(None, prepared, DataCollatorWithPadding(tokenizer), num_labels=num_labels, label_names=names,
                    description=description)

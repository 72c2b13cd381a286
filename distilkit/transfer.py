"""Transfer data: examples without labels that the student learns from through the teacher alone.

Hinton et al.'s transfer set: text the teacher labels with its soft outputs. Practitioners usually have far more
unlabelled in-domain text than labels, and this is where distillation gains most (TinyBERT's augmented data, Tang
et al. 2019). `DistillationTrainer(..., transfer_dataset=...)` appends the transfer examples to the training set as
one stream, shuffled together by the Trainer's sampler; each carries the label -100 ("no label").

Loss weighting, per example: a labelled example contributes `(1 - alpha) * CE + alpha * KD + hidden + attention`,
a transfer example the same without the CE term; a batch's loss is the mean over its examples. So a batch of only
transfer examples is `alpha * KD + ...` and a labelled-only batch is exactly what it was without transfer data.
With gradient accumulation every example of the accumulated batch counts once.

Sequence classification only: for token classification the labelled positions decide where the soft labels apply,
and a causal LM's text is already its own label (put more text in train_dataset instead).
"""

from __future__ import annotations

from collections.abc import Sequence

from datasets import Dataset, Value, concatenate_datasets

from . import loss_terms
from .tasks import Task

NO_LABEL = -100
LABEL_COLUMNS = ("labels", "label")


def label_column(dataset) -> str | None:
    columns = getattr(dataset, "column_names", None) or []
    return next((c for c in LABEL_COLUMNS if c in columns), None)


def check_transfer(transfer_dataset, train_dataset, task: Task | None, num_labels: int | None, args,
                   columns: Sequence[str] | None = None) -> None:
    """Every way transfer data can be wrong, raised before any work: what is wrong and how to fix it.

    `columns`: the columns training reads (`trainer.model_input_columns`); the transfer data needs those of them
    that train_dataset has. None: every column of train_dataset (a collator that sees all columns)."""
    if not loss_terms.teacher_terms(args):
        raise ValueError(
            f"transfer_dataset trains on the teacher's outputs only, but no teacher term is weighted "
            f"({loss_terms.weight_summary(args)}). Set alpha > 0 (and pass teacher_model=), or drop transfer_dataset."
        )
    if args.intermediate_epochs > 0 and not loss_terms.teacher_terms(args, loss_terms.PREDICTION):
        raise ValueError(
            f"transfer_dataset with a staged schedule (intermediate_epochs={args.intermediate_epochs}): in the "
            "prediction-layer stage the transfer examples would have nothing to learn, since alpha=0. Set alpha > 0."
        )
    if not isinstance(transfer_dataset, Dataset):
        raise TypeError(f"transfer_dataset must be a datasets.Dataset, got {type(transfer_dataset).__name__}.")
    if not isinstance(train_dataset, Dataset):
        raise TypeError(
            "transfer_dataset is appended to train_dataset, which must then be a datasets.Dataset too; got "
            f"{type(train_dataset).__name__}."
        )
    if task is not Task.SEQUENCE_CLASSIFICATION:
        what = task.value if task is not None else "this model"
        hint = (" A causal LM's text is its own label: add the text to train_dataset instead."
                if task is Task.CAUSAL_LM else "")
        raise ValueError(f"transfer_dataset works for sequence classification only, not {what}.{hint}")
    if num_labels is not None and num_labels < 2:
        raise ValueError("transfer_dataset needs a classifier (num_labels >= 2); soft labels of a regression head "
                         "are not defined.")
    if len(transfer_dataset) == 0:
        raise ValueError("transfer_dataset is empty: check the file, the split and any filtering.")
    given = label_column(transfer_dataset)
    if given is not None:
        raise ValueError(
            f"transfer_dataset has a {given!r} column, but transfer examples have no labels (the teacher labels "
            "them). Remove the column to use the text as transfer data, or add these examples to train_dataset."
        )
    train_label = label_column(train_dataset)
    alpha = loss_terms.soft_label_weight(args)
    if train_label is None and alpha < 1:
        raise ValueError(
            f"train_dataset has no 'labels' column, so its hard-label loss (weight 1 - alpha = {1 - alpha}) "
            "cannot be computed. Give train_dataset its labels, or put unlabelled text in transfer_dataset only."
        )
    needed = [c for c in _kept_columns(train_dataset, columns) if c != train_label]
    missing = [c for c in needed if c not in transfer_dataset.column_names]
    if missing:
        raise ValueError(
            f"transfer_dataset lacks the columns {missing} that train_dataset has and training reads (tokenise it "
            "the same way, with the student's tokenizer, and the teacher's where it has its own); it has "
            f"{transfer_dataset.column_names}."
        )


def _kept_columns(dataset: Dataset, columns: Sequence[str] | None) -> list[str]:
    return list(dataset.column_names) if columns is None else [c for c in dataset.column_names if c in set(columns)]


def with_transfer(train_dataset: Dataset, transfer_dataset: Dataset, columns: Sequence[str] | None = None) -> Dataset:
    """`train_dataset` followed by the transfer examples, which get the label NO_LABEL (-100). `columns` as in
    `check_transfer`: both keep only those (training would drop the others); None keeps train_dataset's."""
    label = label_column(train_dataset) or "labels"
    train_dataset = train_dataset.select_columns(_kept_columns(train_dataset, columns))
    transfer = transfer_dataset.select_columns([c for c in train_dataset.column_names if c != label])
    if label in train_dataset.column_names:
        # ClassLabel cannot hold -100: both sides become plain integers.
        train_dataset = train_dataset.cast_column(label, Value("int64"))
    else:
        train_dataset = train_dataset.add_column(label, [NO_LABEL] * len(train_dataset))
    transfer = transfer.add_column(label, [NO_LABEL] * len(transfer)).cast(train_dataset.features)
    return concatenate_datasets([train_dataset, transfer])

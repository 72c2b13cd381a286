"""`augment_dataset`: N augmented copies of every example of a `datasets.Dataset`, with a progress bar.

Every input problem is reported before any work (and before a named masked LM is loaded). Examples are processed in
chunks, so the masked LM scores the masked copies of many sentences in one batch. Each example draws from its own
random generator, seeded with the seed and its index: the copies do not depend on the chunk size.
"""

from __future__ import annotations

import random

from datasets import Dataset, Features
from datasets.utils import tqdm

from .arguments import AugmentArguments
from .candidates import replacement_source
from .ops import augment_text
from .words import split_words


def check_input(dataset: Dataset, text_columns: list[str], label_column: str, args: AugmentArguments) -> None:
    """Fail on an empty dataset, a missing or non-text text column, or keep_labels without the label column."""
    if len(dataset) == 0:
        raise ValueError("The dataset is empty: there is nothing to augment. Check the input file or the split.")
    fields = ["text_column", "text_pair_column"]
    for field, column in zip(fields, text_columns):
        if column not in dataset.column_names:
            raise ValueError(f"{field} {column!r} is not a column of the data; its columns are "
                             f"{dataset.column_names}. Set {field} to the column that holds the text.")
        bad = next((i for i, value in enumerate(dataset[column]) if not isinstance(value, str)), None)
        if bad is not None:
            raise ValueError(f"{field} {column!r} must hold text, but row {bad} holds {dataset[bad][column]!r}.")
    if args.keep_labels and label_column not in dataset.column_names:
        raise ValueError(f"keep_labels is set but label_column {label_column!r} is not a column of the data; its "
                         f"columns are {dataset.column_names}. Set label_column, or unset keep_labels.")


def _mask_token(tokenizer, args: AugmentArguments) -> str | None:
    if "mask" not in args.methods:
        return None
    if tokenizer is None or tokenizer.mask_token is None:
        raise ValueError("methods includes 'mask' but the tokenizer has no mask token: pass the tokenizer of a "
                         "model trained with masking (BERT, RoBERTa, MPNet, ...), or drop 'mask' from methods.")
    return tokenizer.mask_token


def augment_dataset(dataset: Dataset, tokenizer, text_column: str, text_pair_column: str | None = None, *,
                    teacher=None, args: AugmentArguments | None = None, label_column: str = "label",
                    batch_size: int = 32) -> Dataset:
    """Only the augmented copies of `dataset`: `args.num_copies` per example, in example order.

    `tokenizer`: the teacher's (its mask token for 'mask'; its pieces index the teacher's embeddings for
    'replace'); None is enough for 'ngram' alone. `teacher`: a model whose input embeddings give neighbour words,
    and with augment_mlm='teacher' (a ...ForMaskedLM) also the masked LM. Sentence pairs stay pairs: both texts
    are altered independently, each cut to its own n-gram by 'ngram'. The copies hold the text column(s), plus
    `label_column` with keep_labels; concatenate them with `dataset` to train on both.
    """
    args = args or AugmentArguments()
    text_columns = [text_column] + ([text_pair_column] if text_pair_column else [])
    check_input(dataset, text_columns, label_column, args)
    mask_token = _mask_token(tokenizer, args)
    replacements = replacement_source(args, tokenizer, teacher) if "replace" in args.methods else None

    out_columns = text_columns + ([label_column] if args.keep_labels else [])
    rows: dict[str, list] = {column: [] for column in out_columns}
    with tqdm(total=len(dataset), desc="Augmenting", unit="example") as bar:
        for start in range(0, len(dataset), batch_size):
            chunk = dataset[start:start + batch_size]
            texts = [chunk[column] for column in text_columns]
            words = [[split_words(text) for text in column] for column in texts]
            candidates = [replacements.for_texts(column) if replacements else [[[] for _ in w] for w in column]
                          for column in words]
            for row in range(len(texts[0])):
                rng = random.Random(f"{args.augment_seed}:{start + row}")
                for _ in range(args.num_copies):
                    for c, column in enumerate(text_columns):
                        rows[column].append(augment_text(texts[c][row], words[c][row], candidates[c][row], args,
                                                         rng, mask_token))
                    if args.keep_labels:
                        rows[label_column].append(chunk[label_column][row])
            bar.update(len(texts[0]))
    return Dataset.from_dict(rows, features=Features({column: dataset.features[column] for column in out_columns}))

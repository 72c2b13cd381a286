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

from ..pipeline.recipe import COMMAND_SECTIONS, Recipe

SECTIONS = COMMAND_SECTIONS["augment"]


def run(recipe: Recipe) -> None:
    from ..pipeline.commands import augment_file

    augment_file(recipe)

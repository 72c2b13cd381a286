"""Fine-tune a teacher on the task: model.teacher (a pretrained model) is trained on the recipe's data with
the training settings and saved to <output_dir>/teacher, with its evaluation in <output_dir>/results.md.

Example:
    distilkit train --config recipes/sst2.yaml --teacher bert-base-uncased --learning_rate 2e-5
"""

from __future__ import annotations

from ..pipeline.recipe import COMMAND_SECTIONS, Recipe

SECTIONS = COMMAND_SECTIONS["train"]


def run(recipe: Recipe) -> None:
    from ..pipeline.commands import train_teacher

    train_teacher(recipe)

"""Fine-tune a teacher on the task: model.teacher (a pretrained model) is trained on the recipe's data with
the training settings and saved to <output_dir>/teacher, with its evaluation in <output_dir>/results.md.

Example:
    distilkit train --config recipes/sst2.yaml --teacher bert-base-uncased --learning_rate 2e-5
"""

from __future__ import annotations

from pathlib import Path

from .parser import write_recipe
from .pipeline import fine_tune_teacher
from .recipe import Recipe
from .report import card_recipe, hub_datasets, print_table, write_cards, write_results
from .steps import check_launch, stage_args, stage_dir

SECTIONS = ("model", "data", "training", "evaluation")


def run(recipe: Recipe) -> None:
    training = recipe.training
    check_launch(training)
    args = stage_args(training, "teacher")
    _, _, data, result = fine_tune_teacher(recipe, args)
    if result is None:
        return
    write_results([result], training.output_dir, recipe.evaluation, data_description=data.description)
    write_cards([result], teacher_source=None, recipe_groups={"teacher": card_recipe(args, distilled=False)},
                datasets=hub_datasets(recipe.data), eval_args=recipe.evaluation, data_name=data.description,
                run_name=Path(training.output_dir).name, output_dir=training.output_dir)
    write_recipe(recipe, training.output_dir)
    print_table([result])
    print(f"Teacher saved to {stage_dir(training, 'teacher')}.")

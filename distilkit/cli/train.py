"""Fine-tune a teacher on the task: model.teacher (a pretrained model) is trained on the recipe's data with
the training settings and saved to <output_dir>/teacher, with its evaluation in <output_dir>/results.md.

Example:
    distilkit train --config recipes/sst2.yaml --teacher bert-base-uncased --learning_rate 2e-5
"""

from __future__ import annotations

from pathlib import Path

from .parser import RecipeError, write_recipe
from .recipe import Recipe
from .report import (
    card_recipe,
    compute_metrics_function,
    hub_datasets,
    measure,
    print_table,
    write_cards,
    write_results,
)
from .steps import (
    check_launch,
    is_main_process,
    load_model,
    load_task_data,
    load_tokenizer,
    stage_args,
    stage_dir,
    train,
)

SECTIONS = ("model", "data", "training", "evaluation")


def fine_tune_teacher(recipe: Recipe, args):
    """Train the teacher with `args` (output in args.output_dir); returns (model, tokenizer, data, StageResult, or
    None on the processes other than the main one)."""
    m = recipe.model
    if not m.teacher:
        raise RecipeError("train needs model.teacher: the pretrained model to fine-tune (a folder or Hub id).")
    tokenizer = load_tokenizer(m.tokenizer or m.teacher, m.task)
    data = load_task_data(recipe.data, tokenizer, m.task, args.seed)
    model = load_model(m.teacher, m.task, "teacher", num_labels=m.num_labels or data.num_labels,
                       label_names=data.label_names, attn_implementation=m.attn_implementation, new_head=True)
    metrics = compute_metrics_function(recipe.evaluation, m.task) if args.eval_strategy != "no" else None
    trainer = train(model, args, data, tokenizer, compute_metrics=metrics)
    if not is_main_process(args):
        return trainer.model, tokenizer, data, None
    result = measure("teacher", trainer.model, args.output_dir, data, recipe.evaluation, m.task,
                     args.per_device_eval_batch_size, not args.disable_tqdm)
    return trainer.model, tokenizer, data, result


def run(recipe: Recipe) -> None:
    training = recipe.training
    check_launch(training)
    args = stage_args(training, "teacher")
    _, _, data, result = fine_tune_teacher(recipe, args)
    if result is None:
        return
    write_results([result], training.output_dir, recipe.evaluation, data_description=data.description)
    write_cards([result], teacher=None, recipe_groups={"teacher": card_recipe(args, distilled=False)},
                datasets=hub_datasets(recipe.data), eval_args=recipe.evaluation, data_name=data.description,
                run_name=Path(training.output_dir).name, output_dir=training.output_dir)
    write_recipe(recipe, training.output_dir)
    print_table([result])
    print(f"Teacher saved to {stage_dir(training, 'teacher')}.")

"""Measure models on the recipe's validation data: task metrics, parameters, size on disk and CPU latency.

The models are evaluation.eval_models (folders or Hub ids; pruned and int8 folders included), by default
model.student. The table is printed, and written to <output_dir>/results.md and results.json when output_dir is
given.

Example:
    distilkit evaluate --config recipes/sst2.yaml --eval_models runs/sst2/teacher runs/sst2/student runs/sst2/int8
"""

from __future__ import annotations

from pathlib import Path

from .parser import RecipeError
from .recipe import Recipe
from .report import measure, print_table, write_results
from .steps import load_model, load_task_data, load_tokenizer

SECTIONS = ("model", "data", "training", "evaluation")


def run(recipe: Recipe) -> None:
    m, training, e = recipe.model, recipe.training, recipe.evaluation
    models = e.eval_models or ([m.student] if m.student else [])
    if not models:
        raise RecipeError("Nothing to evaluate: give --eval_models FOLDER [FOLDER ...] or model.student.")
    if not recipe.data.has_source:
        raise RecipeError("evaluate needs data: set data.dataset or data.validation_file (with data.train_file).")
    tokenizer = load_tokenizer(m.tokenizer or models[0], m.task)
    data = load_task_data(recipe.data, tokenizer, m.task, training.seed)
    if data.validation is None:
        raise RecipeError("The recipe's data has no validation split to evaluate on.")
    results = []
    for source in models:
        model = load_model(source, m.task, "model to evaluate")
        name = Path(source).name if Path(source).exists() else source
        results.append(measure(name, model, source, data, e, m.task, training.per_device_eval_batch_size,
                               not training.disable_tqdm))
    print_table(results)
    if "output_dir" in recipe.values.get("training", {}):
        md, _ = write_results(results, training.output_dir, e, data_description=data.description)
        print(f"Written to {md} and results.json.")

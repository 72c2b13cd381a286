"""Measure models on the recipe's validation data: task metrics, parameters, size on disk and CPU latency.

The models are evaluation.eval_models (folders or Hub ids; pruned and int8 folders included), by default
model.student. Only validation data is read (data.validation_file, or data.dataset's validation split); label
names in it map through the model's own label2id. The table is printed, and written to <output_dir>/results.md and results.json when output_dir is
given.

Example:
    distilkit evaluate --config recipes/sst2.yaml --eval_models runs/sst2/teacher runs/sst2/student runs/sst2/int8
    distilkit evaluate --eval_models runs/sst2/int8 --validation_file test.csv --text_column sentence
"""

from __future__ import annotations

from pathlib import Path

from .parser import RecipeError
from .recipe import Recipe
from .report import measure, print_table, write_results
from .steps import load_eval_data, load_model, load_tokenizer

SECTIONS = ("model", "data", "training", "evaluation")


def run(recipe: Recipe) -> None:
    m, training, e = recipe.model, recipe.training, recipe.evaluation
    models = e.eval_models or ([m.student] if m.student else [])
    if not models:
        raise RecipeError("Nothing to evaluate: give --eval_models FOLDER [FOLDER ...] or model.student.")
    tokenizer = load_tokenizer(m.tokenizer or models[0], m.task)
    loaded = [load_model(source, m.task, "model to evaluate") for source in models]
    # Label names in the data take the first model's numbering; the others must number them the same way.
    data = load_eval_data(recipe.data, tokenizer, m.task, loaded[0], training.seed)
    for source, model in zip(models[1:], loaded[1:]):
        if data.label_names is not None and dict(model.config.id2label) != dict(loaded[0].config.id2label):
            raise RecipeError(
                f"{source} numbers its labels {dict(model.config.id2label)}, but {models[0]} numbers them "
                f"{dict(loaded[0].config.id2label)}: one label column cannot be scored for both. Evaluate them "
                "separately."
            )
    results = []
    for source, model in zip(models, loaded):
        name = Path(source).name if Path(source).exists() else source
        results.append(measure(name, model, source, data, e, m.task, training.per_device_eval_batch_size,
                               not training.disable_tqdm))
    print_table(results)
    if "output_dir" in recipe.values.get("training", {}):
        md, _ = write_results(results, training.output_dir, e, data_description=data.description)
        print(f"Written to {md} and results.json.")

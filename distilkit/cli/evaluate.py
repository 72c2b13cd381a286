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

from ..pipeline.recipe import COMMAND_SECTIONS, Recipe

SECTIONS = COMMAND_SECTIONS["evaluate"]


def run(recipe: Recipe) -> None:
    from ..pipeline.commands import evaluate

    evaluate(recipe)

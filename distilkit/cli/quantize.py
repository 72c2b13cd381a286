"""Convert model.student's Linear layers to int8 (dynamic quantization; the task head stays in float).

The int8 model is saved to <output_dir>/int8 (reload it with distilkit.from_pretrained). With data in the
recipe, the float and int8 models are compared in <output_dir>/results.md; without, only size and latency.

Example:
    distilkit quantize --student runs/sst2/pruned --output_dir runs/sst2 --quantize_embeddings true
"""

from __future__ import annotations

import time

from .parser import RecipeError
from .pipeline import finish
from .recipe import Recipe
from .report import measure
from .steps import TaskData, load_model, load_task_data, load_tokenizer, quantize, save, stage_dir

SECTIONS = ("model", "data", "training", "quantize", "evaluation")


def run(recipe: Recipe) -> None:
    started = time.perf_counter()
    m, training = recipe.model, recipe.training
    if not m.student:
        raise RecipeError("quantize works on model.student: the folder (or Hub id) of the model to quantize.")
    tokenizer = load_tokenizer(m.tokenizer or m.student, m.task)
    if recipe.data.has_source:
        data = load_task_data(recipe.data, tokenizer, m.task, training.seed)
    else:
        data = TaskData(train=None, validation=None, collator=None, description="(no data: metrics not measured)")
    model = load_model(m.student, m.task, "model to quantize")
    measure_args = (data, recipe.evaluation, m.task, training.per_device_eval_batch_size, not training.disable_tqdm)
    results = [measure("float", model, m.student, *measure_args)]
    model = quantize(model, recipe.quantize)
    folder = save(model, tokenizer, stage_dir(training, "int8"))
    results.append(measure("int8", model, folder, *measure_args))
    finish(recipe, results, {}, data=data, teacher_source=m.teacher, started=started)

"""Distil model.teacher into a smaller student, then run the recipe's optional pruning and int8 steps.

The student is model.student, or a copy of the teacher that keeps model.student_layers of its layers
(DistilBERT-style). Each stage is saved in its own folder under output_dir (student/, pruned/, int8/, each with
a model card) and measured against the teacher in output_dir/results.md and results.json.

Examples:
    distilkit distill --config recipes/sst2.yaml --temperature 4 --learning_rate 5e-5
    accelerate launch --config_file recipes/accelerate/cpu_2proc_gloo.yaml -m distilkit distill --config r.yaml
"""

from __future__ import annotations

import time

from .parser import RecipeError
from .pipeline import check_sharding, distill_and_compress, finish
from .recipe import Recipe
from .steps import (
    add_augmented_copies,
    attention_for,
    check_augment,
    check_launch,
    check_num_labels,
    load_model,
    load_task_data,
    load_tokenizer,
    teacher_tokenizer_if_different,
)

SECTIONS = ("model", "data", "training", "prune", "quantize", "evaluation", "augment")


def run(recipe: Recipe) -> None:
    started = time.perf_counter()
    m, training = recipe.model, recipe.training
    check_launch(training)
    if not m.teacher:
        raise RecipeError("distill needs model.teacher: a model fine-tuned on the task (a folder or Hub id); "
                          "`distilkit train` makes one.")
    check_sharding(recipe)
    check_augment(recipe)
    tokenizer = load_tokenizer(m.tokenizer or m.student or m.teacher, m.task)
    teacher_tokenizer = teacher_tokenizer_if_different(m, tokenizer, m.task)
    data = load_task_data(recipe.data, tokenizer, m.task, training.seed, teacher_tokenizer=teacher_tokenizer)
    teacher = load_model(m.teacher, m.task, "teacher", attn_implementation=attention_for(m, training))
    check_num_labels(teacher, data, "teacher")
    if recipe.augment.augment_train:
        data = add_augmented_copies(data, recipe.data, recipe.augment, tokenizer, training.seed, teacher,
                                    teacher_tokenizer)
    outcome = distill_and_compress(recipe, teacher, m.teacher, tokenizer, data)
    if outcome is not None:
        finish(recipe, *outcome, data=data, teacher_source=m.teacher, started=started)

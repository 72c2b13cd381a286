"""Remove the least important attention heads and/or FFN neurons from model.student (structurally: the model
gets smaller).

prune_fraction is the share of attention heads to remove, the training section's prune_ffn_fraction the share of
FFN neurons (intermediate units of the feed-forward blocks; heads go first). Both are scored as the training
section's prune_heads_method (--prune_method) says, on training batches ('taylor') or by weight norms
('magnitude'), and ranked across layers; the pruned model is saved to <output_dir>/pruned and compared with the
original in <output_dir>/results.md. With prune_recovery_epochs > 0 and a model.teacher, the pruned model is then
distilled from the teacher again.

Example:
    distilkit prune --config recipes/prune_quantize.yaml --student runs/sst2/student --prune_fraction 0.3
    distilkit prune --config recipes/prune_quantize.yaml --prune_fraction 0.4 --prune_ffn_fraction 0.5
"""

from __future__ import annotations

import time

from .parser import RecipeError
from .pipeline import finish, prune_and_recover
from .recipe import Recipe
from .report import card_recipe, compute_metrics_function, measure
from .steps import (
    check_launch,
    check_num_labels,
    is_main_process,
    load_model,
    load_task_data,
    load_tokenizer,
    stage_dir,
)

SECTIONS = ("model", "data", "training", "prune", "evaluation")


def run(recipe: Recipe) -> None:
    started = time.perf_counter()
    m, training, p = recipe.model, recipe.training, recipe.prune
    check_launch(training)
    if not m.student:
        raise RecipeError("prune works on model.student: the folder (or Hub id) of the model to prune.")
    if training.prune_heads_fraction > 0:
        raise RecipeError(
            f"prune_heads_fraction ({training.prune_heads_fraction:g}) is the share of heads pruned while training "
            f"(distill); prune removes prune_fraction of the heads in one go: --prune_fraction "
            f"{training.prune_heads_fraction:g}.")
    if p.prune_fraction <= 0 and training.prune_ffn_fraction <= 0:
        raise RecipeError("prune_fraction and prune_ffn_fraction are 0: set the share of attention heads and/or FFN "
                          "neurons to remove, e.g. --prune_fraction 0.25 --prune_ffn_fraction 0.25.")
    tokenizer = load_tokenizer(m.tokenizer or m.student, m.task)
    data = load_task_data(recipe.data, tokenizer, m.task, training.seed)
    model = load_model(m.student, m.task, "model to prune", attn_implementation=m.attn_implementation)
    check_num_labels(model, data, "model to prune")
    teacher = None
    if p.prune_recovery_epochs > 0:
        if not m.teacher:
            raise RecipeError("prune_recovery_epochs > 0 distils the pruned model from model.teacher; set it.")
        teacher = load_model(m.teacher, m.task, "teacher")
    main = is_main_process(training)
    measure_args = (data, recipe.evaluation, m.task, training.per_device_eval_batch_size, not training.disable_tqdm)
    results = [measure("original", model, m.student, *measure_args)] if main else []
    recovering_with_eval = teacher is not None and training.eval_strategy != "no"
    metrics = compute_metrics_function(recipe.evaluation, m.task) if recovering_with_eval else None
    model, removed, neurons, recovery = prune_and_recover(recipe, model, tokenizer, data, teacher, metrics,
                                                          ffn_fraction=training.prune_ffn_fraction)
    units = [unit for unit, share in (("head", p.prune_fraction), ("FFN neuron", training.prune_ffn_fraction))
             if share > 0]
    pruning = {"Pruning": {f"{' and '.join(units)} importance": training.prune_heads_method}}
    if p.prune_fraction > 0:
        pruning["Pruning"]["heads removed"] = sum(map(len, removed.values()))
    if training.prune_ffn_fraction > 0:
        pruning["Pruning"]["FFN neurons removed"] = sum(map(len, neurons.values()))
    groups = {"pruned": pruning}
    if recovery is not None:
        pruning["Pruning"]["recovery"] = f"{p.prune_recovery_epochs:g} epochs of distillation after pruning"
        groups["pruned"] = card_recipe(recovery, extra=pruning)
    if not main:
        return
    results.append(measure("pruned", model, stage_dir(training, "pruned"), *measure_args))
    finish(recipe, results, groups, data=data, teacher_source=m.teacher, started=started)

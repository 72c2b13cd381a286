"""The multi-stage flows that several commands share, built from the single steps of `steps`.

fine_tune_teacher (train, quickstart); check_sharding and distill_and_compress (distill, quickstart);
prune_and_recover, the prune step with its optional recovery distillation (distill, prune); and finish, which
writes a run's results, model cards and recipe (distill, prune, quantize, quickstart). Command modules import
from here, never from each other.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..model_card import teacher_name
from ..student import every_kth_layer
from .parser import RecipeError, write_recipe
from .recipe import Recipe
from .report import (
    StageResult,
    card_recipe,
    compute_metrics_function,
    hub_datasets,
    measure,
    print_table,
    write_cards,
    write_results,
)
from .steps import (
    build_student,
    check_num_labels,
    is_main_process,
    load_model,
    load_task_data,
    load_tokenizer,
    prune,
    prune_neurons,
    quantize,
    save,
    stage_args,
    stage_dir,
    train,
)


def check_sharding(recipe: Recipe) -> None:
    """Pruning and int8 rewrite the whole model in place, which a sharded (FSDP/DeepSpeed) student cannot do."""
    training = recipe.training
    sharded = bool(training.fsdp) or bool(training.deepspeed) or any(
        os.environ.get(name, "").lower() == "true" for name in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"))
    if sharded and (recipe.prune.prune_fraction > 0 or recipe.quantize.quantize):
        raise RecipeError(
            "With FSDP or DeepSpeed the student is sharded, so distill cannot prune or quantize it afterwards. Run "
            "distill with prune_fraction 0 and quantize false, then `distilkit prune` / `distilkit quantize` on "
            f"{training.output_dir}/student in a single process."
        )


def distill_and_compress(recipe: Recipe, teacher, teacher_source: str, tokenizer, data,
                         teacher_result: StageResult | None = None, teacher_label: str | None = None):
    """Distil, then prune and quantize as the recipe says; (results, card recipes) on the main process, else None."""
    m, training, p = recipe.model, recipe.training, recipe.prune
    main = is_main_process(training)
    student = build_student(m, teacher, m.task, training)
    check_num_labels(student, data, "student")
    args = stage_args(training, "student")
    metrics = compute_metrics_function(recipe.evaluation, m.task) if args.eval_strategy != "no" else None
    student = train(student, args, data, tokenizer, teacher=teacher, compute_metrics=metrics).model

    teacher_label = teacher_label or teacher_name(teacher_source)
    if m.student:
        start = m.student
    else:
        keep = m.keep_layers
        if isinstance(keep, int):
            keep = every_kth_layer(teacher.config.num_hidden_layers, keep)
        start = f"copy of the teacher with its layers {', '.join(map(str, keep))}"
    distilled = {"Distillation": {"teacher": teacher_label, "student initialisation": start}}
    results: list[StageResult] = []
    groups: dict[str, dict] = {"student": card_recipe(args, extra=distilled)}
    measure_args = (data, recipe.evaluation, m.task, training.per_device_eval_batch_size, not training.disable_tqdm)
    if main:
        results.append(teacher_result or measure("teacher", teacher, teacher_source, *measure_args))
        results.append(measure("student", student, stage_dir(training, "student"), *measure_args))

    if p.prune_fraction > 0:
        student, removed, _, recovery = prune_and_recover(recipe, student, tokenizer, data, teacher, metrics)
        scoring = training.scoring(while_training=False)
        pruning = {"Pruning": {"head importance": scoring["method"] + (
            f" on {scoring['num_batches']} training batches" if scoring["method"] == "taylor" else ""),
            "heads removed": sum(len(h) for h in removed.values())}}
        if recovery is not None:
            pruning["Pruning"]["recovery"] = f"{p.prune_recovery_epochs:g} epochs of distillation after pruning"
        groups["pruned"] = card_recipe(args, extra={**distilled, **pruning})
        if main:
            results.append(measure("pruned", student, stage_dir(training, "pruned"), *measure_args))
    if not main:
        return None
    if recipe.quantize.quantize:
        last = "pruned" if p.prune_fraction > 0 else "student"
        student = quantize(student, recipe.quantize)
        save(student, tokenizer, stage_dir(training, "int8"))
        groups["int8"] = groups[last]
        results.append(measure("int8", student, stage_dir(training, "int8"), *measure_args))
    return results, groups


def prune_and_recover(recipe: Recipe, model, tokenizer, data, teacher, metrics, ffn_fraction: float = 0.0):
    """The prune step: remove recipe.prune.prune_fraction of the heads, then `ffn_fraction` of the FFN neurons (the
    prune command's prune_ffn_fraction; `distill` prunes neurons while training instead), then distil from
    `teacher` for prune_recovery_epochs (into output_dir/pruned), or without recovery save the pruned model there.

    Returns (model, {layer: [removed heads]}, {layer: [removed neurons]}, the recovery's training arguments or None).
    """
    training, p = recipe.training, recipe.prune
    removed = prune(model, data, p.prune_fraction, training) if p.prune_fraction > 0 else {}
    neurons = prune_neurons(model, data, ffn_fraction, training) if ffn_fraction > 0 else {}
    if p.prune_recovery_epochs <= 0:
        if is_main_process(training):
            save(model, tokenizer, stage_dir(training, "pruned"))
        return model, removed, neurons, None
    # Recovery is prediction-layer distillation of the pruned shape: a staged schedule belongs to the student's
    # own training, and pruning while training would prune again (and needs a single process).
    recovery = stage_args(training, "pruned", num_train_epochs=p.prune_recovery_epochs, max_steps=-1,
                          intermediate_epochs=0, prune_heads_fraction=0.0, prune_ffn_fraction=0.0)
    model = train(model, recovery, data, tokenizer, teacher=teacher, compute_metrics=metrics).model
    return model, removed, neurons, recovery


def finish(recipe: Recipe, results: list[StageResult], groups: dict, *, data, teacher_source: str | None,
           started: float, limitations: list[str] = ()) -> None:
    """Write results.md/json, the model cards and the recipe, and print the table (main process)."""
    training = recipe.training
    write_results(results, training.output_dir, recipe.evaluation, data_description=data.description,
                  extra={"command": recipe.command, "recipe": recipe.values,
                         "wall_time_s": round(time.perf_counter() - started, 1)})
    write_cards(results, teacher_source=teacher_source, recipe_groups=groups, datasets=hub_datasets(recipe.data),
                eval_args=recipe.evaluation, limitations=list(limitations), data_name=data.description,
                run_name=Path(training.output_dir).name, output_dir=training.output_dir)
    write_recipe(recipe, training.output_dir)
    print_table(results)
    folders = ", ".join(f"{r.stage}/" for r in results if Path(r.source).parent == Path(training.output_dir))
    print(f"Saved under {training.output_dir}: {folders} results.md, results.json.")


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

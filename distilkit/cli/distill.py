"""Distil model.teacher into a smaller student, then run the recipe's optional pruning and int8 steps.

The student is model.student, or a copy of the teacher that keeps model.student_layers of its layers
(DistilBERT-style). Each stage is saved in its own folder under output_dir (student/, pruned/, int8/, each with
a model card) and measured against the teacher in output_dir/results.md and results.json.

Examples:
    distilkit distill --config recipes/sst2.yaml --temperature 4 --learning_rate 5e-5
    accelerate launch --config_file recipes/accelerate/cpu_2proc_gloo.yaml -m distilkit distill --config r.yaml
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..model_card import hub_id
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
    attention_for,
    build_student,
    check_launch,
    check_num_labels,
    is_main_process,
    load_model,
    load_task_data,
    load_tokenizer,
    prune,
    quantize,
    save,
    stage_args,
    stage_dir,
    teacher_tokenizer_if_different,
    train,
)

SECTIONS = ("model", "data", "training", "prune", "quantize", "evaluation")


def run(recipe: Recipe) -> None:
    started = time.perf_counter()
    m, training = recipe.model, recipe.training
    check_launch(training)
    if not m.teacher:
        raise RecipeError("distill needs model.teacher: a model fine-tuned on the task (a folder or Hub id); "
                          "`distilkit train` makes one.")
    check_sharding(recipe)
    tokenizer = load_tokenizer(m.tokenizer or m.student or m.teacher, m.task)
    teacher_tokenizer = teacher_tokenizer_if_different(m, tokenizer, m.task)
    data = load_task_data(recipe.data, tokenizer, m.task, training.seed, teacher_tokenizer=teacher_tokenizer)
    teacher = load_model(m.teacher, m.task, "teacher", attn_implementation=attention_for(m, training))
    check_num_labels(teacher, data, "teacher")
    outcome = distill_and_compress(recipe, teacher, m.teacher, tokenizer, data)
    if outcome is not None:
        finish(recipe, *outcome, data=data, teacher_source=m.teacher, started=started)


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

    teacher_name = teacher_label or hub_id(teacher_source) or Path(teacher_source).name
    if m.student:
        start = m.student
    else:
        keep = m.keep_layers
        if isinstance(keep, int):
            keep = every_kth_layer(teacher.config.num_hidden_layers, keep)
        start = f"copy of the teacher with its layers {', '.join(map(str, keep))}"
    distilled = {"Distillation": {"teacher": teacher_name, "student initialisation": start}}
    results: list[StageResult] = []
    groups: dict[str, dict] = {"student": card_recipe(args, extra=distilled)}
    measure_args = (data, recipe.evaluation, m.task, training.per_device_eval_batch_size, not training.disable_tqdm)
    if main:
        results.append(teacher_result or measure("teacher", teacher, teacher_source, *measure_args))
        results.append(measure("student", student, stage_dir(training, "student"), *measure_args))

    if p.prune_fraction > 0:
        removed = prune(student, data, p, training.per_device_train_batch_size, training.seed)
        pruning = {"Pruning": {"head importance": f"{p.prune_method}" + (
            f" on {p.prune_batches} training batches" if p.prune_method == "taylor" else ""),
            "heads removed": sum(len(h) for h in removed.values())}}
        if p.prune_recovery_epochs > 0:
            recovery = stage_args(training, "pruned", num_train_epochs=p.prune_recovery_epochs, max_steps=-1)
            pruning["Pruning"]["recovery"] = f"{p.prune_recovery_epochs:g} epochs of distillation after pruning"
            student = train(student, recovery, data, tokenizer, teacher=teacher, compute_metrics=metrics).model
        elif main:
            save(student, tokenizer, stage_dir(training, "pruned"))
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


def finish(recipe: Recipe, results: list[StageResult], groups: dict, *, data, teacher_source: str | None,
           started: float, limitations: list[str] = ()) -> None:
    """Write results.md/json, the model cards and the recipe, and print the table (main process)."""
    training = recipe.training
    write_results(results, training.output_dir, recipe.evaluation, data_description=data.description,
                  extra={"command": recipe.command, "recipe": recipe.values,
                         "wall_time_s": round(time.perf_counter() - started, 1)})
    write_cards(results, teacher=hub_id(teacher_source), recipe_groups=groups, datasets=hub_datasets(recipe.data),
                eval_args=recipe.evaluation, limitations=list(limitations), data_name=data.description,
                run_name=Path(training.output_dir).name, output_dir=training.output_dir)
    write_recipe(recipe, training.output_dir)
    print_table(results)
    folders = ", ".join(f"{r.stage}/" for r in results if Path(r.source).parent == Path(training.output_dir))
    print(f"Saved under {training.output_dir}: {folders} results.md, results.json.")

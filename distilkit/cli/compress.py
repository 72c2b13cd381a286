"""Compress model.teacher to a target on this machine: target_latency_ms, target_speedup or target_size_mb.

distilkit measures candidate shapes (layers, heads, FFN width, int8) on random-weight twins, chooses the one that
meets the target with the most parameters, then makes it: a student of the teacher's layers, distilled (with the
transfer data, if any) while heads and FFN neurons are pruned gradually to the planned shape, then int8 when
planned. It measures the result against the teacher and says whether the target was met. A target it cannot meet
is an error naming the closest candidate, before any training.

Latency targets are measured at the evaluation section's latency_batch_size, latency_seq_len and latency_threads,
which must be given. Writes under output_dir: plan.json, plan.md, 01-layers/, 02-distilled/, 03-int8/ (each with
a model card), results.md, results.json, tradeoff.png (with matplotlib). Run it again to resume after a kill.

Examples:
    distilkit compress --config recipes/compress_sst2.yaml --target_speedup 8
    distilkit compress --config recipes/compress_sst2.yaml --target_size_mb 30 --output_dir runs/small
"""

from __future__ import annotations

from pathlib import Path

from ..compress import MachineSettings
from ..compress.target import MACHINE_FIELDS
from ..model_card import teacher_hub_id, teacher_name
from .parser import RecipeError, write_recipe
from .recipe import Recipe
from .report import compute_metrics_function
from .steps import attention_for, check_launch, check_num_labels, load_model, load_task_data, load_tokenizer

SECTIONS = ("model", "data", "training", "evaluation", "compress")


def machine_settings(recipe: Recipe) -> MachineSettings | None:
    """The settings latency is measured at: the evaluation section's, which a latency target needs spelled out in
    the recipe or on the command line (their defaults would silently decide what the target means)."""
    e, target = recipe.evaluation, recipe.compress.target
    if target.is_latency:
        missing = [name for name in MACHINE_FIELDS if name not in recipe.values.get("evaluation", {})]
        if missing:
            raise RecipeError(f"{target} needs the machine settings it is measured at: set {', '.join(missing)} "
                              "(evaluation section, or --latency_batch_size 8 --latency_seq_len 128 "
                              "--latency_threads 2).")
    elif not e.latency:
        return None
    return MachineSettings(e.latency_batch_size, e.latency_seq_len, e.latency_threads)


def check_model_section(recipe: Recipe) -> None:
    m = recipe.model
    if not m.teacher:
        raise RecipeError("compress needs model.teacher: a model fine-tuned on the task (a folder or Hub id); "
                          "`distilkit train` makes one.")
    if m.student or m.student_layers:
        raise RecipeError("compress chooses the student's layers from its plan; remove model.student and "
                          "model.student_layers.")
    if m.task != "sequence-classification":
        raise RecipeError(f"compress works on sequence classifiers (task sequence-classification), not {m.task}.")


def run(recipe: Recipe) -> None:
    from ..compress.run import compress, prepare

    m, training = recipe.model, recipe.training
    check_launch(training)
    check_model_section(recipe)
    if training.world_size > 1:
        raise RecipeError("compress prunes while distilling, which runs in a single process; launch it without "
                          "accelerate/torchrun.")
    machine = machine_settings(recipe)
    tokenizer = load_tokenizer(m.tokenizer or m.teacher, m.task)
    data = load_task_data(recipe.data, tokenizer, m.task, training.seed)
    teacher = load_model(m.teacher, m.task, "teacher", attn_implementation=attention_for(m, training))
    check_num_labels(teacher, data, "teacher")
    metrics = compute_metrics_function(recipe.evaluation, m.task) if data.validation is not None else None
    progress = not training.disable_tqdm
    try:  # the plan and every check, before anything is written; errors later on are not the recipe's
        plan = prepare(teacher, data.train, recipe.compress, training, training.output_dir, machine=machine,
                       transfer_dataset=data.transfer, progress=progress)
    except ValueError as err:
        raise RecipeError(str(err)) from err
    result = compress(teacher, tokenizer, data.train, data.validation, recipe.compress, training,
                      training.output_dir, machine=machine, transfer_dataset=data.transfer, compute_metrics=metrics,
                      data_collator=data.collator, teacher_name=teacher_name(m.teacher),
                      teacher_hub_id=teacher_hub_id(m.teacher, teacher),
                      progress=progress, plan=plan)
    write_recipe(recipe, training.output_dir)
    print("\n" + (Path(training.output_dir) / "results.md").read_text(encoding="utf-8"), flush=True)
    print(result.summary())

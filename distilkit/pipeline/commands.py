"""The commands as library functions. Each checks its recipe, builds its stages and runs them on the one engine
(`stages.Run`: atomic stage folders, a run fingerprint, resume), then measures every stage and writes the report.
The command line (`distilkit.cli`) parses a recipe and calls these; from Python a run is one call:

    from distilkit.pipeline import load_recipe, run
    run(load_recipe("distill", "recipes/sst2.yaml", output_dir="runs/sst2"))

Stage folders have the same names in every command: teacher/ (fine-tuned: train, quickstart), student/
(distilled: distill, quickstart, compress), pruned/ (prune; distill and quickstart with prune_fraction > 0) and
int8/ (quantize; distill, quickstart and compress when asked), each trained one beside its <stage>-training/
folder of checkpoints. Only the main process of a distributed run writes; the others take part in training.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

from ..config import DistillationConfig
from ..model_card import teacher_hub_id, teacher_name
from ..serialization import load_config
from ..student import every_kth_layer
from . import identity
from .launch import check_launch, check_sharding, is_main_process
from .models import (
    attention_for,
    build_student,
    check_num_labels,
    load_model,
    load_tokenizer,
    teacher_tokenizer_if_different,
)
from .recipe import COMMAND_SECTIONS, RECIPE_FILE, Recipe, RecipeError, write_recipe
from .report import StageResult, add_latencies, card_recipe, compute_metrics_function, finish, measure, print_table
from .report import write_results as write_results_files
from .stages import Run, Stage
from .steps import quantize, remove_heads, remove_neurons, save, train
from .task_data import TaskData, add_augmented_copies, check_augment, load_eval_data, load_task_data

TEACHER, STUDENT, PRUNED, INT8 = "teacher", "student", "pruned", "int8"


def run(recipe: Recipe):
    """Run `recipe.command` (train, distill, prune, quantize, quickstart, evaluate, compress, augment)."""
    commands: dict[str, Callable] = {"train": train_teacher, "distill": distill, "prune": prune,
                                     "quantize": quantize_model, "quickstart": quickstart, "evaluate": evaluate,
                                     "compress": compress, "augment": augment_file}
    if recipe.command not in commands:
        raise RecipeError(f"{recipe.command!r} is not a pipeline command; these are: {', '.join(commands)}.")
    return commands[recipe.command](recipe)


# ---------------------------------------------------------------------------------------------------- helpers


class _Lazy:
    """A value made on first use (a model the stages need only when one of them runs)."""

    def __init__(self, make: Callable):
        self._make, self._value = make, None

    def __call__(self):
        if self._value is None:
            self._value = self._make()
        return self._value


def _run(recipe: Recipe, **inputs) -> Run:
    training = recipe.training
    fields = {"command": recipe.command, "settings": identity.recipe_settings(recipe, COMMAND_SECTIONS[recipe.command]),
              **inputs}
    return Run(training.output_dir, fields, main_process=is_main_process(training))


def _execute(run_: Run, stages: list[Stage]) -> None:
    """Check the stages' folders (another run's are refused, as a recipe error), then make them."""
    try:
        run_.check([stage.name for stage in stages])
    except ValueError as err:
        raise RecipeError(str(err)) from err
    run_.execute(stages)


def _resume_from(training: DistillationConfig, run_: Run, stage: str) -> str | None:
    """The checkpoint a stage's training resumes from: resume_from_checkpoint when it names one, else the
    stage's last complete checkpoint (a killed run resumes by running it again)."""
    given = training.resume_from_checkpoint
    if isinstance(given, str) and given not in ("", "True", "true", "False", "false"):
        return given
    return run_.last_checkpoint(stage)


def _stage_args(training: DistillationConfig, run_: Run, stage: str, **changes) -> DistillationConfig:
    """A stage's training arguments: checkpoints and logs in <stage>-training/, plus `changes`."""
    return dataclasses.replace(training, output_dir=str(run_.training_dir(stage)), **changes)


def _measure_stages(recipe: Recipe, models: list[tuple[str, object, str | Path]], data, progress: bool
                    ) -> list[StageResult]:
    """[(stage, model, source)] measured: metrics, size and parameters each, latency in interleaved rounds."""
    m, training, e = recipe.model, recipe.training, recipe.evaluation
    results = [measure(name, model, source, data, e, m.task, training.per_device_eval_batch_size, progress)
               for name, model, source in models]
    add_latencies(results, [model for _, model, _ in models], e, progress)
    return results


def _stage_models(run_: Run, stages: list[Stage], task: str) -> list[tuple[str, object, Path]]:
    return [(s.name, _load_stage(run_, s.name, task), run_.folder(s.name)) for s in stages]


def _load_stage(run_: Run, stage: str, task: str):
    return load_model(str(run_.folder(stage)), task, stage)


def _removed_units(before, after) -> dict[str, int]:
    """The card's counts of what pruning removed between two models: heads and FFN neurons."""
    from ..pruning import kept_heads, kept_neurons

    counts = {"heads removed": sum(map(len, kept_heads(before))) - sum(map(len, kept_heads(after))),
              "FFN neurons removed": sum(map(len, kept_neurons(before))) - sum(map(len, kept_neurons(after)))}
    return {name: count for name, count in counts.items() if count > 0}


# ---------------------------------------------------------------------------------------------------- stages


def distillation_stages(recipe: Recipe, run_: Run, teacher: Callable, teacher_layers: int, tokenizer,
                        data: TaskData, teacher_label: str | None = None) -> tuple[list[Stage], dict]:
    """The stages after a teacher: student (distilled), pruned (recipe.prune), int8 (recipe.quantize); with the
    cards' recipe groups of each. `teacher()` gives the teacher model (loaded when a stage needs it), which has
    `teacher_layers` layers."""
    m, training, p = recipe.model, recipe.training, recipe.prune
    args = _stage_args(training, run_, STUDENT)
    metrics = compute_metrics_function(recipe.evaluation, m.task) if args.eval_strategy != "no" else None

    def make_student(folder: Path) -> None:
        student = build_student(m, teacher(), m.task, training)
        check_num_labels(student, data, "student")
        train(student, args, data, tokenizer, folder, teacher=teacher(), compute_metrics=metrics,
              resume_from=_resume_from(training, run_, STUDENT))

    if m.student:
        start = m.student
    else:
        keep = m.keep_layers
        if isinstance(keep, int):
            keep = every_kth_layer(teacher_layers, keep)
        start = f"copy of the teacher with its layers {', '.join(map(str, keep))}"
    distilled = {"Distillation": {"teacher": teacher_label or teacher_name(m.teacher), "student initialisation": start}}
    length = f"{args.max_steps} steps" if args.max_steps > 0 else f"{args.num_train_epochs:g} epochs"
    stages = [Stage(STUDENT, make_student, f"distilling a student for {length}")]
    groups = {STUDENT: card_recipe(args, extra=distilled)}
    last = STUDENT
    if p.prune_fraction > 0:
        stage, pruning = pruning_stage(recipe, run_, tokenizer, data, teacher, STUDENT, ffn_fraction=0.0)
        stages.append(stage)
        groups[PRUNED] = card_recipe(args, extra={**distilled, **pruning})
        last = PRUNED
    if recipe.quantize.quantize:
        stages.append(int8_stage(recipe, run_, tokenizer, last))
        groups[INT8] = groups[last]
    return stages, groups


def pruning_stage(recipe: Recipe, run_: Run, tokenizer, data: TaskData, teacher: Callable | None, source: str,
                  ffn_fraction: float) -> tuple[Stage, dict]:
    """pruned/: recipe.prune.prune_fraction of the heads, then `ffn_fraction` of the FFN neurons removed from the
    model in `source` (a stage of this run, or a folder), then prune_recovery_epochs of distillation from
    `teacher()`. Returns the stage and the card's "Pruning" group."""
    m, training, p = recipe.model, recipe.training, recipe.prune
    recovery = None
    if p.prune_recovery_epochs > 0:
        # Recovery is prediction-layer distillation of the pruned shape: a staged schedule belongs to the
        # student's own training, and pruning while training would prune again (and needs a single process).
        recovery = _stage_args(training, run_, PRUNED, num_train_epochs=p.prune_recovery_epochs, max_steps=-1,
                               intermediate_epochs=0, prune_heads_fraction=0.0, prune_ffn_fraction=0.0)
    metrics = (compute_metrics_function(recipe.evaluation, m.task)
               if recovery is not None and recovery.eval_strategy != "no" else None)

    def make_pruned(folder: Path) -> None:
        model = _load_stage(run_, source, m.task) if run_.folder(source).is_dir() else load_model(
            source, m.task, "model to prune", attn_implementation=m.attn_implementation)
        if p.prune_fraction > 0:
            remove_heads(model, data, p.prune_fraction, training)
        if ffn_fraction > 0:
            remove_neurons(model, data, ffn_fraction, training)
        if recovery is None:
            if is_main_process(training):
                save(model, tokenizer, folder)
            return
        train(model, recovery, data, tokenizer, folder, teacher=teacher(), compute_metrics=metrics,
              resume_from=_resume_from(training, run_, PRUNED))

    units = [unit for unit, share in (("head", p.prune_fraction), ("FFN neuron", ffn_fraction)) if share > 0]
    scoring = training.scoring(while_training=False)
    importance = scoring["method"] + (f" on {scoring['num_batches']} training batches"
                                      if scoring["method"] == "taylor" else "")
    pruning = {"Pruning": {f"{' and '.join(units)} importance": importance}}
    if recovery is not None:
        pruning["Pruning"]["recovery"] = f"{p.prune_recovery_epochs:g} epochs of distillation after pruning"
    return Stage(PRUNED, make_pruned, f"pruning {' and '.join(units)}s" + (" and recovering" if recovery else "")), \
        pruning


def int8_stage(recipe: Recipe, run_: Run, tokenizer, source: str) -> Stage:
    """int8/: the model in `source` (a stage of this run, or a folder) with its Linear layers in int8."""
    m = recipe.model

    def make_int8(folder: Path) -> None:
        model = _load_stage(run_, source, m.task) if run_.folder(source).is_dir() else load_model(
            source, m.task, "model to quantize")
        save(quantize(model, recipe.quantize), tokenizer, folder)

    return Stage(INT8, make_int8, "quantizing to int8", collective=False)


def teacher_stage(recipe: Recipe, run_: Run, tokenizer, data: TaskData, base: str, args: DistillationConfig,
                  what: str) -> Stage:
    """teacher/: the pretrained model `base` fine-tuned on the task with `args` (a fresh classifier head), as
    plain Trainer fine-tuning: the recipe's distillation and pruning-while-training settings do not apply."""
    m = recipe.model
    args = dataclasses.replace(args, alpha=None, hidden_weight=0.0, attention_weight=0.0, intermediate_epochs=0.0,
                               teacher_cache_dir=None, prune_heads_fraction=0.0, prune_ffn_fraction=0.0)
    metrics = compute_metrics_function(recipe.evaluation, m.task) if args.eval_strategy != "no" else None

    def make_teacher(folder: Path) -> None:
        model = load_model(base, m.task, "teacher", num_labels=m.num_labels or data.num_labels,
                           label_names=data.label_names, attn_implementation=m.attn_implementation, new_head=True)
        train(model, args, data, tokenizer, folder, compute_metrics=metrics,
              resume_from=_resume_from(recipe.training, run_, TEACHER))

    return Stage(TEACHER, make_teacher, what)


# ---------------------------------------------------------------------------------------------------- commands


def train_teacher(recipe: Recipe) -> list[StageResult] | None:
    """`train`: fine-tune model.teacher (a pretrained model) on the task into output_dir/teacher/."""
    started = time.perf_counter()
    m, training = recipe.model, recipe.training
    check_launch(training)
    if not m.teacher:
        raise RecipeError("train needs model.teacher: the pretrained model to fine-tune (a folder or Hub id).")
    tokenizer = load_tokenizer(m.tokenizer or m.teacher, m.task)
    data = load_task_data(recipe.data, tokenizer, m.task, training.seed)
    run_ = _run(recipe, data=identity.data_fingerprints(data))
    args = _stage_args(training, run_, TEACHER)
    _execute(run_, [teacher_stage(recipe, run_, tokenizer, data, m.teacher, args, f"fine-tuning {m.teacher}")])
    if not run_.main_process:
        return None
    results = _measure_stages(recipe, [(TEACHER, _load_stage(run_, TEACHER, m.task), run_.folder(TEACHER))], data,
                              not training.disable_tqdm)
    finish(recipe, results, {TEACHER: card_recipe(args, distilled=False)}, data=data, teacher_source=None,
           started=started)
    return results


def distill(recipe: Recipe) -> list[StageResult] | None:
    """`distill`: model.teacher distilled into student/, then pruned/ and int8/ as the recipe asks."""
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
    run_ = _run(recipe, teacher_weights=identity.weights(teacher), data=identity.data_fingerprints(data))
    stages, groups = distillation_stages(recipe, run_, lambda: teacher, teacher.config.num_hidden_layers, tokenizer,
                                         data)
    _execute(run_, stages)
    if not run_.main_process:
        return None
    models = [(TEACHER, teacher, m.teacher), *_stage_models(run_, stages, m.task)]
    _add_pruning_counts(groups, models)
    results = _measure_stages(recipe, models, data, not training.disable_tqdm)
    finish(recipe, results, groups, data=data, teacher_source=m.teacher, started=started)
    return results


def _add_pruning_counts(groups: dict, models: list[tuple]) -> None:
    """Each pruned stage's card says how many heads and FFN neurons were removed from the stage before it."""
    for (_, before, _), (name, after, _) in zip(models, models[1:]):
        if name == PRUNED:
            groups[PRUNED]["Pruning"].update(_removed_units(before, after))


def prune(recipe: Recipe) -> list[StageResult] | None:
    """`prune`: attention heads and/or FFN neurons removed from model.student into pruned/, optionally
    recovered by distillation from model.teacher."""
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
    if p.prune_recovery_epochs > 0 and not m.teacher:
        raise RecipeError("prune_recovery_epochs > 0 distils the pruned model from model.teacher; set it.")
    tokenizer = load_tokenizer(m.tokenizer or m.student, m.task)
    data = load_task_data(recipe.data, tokenizer, m.task, training.seed)
    original = load_model(m.student, m.task, "model to prune", attn_implementation=m.attn_implementation)
    check_num_labels(original, data, "model to prune")
    teacher = _Lazy(lambda: load_model(m.teacher, m.task, "teacher")) if m.teacher else None
    run_ = _run(recipe, student_weights=identity.weights(original), data=identity.data_fingerprints(data))
    stage, pruning = pruning_stage(recipe, run_, tokenizer, data, teacher, m.student,
                                   ffn_fraction=training.prune_ffn_fraction)
    _execute(run_, [stage])
    if not run_.main_process:
        return None
    models = [("original", original, m.student), *_stage_models(run_, [stage], m.task)]
    groups = {PRUNED: card_recipe(_stage_args(training, run_, PRUNED), extra=pruning)
              if p.prune_recovery_epochs > 0 else pruning}
    _add_pruning_counts(groups, models)
    results = _measure_stages(recipe, models, data, not training.disable_tqdm)
    finish(recipe, results, groups, data=data, teacher_source=m.teacher, started=started)
    return results


def quantize_model(recipe: Recipe) -> list[StageResult] | None:
    """`quantize`: model.student with its Linear layers in int8, into int8/; compared with the float model on the
    recipe's data when it has some (otherwise size and latency only)."""
    started = time.perf_counter()
    m, training = recipe.model, recipe.training
    if not m.student:
        raise RecipeError("quantize works on model.student: the folder (or Hub id) of the model to quantize.")
    tokenizer = load_tokenizer(m.tokenizer or m.student, m.task)
    if recipe.data.has_source:
        data = load_task_data(recipe.data, tokenizer, m.task, training.seed)
    else:
        data = TaskData(train=None, validation=None, collator=None, description="(no data: metrics not measured)")
    original = load_model(m.student, m.task, "model to quantize")
    run_ = _run(recipe, student_weights=identity.weights(original))
    stages = [int8_stage(recipe, run_, tokenizer, m.student)]
    _execute(run_, stages)
    if not run_.main_process:
        return None
    results = _measure_stages(recipe, [("float", original, m.student), *_stage_models(run_, stages, m.task)],
                              data, not training.disable_tqdm)
    finish(recipe, results, {}, data=data, teacher_source=m.teacher, started=started)
    return results


def quickstart(recipe: Recipe) -> list[StageResult] | None:
    """`quickstart`: fine-tune the teacher (default: all-MiniLM-L6-v2 on distilkit's sentiment set), distil a
    student, prune and quantize it, and compare every stage."""
    from .quickstart import with_quickstart_defaults

    import transformers

    transformers.logging.set_verbosity_error()  # the fresh classifier head's "newly initialized" notice
    started = time.perf_counter()
    recipe, builtin_teacher, builtin_data = with_quickstart_defaults(recipe)
    m, training, q = recipe.model, recipe.training, recipe.quickstart
    check_launch(training)
    tokenizer = load_tokenizer(m.tokenizer or m.teacher, m.task)
    data = load_task_data(recipe.data, tokenizer, m.task, training.seed)
    run_ = _run(recipe, data=identity.data_fingerprints(data))
    base_name = "all-MiniLM-L6-v2" if builtin_teacher else m.teacher
    teacher_args = _stage_args(training, run_, TEACHER, num_train_epochs=q.teacher_epochs,
                               learning_rate=q.teacher_learning_rate, max_steps=-1)
    teacher = _Lazy(lambda: load_model(str(run_.folder(TEACHER)), m.task, "teacher",
                                       attn_implementation=attention_for(m, training)))
    stages, groups = distillation_stages(recipe, run_, teacher, load_config(m.teacher).num_hidden_layers, tokenizer,
                                         data, teacher_label=f"{base_name}, fine-tuned here")
    stages.insert(0, teacher_stage(recipe, run_, tokenizer, data, m.teacher, teacher_args,
                                   f"fine-tuning {base_name} for {q.teacher_epochs:g} epochs"))
    _execute(run_, stages)
    if not run_.main_process:
        return None
    groups[TEACHER] = {"Training": {"base model": base_name, "epochs": q.teacher_epochs,
                                    "learning rate": q.teacher_learning_rate}}
    models = [(TEACHER, teacher(), run_.folder(TEACHER)), *_stage_models(run_, stages[1:], m.task)]
    _add_pruning_counts(groups, models)
    results = _measure_stages(recipe, models, data, not training.disable_tqdm)
    limitations = []
    if builtin_data:
        limitations.append("Trained on distilkit's built-in quickstart sentiment set (400 short English sentences "
                           "written for the project) and evaluated on its 100 validation sentences: a demonstration "
                           "of the pipeline, not a production sentiment model.")
    finish(recipe, results, groups, data=data, teacher_source=None if builtin_teacher else m.teacher,
           started=started, limitations=limitations)
    elapsed = time.perf_counter() - started
    print(f"Quickstart finished in {elapsed / 60:.1f} min. Push a stage with:\n"
          f"  distilkit push {run_.folder(results[-1].stage)} --repo-id <you>/<name>")
    return results


def evaluate(recipe: Recipe) -> list[StageResult]:
    """`evaluate`: metrics on the validation data, parameters, size on disk and latency of evaluation.eval_models
    (default model.student), timed together; written to output_dir when it is given."""
    m, training, e = recipe.model, recipe.training, recipe.evaluation
    sources = e.eval_models or ([m.student] if m.student else [])
    if not sources:
        raise RecipeError("Nothing to evaluate: give --eval_models FOLDER [FOLDER ...] or model.student.")
    tokenizer = load_tokenizer(m.tokenizer or sources[0], m.task)
    loaded = [load_model(source, m.task, "model to evaluate") for source in sources]
    # Label names in the data take the first model's numbering; the others must number them the same way.
    data = load_eval_data(recipe.data, tokenizer, m.task, loaded[0], training.seed)
    for source, model in zip(sources[1:], loaded[1:]):
        if data.label_names is not None and dict(model.config.id2label) != dict(loaded[0].config.id2label):
            raise RecipeError(
                f"{source} numbers its labels {dict(model.config.id2label)}, but {sources[0]} numbers them "
                f"{dict(loaded[0].config.id2label)}: one label column cannot be scored for both. Evaluate them "
                "separately."
            )
    names = [Path(source).name if Path(source).exists() else source for source in sources]
    results = _measure_stages(recipe, list(zip(names, loaded, sources)), data, not training.disable_tqdm)
    print_table(results)
    if "output_dir" in recipe.values.get("training", {}):
        md, _ = write_results_files(results, training.output_dir, e, data_description=data.description)
        print(f"Written to {md} and results.json.")
    return results


def compress(recipe: Recipe):
    """`compress`: model.teacher compressed to recipe.compress's target on this machine (`distilkit.compress`);
    returns its `CompressResult`."""
    from ..compress.run import compress as compress_teacher
    from ..compress.run import plan_compression

    m, training = recipe.model, recipe.training
    check_launch(training)
    _check_compress_models(recipe)
    if training.world_size > 1:
        raise RecipeError("compress prunes while distilling, which runs in a single process; launch it without "
                          "accelerate/torchrun.")
    machine = compress_machine_settings(recipe)
    tokenizer = load_tokenizer(m.tokenizer or m.teacher, m.task)
    data = load_task_data(recipe.data, tokenizer, m.task, training.seed)
    teacher = load_model(m.teacher, m.task, "teacher", attn_implementation=attention_for(m, training))
    check_num_labels(teacher, data, "teacher")
    metrics = compute_metrics_function(recipe.evaluation, m.task) if data.validation is not None else None
    progress = not training.disable_tqdm
    try:  # the plan and every check, before anything is written; errors later on are not the recipe's
        plan = plan_compression(teacher, data.train, recipe.compress, training, training.output_dir, machine=machine,
                                transfer_dataset=data.transfer, data_collator=data.collator, progress=progress)
    except ValueError as err:
        raise RecipeError(str(err)) from err
    result = compress_teacher(teacher, tokenizer, data.train, data.validation, recipe.compress, training,
                              training.output_dir, machine=machine, transfer_dataset=data.transfer,
                              compute_metrics=metrics, data_collator=data.collator,
                              teacher_name=teacher_name(m.teacher), teacher_hub_id=teacher_hub_id(m.teacher, teacher),
                              progress=progress, plan=plan, remeasure=remeasure_command(training.output_dir))
    if not recipe.compress.measure_only:  # the saved recipe stays the one that made the run
        write_recipe(recipe, training.output_dir)
    print("\n" + (Path(training.output_dir) / "results.md").read_text(encoding="utf-8"), flush=True)
    print(result.summary())
    return result


def remeasure_command(output_dir: str | Path) -> str:
    """The command that measures a finished compress run again: the recipe it saved in output_dir (the run's
    own settings, command-line overrides included) with --measure_only true."""
    import shlex

    return f"distilkit compress --config {shlex.quote(str(Path(output_dir) / RECIPE_FILE))} --measure_only true"


def compress_machine_settings(recipe: Recipe):
    """The settings compress measures latency at: the evaluation section's, which a latency target needs spelled
    out in the recipe or on the command line (their defaults would silently decide what the target means)."""
    from ..compress import MachineSettings
    from ..compress.target import MACHINE_FIELDS

    e, target = recipe.evaluation, recipe.compress.target
    if target.is_latency:
        missing = [name for name in MACHINE_FIELDS if name not in recipe.values.get("evaluation", {})]
        if missing:
            raise RecipeError(f"{target} needs the machine settings it is measured at: set {', '.join(missing)} "
                              "(evaluation section, or --latency_batch_size 8 --latency_seq_len 128 "
                              "--latency_threads 2).")
    elif not e.latency:
        return None
    return MachineSettings(e.latency_batch_size, e.latency_seq_len, e.latency_threads, e.engine)


def _check_compress_models(recipe: Recipe) -> None:
    m = recipe.model
    if not m.teacher:
        raise RecipeError("compress needs model.teacher: a model fine-tuned on the task (a folder or Hub id); "
                          "`distilkit train` makes one.")
    if m.student or m.student_layers:
        raise RecipeError("compress chooses the student's layers from its plan; remove model.student and "
                          "model.student_layers.")
    if m.task != "sequence-classification":
        raise RecipeError(f"compress works on sequence classifiers (task sequence-classification), not {m.task}.")


# ---------------------------------------------------------------------------------------------------- augment


def _load_teacher(source: str, masked_lm: bool):
    from transformers import AutoModel, AutoModelForMaskedLM

    try:
        return (AutoModelForMaskedLM if masked_lm else AutoModel).from_pretrained(source)
    except (OSError, ValueError) as err:
        kind = "a masked LM (augment_mlm='teacher')" if masked_lm else "a model"
        raise RecipeError(f"Could not load the teacher from {source!r} as {kind}: {err}") from err


def _load_tokenizer(sources: list[str]):
    """The first tokenizer that loads: the teacher's comes first, as its ids index the teacher's embeddings."""
    from transformers import AutoTokenizer

    failures = []
    for source in sources:
        try:
            return AutoTokenizer.from_pretrained(source)
        except (OSError, ValueError) as err:
            failures.append(f"{source!r}: {err}")
    raise RecipeError("Could not load a tokenizer from " + "; ".join(failures))


def augment_file(recipe: Recipe) -> Path:
    """`augment`: num_copies augmented copies of each example of augment_input (default data.train_file) written
    to augment_output (distilkit.augment); returns the file written."""
    from ..augment import augment_dataset
    from ..augment.candidates import check_replacement_source
    from ..augment.dataset import check_input
    from ..data import read_table, write_table

    m, d, a = recipe.model, recipe.data, recipe.augment
    source = a.augment_input or d.train_file
    if not source:
        raise RecipeError("Nothing to augment: give --augment_input FILE (or data.train_file).")
    if not a.augment_output:
        raise RecipeError("No output file: give --augment_output FILE (.csv, .tsv, .jsonl, ...).")
    output = Path(a.augment_output)
    if output.resolve() == Path(source).resolve():
        raise RecipeError(f"augment_output is the input file {source!r}: write the copies to another file.")
    text_columns = [d.text_column] + ([d.text_pair_column] if d.text_pair_column else [])
    if output.suffix.lower() == ".txt" and (len(text_columns) > 1 or a.keep_labels):
        raise RecipeError(f"augment_output {str(output)!r}: a .txt file holds one text column without labels; "
                          "use .csv, .tsv or .jsonl for sentence pairs or keep_labels.")
    named_mlm = a.augment_mlm if a.augment_mlm != "teacher" else None
    tokenizer_sources = [source for source in (m.teacher, m.tokenizer, named_mlm) if source]
    if "mask" in a.methods and not tokenizer_sources:
        raise RecipeError("methods includes 'mask' but no tokenizer is named to give the mask token: set "
                          "model.teacher or model.tokenizer.")
    if m.teacher is None:
        try:
            check_replacement_source(a, tokenizer=None, teacher=None)
        except ValueError as err:
            raise RecipeError(str(err)) from err
    try:
        dataset = read_table(source)
        check_input(dataset, text_columns, d.label_column, a)
    except ValueError as err:
        raise RecipeError(f"{source}: {err}") from err

    tokenizer = _load_tokenizer(tokenizer_sources) if tokenizer_sources else None
    teacher = None
    if m.teacher and "replace" in a.methods:
        teacher = _load_teacher(m.teacher, masked_lm=a.augment_mlm == "teacher")
    try:
        augmented = augment_dataset(dataset, tokenizer, d.text_column, d.text_pair_column, teacher=teacher, args=a,
                                    label_column=d.label_column)
    except ValueError as err:
        raise RecipeError(str(err)) from err
    write_table(augmented, output)
    print(f"Wrote {len(augmented)} augmented examples ({a.num_copies} per example of {len(dataset)}) to {output}.")
    return output

"""`compress`: plan, then run the plan's stages on distilkit's one engine (`distilkit.pipeline.stages.Run`), then
measure the result against the teacher.

Stages, each a folder under output_dir written atomically and marked complete for the plan's fingerprint; a
rerun with the same plan skips complete stages and an interrupted distillation resumes from its last
checkpoint, so a killed run is resumed by running it again; a rerun whose plan differs (another target, machine
settings, teacher, data or chosen shape) is refused instead of mixing stages.

    plan.json, plan.md   the plan (`plan.make_plan`)
    student/             the teacher's planned layers (`student_from_teacher`), distilled from the teacher (with
                         the transfer data), heads and FFN neurons pruned gradually while distilling down to the
                         planned totals (checkpoints and logs in student-training/); skipped when the plan keeps
                         the teacher's whole shape
    int8/                int8 (`quantize_int8`), when the plan is int8
    onnx/                with engine "onnxruntime" (`MachineSettings.engine`): the last stage exported to ONNX
                         (`distilkit.export.to_onnx`), what the final latency is measured on
    results.*, tradeoff.png, README.md cards: `results.write_outcome`

`CompressArguments.measure_only`: a rerun of a finished output_dir that makes nothing and only measures and writes
the results again (`check_complete` first), e.g. on quiet cores after a verdict the busy machine made unreliable.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import types
from collections.abc import Sequence
from pathlib import Path

from ..config import DistillationConfig
from ..engines import ONNXRUNTIME
from ..pipeline.identity import training_settings
from ..pipeline.stages import Run, Stage, write_text
from ..serialization.format import compression_record
from .plan import PLAN_JSON, PLAN_MD, Plan, make_plan, saved_plan_matches
from .refine import RefineRound, next_shape, read_rounds, write_rounds
from .shape import ModelShape
from .target import MISSED, CompressArguments, MachineSettings

STUDENT, INT8, ONNX = "student", "int8", "onnx"


def plan_compression(teacher, train_dataset, args: CompressArguments, training_args: DistillationConfig,
                     output_dir: str | Path, *, machine: MachineSettings | None = None, transfer_dataset=None,
                     data_collator=None, progress: bool = True) -> Plan:
    """Every check of a `compress` run, and its plan: raises ValueError, before anything is trained or written to
    output_dir (only the latency cache is updated), for a compressed teacher, a target or machine settings the
    plan refuses, a training schedule that cannot reach the planned shape, a distillation the trainer would
    refuse, or an output_dir holding another run (other plan, teacher weights, data or training settings).

    The candidates are scored (`quality.QualityProbe`) on the labelled `train_dataset` rows, batched by
    `data_collator`. An output_dir whose plan.json was made for this target, machine settings, teacher, candidate
    grid and inputs keeps that plan rather than measuring and scoring again (a new measurement's noise could
    choose another shape)."""
    output_dir = Path(output_dir)
    check_training_args(training_args)
    check_teacher(teacher)
    inputs = run_inputs(teacher, train_dataset, transfer_dataset, training_args)
    saved = read_plan(output_dir)
    if saved is not None and saved.inputs == inputs and saved_plan_matches(saved, teacher.config, args, machine):
        plan = saved
    elif args.measure_only:
        raise ValueError(no_plan_to_measure(output_dir, saved))
    else:
        probe = (quality_probe(teacher, train_dataset, data_collator, args.plan_score_rows, training_args.seed,
                               inputs, progress) if args.plan_by == "quality" else None)
        plan = dataclasses.replace(make_plan(teacher.config, args, machine, progress=progress, probe=probe),
                                   inputs=inputs)
    examples = distilled_examples(train_dataset, transfer_dataset)
    check_schedule(plan, training_args, examples)
    check_distillation(teacher, plan, training_args, train_dataset, transfer_dataset)
    rounds = read_rounds(output_dir, plan)
    steps = refine_steps(args, training_args, examples)
    if rounds and rounds[0].steps != steps:
        raise ValueError(f"{output_dir / 'refine.json'} records closed-loop rounds distilled for {rounds[0].steps} "
                         f"steps, and this run's refine_steps is {steps}: use the same refine_steps, or delete "
                         "refine.json and the refine*/ folders to refine again.")
    Run(output_dir, plan.identity()).check(stage_names(plan, teacher, rounds))
    if args.measure_only:
        check_complete(Run(output_dir, plan.identity()), stage_names(plan, teacher, rounds))
    return plan


# The last quality probe built in this process, with what it was built from: planning another target for the same
# teacher and data (benchmarks plan several in one process) reuses it instead of ranking the layers again (for
# MPNet-base and 128 score rows, about 2 minutes at 2 threads).
_LAST_PROBE: list = []


def quality_probe(teacher, train_dataset, data_collator, score_rows: int, seed: int, inputs: dict, progress: bool):
    """`quality.QualityProbe.build` for these inputs, or the last probe when it was built from the same teacher
    object with the same weights (`inputs`' fingerprint), the same data (by the datasets' fingerprint: none, no
    reuse), collator, score rows and seed."""
    from .quality import QualityProbe

    key = (inputs["teacher_weights"], inputs["train_data"], score_rows, seed, _collator_key(data_collator))
    reusable = inputs["train_data"] is not None and _LAST_PROBE and _LAST_PROBE[0][0] == key
    if reusable and _LAST_PROBE[0][1].teacher is teacher:
        return _LAST_PROBE[0][1]
    probe = QualityProbe.build(teacher, train_dataset, data_collator, score_rows=score_rows, seed=seed,
                               progress=progress)
    # The collator is kept with the key: objects keyed by identity stay alive, so their ids are not reused.
    _LAST_PROBE[:] = [(key, probe, data_collator)]
    return probe


def _collator_key(collator) -> tuple:
    """What a collator batches by: a class instance by its type and attributes (objects such as a tokenizer by
    identity); a function, method, partial or anything without attributes by identity."""
    plain = (int, float, str, bool, type(None))
    fields = getattr(collator, "__dict__", None)
    if not fields or isinstance(collator, (types.FunctionType, types.MethodType, functools.partial)):
        return (type(collator), id(collator))
    return (type(collator), tuple(sorted((name, value if isinstance(value, plain) else id(value))
                                         for name, value in fields.items())))


def stage_names(plan: Plan, teacher, rounds: Sequence[RefineRound] = ()) -> list[str]:
    """The plan's stages: student/ unless the plan keeps the teacher's whole shape (int8 alone needs no
    distillation), int8/ when it is int8, the closed loop's `rounds` (refine<k>/, refine<k>-int8/), and onnx/ (the
    last of them exported) when the model is deployed on ONNX Runtime."""
    models = [STUDENT] * distils(plan, teacher) + [INT8] * plan.shape.int8
    return models + [name for r in rounds for name in r.stages()] + [ONNX] * deploys_onnx(plan)


def deploys_onnx(plan: Plan) -> bool:
    return plan.machine is not None and plan.machine.engine == ONNXRUNTIME


def distils(plan: Plan, teacher) -> bool:
    """Whether the plan's shape differs from the teacher's (layers, heads or FFN neurons), so it is distilled."""
    teacher_shape = ModelShape.of(teacher)
    return (plan.shape.heads, plan.shape.ffn) != (teacher_shape.heads, teacher_shape.ffn)


def compress(teacher, tokenizer, train_dataset, eval_dataset, args: CompressArguments,
             training_args: DistillationConfig, output_dir: str | Path, *, machine: MachineSettings | None = None,
             transfer_dataset=None, compute_metrics=None, data_collator=None, teacher_name: str | None = None,
             teacher_hub_id: str | None = None, progress: bool = True, plan: Plan | None = None,
             remeasure: str | None = None):
    """Compress `teacher` (a sequence classifier) to `args`' target and return a `results.CompressResult`.

    `machine`: the batch size, sequence length and threads latency is measured at (needed for latency and speedup
    targets; with a size target it only adds latency to the results). `training_args` drive the distillation
    (its output_dir is replaced by output_dir/student-training; pruning fractions come from the plan). The
    datasets are tokenised (`train_dataset` labelled, `transfer_dataset` not); `compute_metrics` as for a Trainer.

    Every check (`plan_compression`) runs before anything is trained or written to output_dir; `plan`: what `plan_compression`
    returned for these same arguments, to run its checks apart (the CLI does), or None to run them here.
    `teacher_name` / `teacher_hub_id`: how the cards name the teacher and link it (default: from the teacher's
    `name_or_path`; a local folder is named, not linked). `remeasure`: the command results.md gives to measure again
    when the machine was busy (the command line passes its own; default: how to do it from Python).

    `args.measure_only`: every stage must be complete already (else a ValueError naming the missing ones, before
    anything is written); nothing is made or trained, only the results and cards are measured and written again.
    """
    from ..model_card import facts
    from .results import write_files, write_outcome

    teacher_hub_id = teacher_hub_id or facts.teacher_hub_id(None, teacher)
    teacher_name = teacher_name or facts.teacher_name(None, teacher)

    output_dir = Path(output_dir)
    if plan is None:
        plan = plan_compression(teacher, train_dataset, args, training_args, output_dir, machine=machine,
                                transfer_dataset=transfer_dataset, data_collator=data_collator, progress=progress)

    transfer_examples = 0 if transfer_dataset is None else len(transfer_dataset)

    def outcome(names: list[str], rounds: list[RefineRound], earlier=None):
        # Training moves and casts the teacher (args.device, teacher_dtype): it is measured as it came, in every
        # measurement (results.evaluate keeps mixed precision off, which would leave it in an autocast forward).
        teacher.to(device=teacher_device, dtype=teacher_dtype)
        onnx = output_dir / ONNX if ONNX in names else None
        return write_outcome(plan, teacher, tokenizer, [n for n in names if n != ONNX], output_dir, training_args,
                             onnx_folder=onnx, refine_rounds=rounds, eval_dataset=eval_dataset,
                             compute_metrics=compute_metrics, data_collator=data_collator,
                             rounds=args.latency_rounds * (1 if earlier is None else CONFIRM_ROUNDS), earlier=earlier,
                             teacher_name=teacher_name, teacher_hub_id=teacher_hub_id,
                             transfer_examples=transfer_examples, progress=progress, remeasure=remeasure)

    teacher_parameter = next(teacher.parameters())
    teacher_device, teacher_dtype = teacher_parameter.device, teacher_parameter.dtype
    rounds = read_rounds(output_dir, plan)
    if args.measure_only:  # a finished run measured again: nothing is made, trained or planned
        names = stage_names(plan, teacher, rounds)
        check_complete(Run(output_dir, plan.identity()), names)
        return outcome(names, rounds)

    save_plan(output_dir, plan)
    run = Run(output_dir, plan.identity())
    examples = distilled_examples(train_dataset, transfer_dataset)

    def distil(model, name: str, arguments: DistillationConfig, callback):
        from ..trainer import DistillationTrainer

        trainer = DistillationTrainer(model=model, args=arguments, teacher_model=teacher, train_dataset=train_dataset,
                                      eval_dataset=eval_dataset, data_collator=data_collator,
                                      processing_class=tokenizer, compute_metrics=compute_metrics,
                                      transfer_dataset=transfer_dataset)
        if callback is not None:
            trainer.add_callback(callback)
        trainer.train(resume_from_checkpoint=run.last_checkpoint(name))
        return trainer

    def student(folder: Path) -> None:
        from .. import student_from_teacher

        training_dir = run.training_dir(STUDENT)
        arguments = stage_arguments(plan, training_args, training_dir)
        trainer = distil(student_from_teacher(teacher, plan.keep_layers), STUDENT, arguments,
                         shape_pruning(plan.shape, plan.teacher, arguments))
        check_shape(trainer.model, plan.shape, training_dir)
        trainer.save_state()
        trainer.save_model(str(folder))

    def quantized(source: str):
        def make(folder: Path) -> None:
            from .. import from_pretrained, save_pretrained
            from ..quantization import quantize_int8

            model = from_pretrained(run.folder(source)) if source else copy.deepcopy(teacher)
            save_pretrained(quantize_int8(model, quantize_embeddings=plan.shape.int8_embeddings), folder, tokenizer)
        return make

    def refined(r: RefineRound, source: str | None):
        def make(folder: Path) -> None:
            from .. import from_pretrained, student_from_teacher

            training_dir = run.training_dir(r.float_stage)
            arguments = stage_arguments(plan, training_args, training_dir, max_steps=r.steps)
            model = from_pretrained(run.folder(source)) if source else student_from_teacher(teacher, plan.keep_layers)
            trainer = distil(model, r.float_stage, arguments, round_pruning(r.shape, arguments))
            check_shape(trainer.model, r.shape, training_dir)
            trainer.save_state()
            trainer.save_model(str(folder))
        return make

    def onnx(folder: Path) -> None:
        from ..export import to_onnx

        to_onnx(run.folder([name for name in names if name != ONNX][-1]), folder)

    def makers() -> list[Stage]:
        float_source = STUDENT if STUDENT in names else None
        made = {STUDENT: Stage(STUDENT, student, "distilling with gradual pruning"),
                INT8: Stage(INT8, quantized(float_source), "quantizing to int8"),
                ONNX: Stage(ONNX, onnx, "exporting to ONNX Runtime")}
        for r in rounds:
            made[r.float_stage] = Stage(r.float_stage, refined(r, float_source),
                                        f"closed loop {r.describe(plan)}: pruning and distilling again")
            made[f"{r.float_stage}-int8"] = Stage(f"{r.float_stage}-int8", quantized(r.float_stage),
                                                  "quantizing to int8")
            float_source = r.float_stage
        return [made[name] for name in names]

    while True:
        names = stage_names(plan, teacher, rounds)
        run.execute(makers())
        result = outcome(names, rounds)
        if result.verdict != MISSED or not plan.target.is_latency or len(rounds) >= args.max_refine_rounds:
            return result
        # Confirm the miss before pruning by it: on a noisy machine one measurement can miss a target the model
        # meets (a pruning round costs accuracy). The verdict is over both measurements' rounds.
        result = outcome(names, rounds, earlier=result)
        if result.verdict != MISSED:
            return result
        current = rounds[-1].shape if rounds else plan.shape
        teacher_ms, missed_ms = result.stages[0].latency_ms, result.final.latency_ms
        step = next_shape(plan, current, missed_ms, teacher_ms)
        if step is None:
            result.refine_note = (f"no smaller shape of {current.num_layers} layers in this precision is expected "
                                  "to fit the budget; plan again with more candidates or a looser target")
            write_files(result, output_dir, training_args, teacher_name, teacher_hub_id, transfer_examples)
            return result
        rounds = [*rounds, RefineRound(len(rounds) + 1, step[0], missed_ms, teacher_ms, step[1],
                                       refine_steps(args, training_args, examples))]
        write_rounds(output_dir, plan, rounds)


CONFIRM_ROUNDS = 2  # a miss the closed loop would prune by is measured again over this many times latency_rounds


def refine_steps(args: CompressArguments, training_args: DistillationConfig, examples: int) -> int:
    """The distillation steps of a refine round: `args.refine_steps`, or a fifth of the distillation's."""
    if args.refine_steps is not None:
        return args.refine_steps
    return max(1, round(training_steps(training_args, examples) / 5))


def round_pruning(shape: ModelShape, training_args: DistillationConfig):
    """A refine round's pruning: at its first step, to `shape`'s heads and FFN neurons per layer, scored as the
    distillation's pruning is."""
    from ..pruning import PruningCallback

    scoring = training_args.scoring(while_training=True)
    scoring.pop("min_heads_per_layer", None)
    return PruningCallback(target_fraction=0.0, prune_every_steps=1, num_prunes=1, seed=training_args.seed,
                           head_counts=list(shape.heads), ffn_counts=list(shape.ffn), **scoring)


def stage_arguments(plan: Plan, training_args: DistillationConfig, training_dir: Path | None = None,
                    **changes) -> DistillationConfig:
    """A distillation's arguments: the run's with `changes`, writing to `training_dir` (None: the run's
    output_dir), on the layer map the plan sets (`Plan.layer_map_for`: the kept layers' map for layer terms on
    the default 'uniform' one). The pruning is `shape_pruning`'s."""
    from ..pipeline.identity import training_settings

    layer_map = plan.layer_map_for(training_settings(training_args))
    if layer_map is not None:
        changes["layer_map"] = layer_map
    if training_dir is not None:
        changes["output_dir"] = str(training_dir)
    return dataclasses.replace(training_args, **changes)


def shape_pruning(shape: ModelShape, teacher: dict, training_args: DistillationConfig):
    """The callback that prunes the layer-selected student, while it is distilled, to exactly `shape`'s heads and
    FFN neurons per layer (`PruningCallback` with per-layer counts), on the training arguments' schedule and
    scoring; None when the shape keeps every head and neuron of the kept layers. `teacher`: the teacher's heads
    and FFN width per layer (`plan.teacher_summary`)."""
    from ..pruning import PruningCallback

    heads = None if all(h == teacher["heads"] for h in shape.heads) else list(shape.heads)
    ffn = None if all(f == teacher["ffn"] for f in shape.ffn) else list(shape.ffn)
    if heads is None and ffn is None:
        return None
    scoring = training_args.scoring(while_training=True)
    scoring.pop("min_heads_per_layer", None)  # the per-layer counts decide
    return PruningCallback(target_fraction=0.0, prune_every_steps=training_args.prune_every_steps,
                           num_prunes=training_args.prune_num_prunes, seed=training_args.seed, head_counts=heads,
                           ffn_counts=ffn, **scoring)


def run_inputs(teacher, train_dataset, transfer_dataset, training_args: DistillationConfig) -> dict:
    """What the stages are made from besides the plan: the teacher's weights (`teacher_fingerprint`), the
    training and transfer data (datasets' `_fingerprint`; None for data without one) and the training settings
    that shape the result (all but the output, logging and reporting ones)."""
    from ..teacher_cache import teacher_fingerprint

    return {"teacher_weights": teacher_fingerprint(teacher),
            "train_data": getattr(train_dataset, "_fingerprint", None),
            "transfer_data": None if transfer_dataset is None else getattr(transfer_dataset, "_fingerprint", None),
            # json round trip: the values as plan.json stores them, so a resumed run compares like with like
            "training_settings": json.loads(json.dumps(training_settings(training_args), sort_keys=True,
                                                       default=str))}


# ---------------------------------------------------------------------------------------------------- checks

def check_training_args(training_args: DistillationConfig) -> None:
    """The plan sets how much each layer is pruned; a run that set it too would be ambiguous."""
    given = [name for name in ("prune_heads_fraction", "prune_ffn_fraction", "prune_min_heads_per_layer")
             if (getattr(training_args, name) or 0) > 0]
    if given:
        raise ValueError(f"compress sets {' and '.join(given)} from its plan (the heads and FFN neurons of each "
                         "layer); leave them unset in the training arguments (the target decides how much is "
                         "pruned).")


def distilled_examples(train_dataset, transfer_dataset) -> int:
    """The rows a distillation epoch goes through: the labelled ones and the transfer ones."""
    return len(train_dataset) + (len(transfer_dataset) if transfer_dataset is not None else 0)


def training_steps(training_args: DistillationConfig, examples: int) -> int:
    """Optimizer steps of one distillation run over `examples` (max_steps, or the epochs' worth of batches)."""
    if training_args.max_steps > 0:
        return training_args.max_steps
    batches = math.ceil(examples / training_args.train_batch_size)
    return math.ceil(math.ceil(batches / training_args.gradient_accumulation_steps) * training_args.num_train_epochs)


def check_teacher(teacher) -> None:
    """The plan starts from the teacher's full float shape, so the teacher must be an uncompressed model."""
    record = compression_record(teacher)
    if record:
        raise ValueError(f"The teacher is already compressed ({', '.join(sorted(record))} in its config's distilkit "
                         "record); compress plans from an uncompressed float model. Give the fine-tuned model it "
                         "was made from as the teacher.")


def check_schedule(plan: Plan, training_args: DistillationConfig, examples: int) -> None:
    """The pruning schedule (prune_every_steps, prune_num_prunes) must end within the distillation's steps, or the
    model would not reach the planned shape."""
    callback = shape_pruning(plan.shape, plan.teacher, training_args)
    if callback is None:
        return
    steps = training_steps(training_args, examples)
    schedule = callback.prune_steps(steps)
    if schedule[-1] > steps:
        raise ValueError(
            f"The plan prunes while distilling, at steps {schedule} (prune_every_steps="
            f"{training_args.prune_every_steps}, prune_num_prunes={training_args.prune_num_prunes}), but the "
            f"distillation has only {steps} steps. Lower prune_every_steps / prune_num_prunes or train longer.")


def check_distillation(teacher, plan: Plan, training_args: DistillationConfig, train_dataset,
                       transfer_dataset) -> None:
    """The checks DistillationTrainer runs when the distillation starts (heads, attention implementation, layer
    map, labels, transfer data), run up front on a weightless stand-in for the layer-selected student: its
    planned layers, and the teacher's attention implementation, which the student is loaded with."""
    import copy

    import torch

    from ..trainer import DistillationTrainer, _check_labels, model_input_columns
    from ..transfer import check_transfer

    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = plan.shape.num_layers
    layer_types = getattr(config, "layer_types", None)
    if isinstance(layer_types, list):
        config.layer_types = [layer_types[i] for i in plan.keep_layers]
    with torch.device("meta"):
        student = type(teacher)(config)
    args = stage_arguments(plan, training_args)
    if args.uses_teacher:
        DistillationTrainer._check_compatible(student, teacher, args)
        DistillationTrainer._resolve_layer_map(student, teacher, args)
    _check_labels(student, train_dataset)
    if transfer_dataset is not None:
        from ..tasks import task_of

        check_transfer(transfer_dataset, train_dataset, task_of(student), config.num_labels, args,
                       model_input_columns(student, args))


def check_shape(model, want: ModelShape, training_dir: Path) -> None:
    """After distilling: exactly the planned heads and FFN neurons in each layer (the shape whose twin was
    measured, or a refine round's)."""
    got = ModelShape.of(model)
    found, needed = (got.heads, got.ffn), (want.heads, want.ffn)
    if found != needed:
        raise RuntimeError(
            f"Distillation ended with heads {list(got.heads)} and FFN neurons {list(got.ffn)} per layer; the plan "
            f"needs {list(want.heads)} and {list(want.ffn)}. The pruning "
            f"schedule did not finish: see the training log's pruning/* entries. A rerun would resume the same "
            f"checkpoints and end the same way: delete {training_dir}/ to distil again from the start.")


def check_complete(run: Run, names: list[str]) -> None:
    """measure_only: every stage of the plan must be complete (made by this run's identity); else a ValueError
    naming the missing ones. Writes nothing."""
    missing = [name for name in names if not run.complete(name)]
    if missing:
        raise ValueError(
            f"measure_only measures a finished run again, but {run.output_dir} has {len(missing)} of its "
            f"{len(names)} stages unfinished: {', '.join(f'{name}/' for name in missing)}. Run the same command "
            "without measure_only first: it makes them (and resumes an interrupted distillation).")


def no_plan_to_measure(output_dir: Path, saved: Plan | None) -> str:
    """Why measure_only has nothing to measure: no plan.json in output_dir, or one made for another target,
    machine settings, teacher or candidate grid."""
    if saved is None:
        return (f"measure_only measures a finished run again, but {output_dir} has no {PLAN_JSON}: run the same "
                "command without measure_only first (or give the output_dir of the finished run).")
    return (f"measure_only measures a finished run again, but the {PLAN_JSON} in {output_dir} was made for another "
            f"target, machine settings, teacher or candidate grid (it planned {saved.target} at "
            f"{None if saved.machine is None else saved.machine.to_dict()}); give the settings of the run that made "
            "it.")


def save_plan(output_dir: Path, plan: Plan) -> None:
    """`plan` as output_dir's plan.json (and plan.md): a `compress` run in that folder with the same target,
    machine settings, teacher, candidate grid and inputs keeps it (`plan_compression`) instead of planning again."""
    output_dir.mkdir(parents=True, exist_ok=True)
    write_text(output_dir / PLAN_JSON, json.dumps(plan.to_dict(), indent=1) + "\n")
    write_text(output_dir / PLAN_MD, plan.to_markdown())


def read_plan(output_dir: Path) -> Plan | None:
    """The plan.json of an earlier run in output_dir, or None."""
    path = output_dir / PLAN_JSON
    if not path.is_file():
        return None
    try:
        return Plan.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a readable compression plan ({err}); choose another output_dir.") from err

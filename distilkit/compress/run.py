"""`compress`: plan, then run the plan stage by stage, then measure the result against the target.

Stages, each a folder under output_dir, written atomically (`distilkit.save_pretrained`) and then marked complete
(`STAGE_MARKER`, naming the plan's fingerprint). A rerun with the same plan skips complete stages, and an
interrupted distillation resumes from its last checkpoint, so a killed run is resumed by running it again; a rerun
whose plan differs (another target, machine settings, teacher or chosen shape) is refused instead of mixing stages.

    plan.json, plan.md   the plan (`plan.make_plan`)
    01-layers/           the teacher's planned layers (`student_from_teacher`)
    02-distilled/        distilled from the teacher (with the transfer data), heads and FFN neurons pruned
                         gradually while distilling down to the planned totals (checkpoints and logs in
                         02-distilled-training/)
    03-int8/             int8 (`quantize_dynamic`), when the plan is int8
    results.*, tradeoff.png, README.md cards: `results.write_outcome`
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path

from ..config import DistillationConfig
from ..serialization.atomic import publishing_file
from .cost_model import MachineSettings
from .plan import PLAN_JSON, PLAN_MD, Plan, make_plan
from .shape import ModelShape
from .target import CompressArguments

STAGE_MARKER = "distilkit_stage.json"
LAYERS, DISTILLED, INT8 = "01-layers", "02-distilled", "03-int8"
# The distillation's checkpoints, logs and state: beside its stage folder, so that folder holds the model alone
# (its size on disk is the model's) and a killed distillation resumes from its last checkpoint.
DISTILLED_TRAINING = "02-distilled-training"


def compress(teacher, tokenizer, train_dataset, eval_dataset, args: CompressArguments,
             training_args: DistillationConfig, output_dir: str | Path, *, machine: MachineSettings | None = None,
             transfer_dataset=None, compute_metrics=None, data_collator=None, teacher_name: str | None = None,
             progress: bool = True):
    """Compress `teacher` (a sequence classifier) to `args`' target and return a `results.CompressResult`.

    `machine`: the batch size, sequence length and threads latency is measured at (needed for latency and speedup
    targets; with a size target it only adds latency to the results). `training_args` drive the distillation
    (its output_dir is replaced by output_dir/02-distilled-training; pruning fractions come from the plan). The
    datasets are tokenised (`train_dataset` labelled, `transfer_dataset` not); `compute_metrics` as for a Trainer.

    Every check (target, machine settings, architecture, training schedule, an output_dir holding another plan)
    runs before anything is trained or written to output_dir.
    """
    from .results import write_outcome

    output_dir = Path(output_dir)
    check_training_args(training_args)
    plan = make_plan(teacher.config, args, machine, progress=progress)
    examples = len(train_dataset) + (len(transfer_dataset) if transfer_dataset is not None else 0)
    check_schedule(plan, training_args, examples)
    check_resumable(output_dir, plan)

    output_dir.mkdir(parents=True, exist_ok=True)
    for name, text in ((PLAN_JSON, json.dumps(plan.to_dict(), indent=1) + "\n"), (PLAN_MD, plan.to_markdown())):
        with publishing_file(output_dir / name) as staging:
            staging.write_text(text, encoding="utf-8")

    def layers(folder: Path) -> None:
        from .. import save_pretrained, student_from_teacher

        save_pretrained(student_from_teacher(teacher, plan.keep_layers), folder, tokenizer)

    def distilled(folder: Path) -> None:
        from .. import from_pretrained
        from ..trainer import DistillationTrainer

        heads_fraction, ffn_fraction = plan.prune_fractions
        training_dir = output_dir / DISTILLED_TRAINING
        stage_args = dataclasses.replace(training_args, output_dir=str(training_dir),
                                         prune_heads_fraction=heads_fraction, prune_ffn_fraction=ffn_fraction)
        trainer = DistillationTrainer(model=from_pretrained(output_dir / LAYERS), args=stage_args,
                                      teacher_model=teacher, train_dataset=train_dataset, eval_dataset=eval_dataset,
                                      data_collator=data_collator, processing_class=tokenizer,
                                      compute_metrics=compute_metrics, transfer_dataset=transfer_dataset)
        trainer.train(resume_from_checkpoint=last_checkpoint(training_dir))
        check_shape(trainer.model, plan)
        trainer.save_state()
        trainer.save_model(str(folder))

    def int8(folder: Path) -> None:
        from .. import from_pretrained, save_pretrained
        from ..quantization import quantize_dynamic

        model = quantize_dynamic(from_pretrained(output_dir / DISTILLED),
                                 quantize_embeddings=plan.shape.int8_embeddings)
        save_pretrained(model, folder, tokenizer)

    stages: list[tuple[str, Callable[[Path], None]]] = [(LAYERS, layers), (DISTILLED, distilled)]
    if plan.shape.int8:
        stages.append((INT8, int8))
    for number, (name, make) in enumerate(stages, 1):
        if progress:
            state = "complete, skipped" if stage_complete(output_dir / name, plan) else "making"
            print(f"[{number}/{len(stages)}] {name}: {state}", flush=True)
        run_stage(output_dir / name, plan, make)
    return write_outcome(plan, teacher, tokenizer, [name for name, _ in stages], output_dir, training_args,
                         eval_dataset=eval_dataset, compute_metrics=compute_metrics, data_collator=data_collator,
                         rounds=args.latency_rounds, teacher_name=teacher_name,
                         transfer_examples=0 if transfer_dataset is None else len(transfer_dataset))


# ---------------------------------------------------------------------------------------------------- checks

def check_training_args(training_args: DistillationConfig) -> None:
    """The plan sets the pruning shares; a run that set them too would be ambiguous."""
    given = [name for name in ("prune_heads_fraction", "prune_ffn_fraction") if getattr(training_args, name) > 0]
    if given:
        raise ValueError(f"compress sets {' and '.join(given)} from its plan; leave them at 0 in the training "
                         "arguments (the target decides how much is pruned).")


def training_steps(training_args: DistillationConfig, examples: int) -> int:
    """Optimizer steps of one distillation run over `examples` (max_steps, or the epochs' worth of batches)."""
    if training_args.max_steps > 0:
        return training_args.max_steps
    batches = math.ceil(examples / training_args.train_batch_size)
    return math.ceil(math.ceil(batches / training_args.gradient_accumulation_steps) * training_args.num_train_epochs)


def check_schedule(plan: Plan, training_args: DistillationConfig, examples: int) -> None:
    """The pruning schedule (prune_every_steps, prune_num_prunes) must end within the distillation's steps, or the
    model would not reach the planned shape."""
    from ..pruning import HeadPruningCallback

    heads_fraction, ffn_fraction = plan.prune_fractions
    if heads_fraction == 0 and ffn_fraction == 0:
        return
    steps = training_steps(training_args, examples)
    schedule = HeadPruningCallback(target_fraction=heads_fraction, ffn_target_fraction=ffn_fraction,
                                   prune_every_steps=training_args.prune_every_steps,
                                   num_prunes=training_args.prune_num_prunes).prune_steps(steps)
    if schedule[-1] > steps:
        raise ValueError(
            f"The plan prunes while distilling, at steps {schedule} (prune_every_steps="
            f"{training_args.prune_every_steps}, prune_num_prunes={training_args.prune_num_prunes}), but the "
            f"distillation has only {steps} steps. Lower prune_every_steps / prune_num_prunes or train longer.")


def check_shape(model, plan: Plan) -> None:
    """After distilling: the layers, and the totals of heads and FFN neurons, the plan chose. (Pruning ranks heads
    and neurons across layers, so per layer they may differ from the plan's uniform shape; cost depends on the
    totals.)"""
    got, want = ModelShape.of(model), plan.shape
    found = (got.num_layers, sum(got.heads), sum(got.ffn))
    needed = (want.num_layers, sum(want.heads), sum(want.ffn))
    if found != needed:
        raise RuntimeError(
            f"Distillation ended with (layers, heads, FFN neurons) = {found}; the plan needs {needed}. The pruning "
            "schedule did not finish: see the training log's pruning/* entries.")


def check_resumable(output_dir: Path, plan: Plan) -> None:
    """An output_dir with a plan.json is resumed only for the same plan."""
    path = output_dir / PLAN_JSON
    if not path.is_file():
        return
    try:
        before = Plan.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a readable compression plan ({err}); choose another output_dir.") from err
    if before.fingerprint() != plan.fingerprint():
        old, new = before.identity(), plan.identity()
        changed = ", ".join(f"{key}: {old[key]} -> {new[key]}" for key in new if old.get(key) != new[key])
        raise ValueError(f"{output_dir} holds a run of another plan ({changed}); resuming would mix the two. Use "
                         "another output_dir, or delete this one to start over.")


# ---------------------------------------------------------------------------------------------------- stages

def last_checkpoint(training_dir: Path) -> str | None:
    """The newest complete checkpoint of an interrupted distillation, or None to start it afresh."""
    from ..serialization.checkpoints import last_complete_checkpoint

    try:
        return last_complete_checkpoint(str(training_dir))
    except ValueError:  # no (complete) checkpoint
        return None


def stage_complete(folder: Path, plan: Plan) -> bool:
    marker = folder / STAGE_MARKER
    if not marker.is_file():
        return False
    return json.loads(marker.read_text(encoding="utf-8")).get("plan") == plan.fingerprint()


def run_stage(folder: Path, plan: Plan, make: Callable[[Path], None]) -> bool:
    """Make a stage folder unless it is complete for this plan; mark it complete. Returns whether it ran."""
    if stage_complete(folder, plan):
        return False
    make(folder)
    with publishing_file(folder / STAGE_MARKER) as staging:
        staging.write_text(json.dumps({"stage": folder.name, "plan": plan.fingerprint()}) + "\n", encoding="utf-8")
    return True

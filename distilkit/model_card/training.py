"""The card of a distillation run: `TrainingRun` holds what a `DistillationTrainer` knows about its run as plain
values (its `create_model_card` fills one), and `trainer_model_card` turns it into the card, teacher and student
measured, with the recipe of the run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huggingface_hub import ModelCard
from transformers import PreTrainedModel

from ..config import DistillationConfig
from ..serialization import compression_record
from .facts import CardFacts, as_list, teacher_hub_id, teacher_name
from .recipe import pruning_callback_recipe, recipe_from_config
from .render import render_card
from .table import ModelRow, default_row_name, measure_model, merge_rows

if TYPE_CHECKING:
    from ..pruning import PruningCallback

# Trainer metrics that describe the run, not the model.
_NOT_MODEL_METRICS = ("runtime", "samples_per_second", "steps_per_second", "epoch", "step")


@dataclass
class TrainingRun:
    """A distillation run as its card needs it.

    Attributes:
        args: the run's `DistillationConfig`.
        student: the trained model (what the card describes); `teacher`: the teacher model, if any.
        layer_map: the resolved student -> teacher hidden-state map (empty or None: the configured one is shown).
        log_history: the Trainer's log entries; the last one with eval_* metrics gives the student's metrics.
        optimizer_steps: optimizer steps taken.
        pruning_callback: the `PruningCallback` that pruned the student while it trained, if any.
        repo_id: the Hub repo the run pushes to, if known.
        transfer_examples: unlabelled examples the run learnt from (distilkit.transfer), if any.
    """

    args: DistillationConfig
    student: PreTrainedModel
    teacher: PreTrainedModel | None = None
    layer_map: Mapping[int, int] | None = None
    log_history: Sequence[Mapping[str, Any]] = field(default_factory=list)
    optimizer_steps: int = 0
    pruning_callback: PruningCallback | None = None
    repo_id: str | None = None
    transfer_examples: int = 0


def trainer_model_card(
    run: TrainingRun,
    language: str | None = None,
    license: str | None = None,
    tags: str | list[str] | None = None,
    model_name: str | None = None,
    finetuned_from: str | None = None,
    tasks: str | list[str] | None = None,
    dataset_tags: str | list[str] | None = None,
    dataset: str | list[str] | None = None,
    dataset_args: str | list[str] | None = None,
    *,
    rows: Sequence[ModelRow] = (),
    latency_setup: str | None = None,
    limitations: Sequence[str] = (),
) -> ModelCard:
    """distilkit's card for the student of `run`; the other arguments are `Trainer.create_model_card`'s.

    The table gets a teacher row and a student row (parameters and weight size measured; the student's metrics
    from its last evaluation). `rows` adds rows or completes these two (a row named "teacher", or one with
    `this_model=True`, is merged into them), e.g. the teacher's accuracy or latencies. `finetuned_from` is the
    teacher's Hub id (default: the teacher's `name_or_path` when it is a Hub id); `dataset_tags` are dataset Hub
    ids, `dataset` their display names and `dataset_args` their configs; `tasks` overrides the pipeline tag.
    """
    args, model = run.args, run.student
    model_name = model_name or (args.hub_model_id or Path(args.output_dir).resolve().name).split("/")[-1]
    recipe = recipe_from_config(args, run.layer_map or None, run.transfer_examples)
    if run.teacher is None:  # trained as plain Trainer: no distillation settings apply
        del recipe["Distillation"]
    recipe["Training"]["optimizer steps"] = run.optimizer_steps
    if run.pruning_callback is not None:
        recipe["Pruning"] = pruning_callback_recipe(run.pruning_callback)
    facts = CardFacts(
        model_name=model_name,
        teacher=finetuned_from or teacher_name(None, run.teacher),
        teacher_hub_id=finetuned_from or teacher_hub_id(None, run.teacher),
        rows=merge_rows(_measured_rows(run), rows),
        recipe=recipe,
        datasets=as_list(dataset_tags) or as_list(dataset),
        eval_dataset_name=(as_list(dataset) or [None])[0],
        eval_config=(as_list(dataset_args) or [None])[0],
        repo_id=run.repo_id or args.hub_model_id or model_name,
        language=language,
        license=license,
        tags=tags,
        pipeline_tag=(as_list(tasks) or [None])[0],
        latency_setup=latency_setup,
        limitations=limitations,
        model_class=type(model).__name__,
    )
    return render_card(model.config, facts)


def _measured_rows(run: TrainingRun) -> list[ModelRow]:
    """The teacher's row (if any) and the student's, measured. Sizes are of the weights in memory (what
    save_pretrained writes): output_dir may hold an older save."""
    table = []
    if run.teacher is not None:
        local = Path(getattr(run.teacher, "name_or_path", "") or "")
        teacher_folder = local if local.is_dir() and any(local.glob("*.safetensors")) else None
        table.append(measure_model(run.teacher, "teacher", folder=teacher_folder))
    record = compression_record(run.student.config)
    table.append(measure_model(run.student, default_row_name(record), metrics=last_eval_metrics(run.log_history),
                               this_model=True))
    return table


def last_eval_metrics(log_history: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """The model metrics of the last evaluation in a Trainer's log history (eval_ prefix dropped; runtime and
    throughput left out); {} before any evaluation."""
    for entry in reversed(log_history):
        metrics = {key[len("eval_"):]: value for key, value in entry.items() if key.startswith("eval_")}
        metrics = {k: v for k, v in metrics.items() if k not in _NOT_MODEL_METRICS and isinstance(v, (int, float))}
        if metrics:
            return metrics
    return {}

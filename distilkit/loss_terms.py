"""The table of distillation loss terms: the one place that says which terms exist and what each needs.

Each `LossTerm` names its log key, the config field that weights it, the model outputs it reads (so the trainer
asks for hidden states / attentions only when a weighted term needs them), whether the teacher-output cache can
serve it, the function that computes it from one batch, and the sentence the model card shows. The config's
checks, the trainer's forward flags, weighting and logging, and the card's loss line are all read from `LOSS_TERMS`:
a new term is one entry here plus its config field.

Each term belongs to a stage of TinyBERT's staged schedule (`DistillationConfig.intermediate_epochs`): the
intermediate-layer stage trains the layer terms (hidden states, attention maps) alone, the prediction-layer stage
the hard- and soft-label terms alone; without a schedule (stage None) every weighted term trains together.

Teacher outputs travel as a `TeacherOutputs`: logits from a live forward or a full-logit cache, or the top-k
values, indices and log-normaliser kept by the cache for language models.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from . import losses
from .tasks import Task, distillation_mask

HIDDEN_STATES = "hidden_states"
ATTENTIONS = "attentions"
INTERMEDIATE, PREDICTION = "intermediate", "prediction"

# The soft-label weight when a teacher is given and `alpha` is not: the teacher's soft labels alone. In the SST-2
# sweep (benchmarks/results/kd_sweep.md) alpha 1.0 had the best mean, within the seeds' spread of 0.5; it is what
# the recipes and the transfer-data results use. Without a teacher an unset alpha is 0 (plain Trainer).
DEFAULT_ALPHA = 1.0


def soft_label_weight(args) -> float:
    """`args.alpha`, or DEFAULT_ALPHA while it is unset (arguments not yet resolved by a trainer with a teacher)."""
    return DEFAULT_ALPHA if args.alpha is None else args.alpha


@dataclass(frozen=True)
class TeacherOutputs:
    """What the teacher contributes to one batch; a field is None when no weighted term needs it."""

    logits: torch.Tensor | None = None
    # Top-k cache of a language model: the teacher's k largest logits, their vocabulary ids, and
    # logsumexp(logits / T) over the full vocabulary (so the kept probabilities are exact).
    topk_values: torch.Tensor | None = None
    topk_indices: torch.Tensor | None = None
    lse: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None

    @classmethod
    def from_cache(cls, cached: Mapping[str, torch.Tensor]) -> TeacherOutputs:
        """From the columns the teacher-output cache adds to a batch (see distilkit.teacher_cache)."""
        return cls(logits=cached.get("teacher_logits"), topk_values=cached.get("teacher_topk_values"),
                   topk_indices=cached.get("teacher_topk_indices"), lse=cached.get("teacher_lse"))


@dataclass
class Batch:
    """Everything a term may read for one training batch."""

    args: object  # the DistillationConfig
    task: Task
    student: object  # the student's model output (loss, logits, hidden_states, attentions)
    teacher: TeacherOutputs | None
    labels: torch.Tensor | None
    attention_mask: torch.Tensor | None
    layer_map: Mapping[int, int] = field(default_factory=dict)
    projections: nn.ModuleDict | None = None
    stage: str | None = None  # INTERMEDIATE or PREDICTION under a staged schedule, else None

    @property
    def token_mask(self) -> torch.Tensor | None:
        return self.attention_mask.bool() if self.attention_mask is not None else None


@dataclass(frozen=True)
class LossTerm:
    name: str  # logged under this key
    weight_field: str  # the DistillationConfig field that sets the weight
    weight: Callable[[object], float]  # args -> weight of the term in the total loss
    compute: Callable[[Batch], torch.Tensor]
    describe: Callable[[object, str], str]  # (args, formatted weight) -> the model card's wording
    uses_teacher: bool = True
    student_outputs: frozenset[str] = frozenset()  # extra outputs the student must return
    teacher_outputs: frozenset[str] = frozenset()  # extra outputs the teacher must return (besides logits)
    cacheable: bool = False  # the teacher-output cache (logits only) can serve it
    needs_labels: bool = False  # computed only for batches with labels
    stage: str = PREDICTION  # the stage of a staged schedule that trains it

    def active(self, args, stage: str | None = None) -> bool:
        """Weighted, and trained in `stage` (every stage when None)."""
        return self.weight(args) > 0 and stage in (None, self.stage)


def _hard_label(batch: Batch) -> torch.Tensor:
    return batch.student.loss


def _soft_label(batch: Batch) -> torch.Tensor:
    # Causal LM: position t predicts token t+1, so the last position has no target.
    shift = (lambda t: t[:, :-1]) if batch.task is Task.CAUSAL_LM else (lambda t: t)
    mask = distillation_mask(batch.task, batch.labels, batch.attention_mask)
    teacher, temperature = batch.teacher, batch.args.temperature
    if teacher.topk_values is not None:
        return losses.soft_label_loss_topk(shift(batch.student.logits), shift(teacher.topk_values),
                                           shift(teacher.topk_indices), shift(teacher.lse), temperature, mask)
    return losses.soft_label_loss(shift(batch.student.logits), shift(teacher.logits), temperature, mask)


def _hidden(batch: Batch) -> torch.Tensor:
    total = 0.0
    for s_index, t_index in batch.layer_map.items():
        student_hidden = batch.student.hidden_states[s_index]
        if batch.projections is not None and str(s_index) in batch.projections:
            student_hidden = batch.projections[str(s_index)](student_hidden)
        total = total + losses.hidden_state_loss(student_hidden, batch.teacher.hidden_states[t_index],
                                                 batch.token_mask, batch.args.hidden_loss)
    return total


def _attention(batch: Batch) -> torch.Tensor:
    total = 0.0
    for s_index, t_index in batch.layer_map.items():
        if s_index == 0:  # the embedding output has no attention map
            continue
        student_attention = batch.student.attentions[s_index - 1]
        if student_attention.shape[1] == 0:  # every head of this layer was pruned
            continue
        total = total + losses.attention_loss(student_attention, batch.teacher.attentions[t_index - 1],
                                              batch.token_mask, batch.args.attention_loss)
    return total


LOSS_TERMS: tuple[LossTerm, ...] = (
    LossTerm(
        name="loss_ce", weight_field="alpha", weight=lambda args: 1 - soft_label_weight(args),
        compute=_hard_label,
        describe=lambda args, w: f"{w} × cross-entropy on the labels",
        uses_teacher=False, needs_labels=True,
    ),
    LossTerm(
        name="loss_kd", weight_field="alpha", weight=soft_label_weight, compute=_soft_label,
        describe=lambda args, w: f"{w} × T²·KL(teacher ‖ student) on temperature-T soft labels",
        cacheable=True,
    ),
    LossTerm(
        name="loss_hidden", weight_field="hidden_weight", weight=lambda args: args.hidden_weight, compute=_hidden,
        describe=lambda args, w: f"{w} × hidden-state {args.hidden_loss}, summed over matched layers",
        student_outputs=frozenset({HIDDEN_STATES}), teacher_outputs=frozenset({HIDDEN_STATES}), stage=INTERMEDIATE,
    ),
    LossTerm(
        name="loss_attn", weight_field="attention_weight", weight=lambda args: args.attention_weight,
        compute=_attention,
        describe=lambda args, w: f"{w} × attention-map {args.attention_loss}, summed over matched layers",
        student_outputs=frozenset({ATTENTIONS}), teacher_outputs=frozenset({ATTENTIONS}), stage=INTERMEDIATE,
    ),
)

# The config fields that weight a teacher term directly (alpha is checked as a share in [0, 1] instead).
WEIGHT_FIELDS = tuple(t.weight_field for t in LOSS_TERMS if t.uses_teacher and t.weight_field != "alpha")


def teacher_terms(args, stage: str | None = None) -> list[LossTerm]:
    """The weighted terms that need the teacher (in `stage`, or in any stage)."""
    return [t for t in LOSS_TERMS if t.uses_teacher and t.active(args, stage)]


def outputs_needed(args, role: str, stage: str | None = None) -> frozenset[str]:
    """The extra outputs ('hidden_states', 'attentions') the student or the teacher must return for `args`."""
    attribute = "student_outputs" if role == "student" else "teacher_outputs"
    return frozenset().union(*(getattr(t, attribute) for t in teacher_terms(args, stage)))


def layer_terms(args) -> list[LossTerm]:
    """The weighted terms that compare layers through the layer map (hidden states, attention maps)."""
    return [t for t in teacher_terms(args) if t.student_outputs]


def weight_summary(args) -> str:
    """'alpha=0.5, hidden_weight=0.0, ...': the teacher terms' weights, for error messages."""
    return ", ".join(f"{f}={getattr(args, f)}" for f in dict.fromkeys(t.weight_field for t in LOSS_TERMS
                                                                          if t.uses_teacher))


def compute_terms(batch: Batch) -> dict[str, torch.Tensor]:
    """Every weighted term of this batch (in its stage) by name; a term that needs labels only when the batch has
    them. A term at weight 0 is neither computed nor logged: a logged value is always part of the loss."""
    return {term.name: term.compute(batch) for term in LOSS_TERMS
            if term.active(batch.args, batch.stage) and (batch.labels is not None or not term.needs_labels)}


def weighted_total(args, parts: Mapping[str, torch.Tensor], labelled_share: float = 1.0) -> torch.Tensor:
    """sum(weight * value) over the parts whose weight is positive.

    `labelled_share`: the share of the batch's examples that have labels (below 1 with transfer data); the terms
    that need labels are means over those examples, so they are scaled by it to become per-example means too.
    """
    total = 0.0
    for term in LOSS_TERMS:
        weight = term.weight(args)
        if term.name in parts and weight > 0:
            if term.needs_labels and labelled_share != 1.0:
                weight = weight * labelled_share
            total = total + weight * parts[term.name]
    return total


def describe(args, number: Callable[[float], str] = str, stage: str | None = None) -> str:
    """The total loss (of `stage`, or of every stage together) in words, as the model card shows it."""
    return " + ".join(t.describe(args, number(t.weight(args))) for t in LOSS_TERMS if t.active(args, stage))

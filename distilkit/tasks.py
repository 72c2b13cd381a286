"""What kind of head a model has, and therefore which positions of its logits distillation compares."""

from __future__ import annotations

from enum import Enum

import torch
from torch import nn
from transformers.models.auto import modeling_auto


class Task(str, Enum):
    SEQUENCE_CLASSIFICATION = "sequence-classification"
    TOKEN_CLASSIFICATION = "token-classification"
    CAUSAL_LM = "causal-lm"
    MASKED_LM = "masked-lm"

    @property
    def token_level(self) -> bool:
        return self is not Task.SEQUENCE_CLASSIFICATION

    @property
    def predicts_vocabulary(self) -> bool:
        return self in (Task.CAUSAL_LM, Task.MASKED_LM)


# transformers' own auto-class tables decide the task, so every architecture they know is covered.
_TASK_CLASSES: dict[Task, frozenset[str]] = {
    task: frozenset(getattr(modeling_auto, table).values())
    for task, table in (
        (Task.SEQUENCE_CLASSIFICATION, "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES"),
        (Task.TOKEN_CLASSIFICATION, "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES"),
        (Task.CAUSAL_LM, "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"),
        (Task.MASKED_LM, "MODEL_FOR_MASKED_LM_MAPPING_NAMES"),
    )
}


def task_of(model: nn.Module) -> Task:
    name = type(model).__name__
    for task, classes in _TASK_CLASSES.items():
        if name in classes:
            return task
    raise ValueError(
        f"{name} is not a model head distilkit can distil. Use a ...ForSequenceClassification, "
        "...ForTokenClassification, ...ForCausalLM or ...ForMaskedLM model."
    )


def output_size(model: nn.Module, task: Task) -> int:
    """Width of the logits: the vocabulary for language models, the label count for classifiers."""
    if task.predicts_vocabulary:
        return model.get_output_embeddings().weight.shape[0]
    return model.config.num_labels


def distillation_mask(
    task: Task, labels: torch.Tensor | None, attention_mask: torch.Tensor | None
) -> torch.Tensor | None:
    """Which logit positions the soft-label loss averages over (None: every example, for sequence tasks).

    Token-level tasks use the positions that carry a label (not -100) when labels are given, otherwise every
    real token. For a causal LM, position t predicts token t + 1, so the mask is shifted like the labels.
    """
    if not task.token_level:
        return None
    if task is Task.CAUSAL_LM:
        if labels is not None:
            return labels[:, 1:] != -100
        return attention_mask[:, 1:].bool() if attention_mask is not None else None
    if labels is not None:
        return labels != -100
    return attention_mask.bool() if attention_mask is not None else None


def count_label_items(task: Task, labels: torch.Tensor) -> torch.Tensor:
    """The items this batch adds to the Trainer's `num_items_in_batch` (same counting rule as the Trainer)."""
    counted = labels[..., 1:] if task is Task.CAUSAL_LM else labels
    return counted.ne(-100).sum()

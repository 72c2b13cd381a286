"""What a model card states, as plain values: `CardFacts`; `hub_id`, which tells a Hub repo id from a local
name (a card links only Hub ids), and `teacher_hub_id` / `teacher_name`, how a card refers to a teacher."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub.utils import validate_repo_id

from .table import ModelRow


@dataclass
class CardFacts:
    """Everything the card says besides what the model's config records (pruning, quantization, architecture).

    Attributes:
        model_name: the model's name (title, model-index name; `render_model_card` defaults it to the folder name).
        teacher: how the card names the teacher (a Hub id, or a local folder's name); None: not distilled.
        teacher_hub_id: the teacher's Hub id, when it has one: it becomes `base_model` and the name links to it.
            A teacher known only as a local folder has none (`teacher_hub_id` finds it), and is named unlinked.
        rows: the comparison table (teacher, student, pruned, int8, ...), e.g. from `measure_model`. The row with
            `this_model=True` is completed from the folder (parameters, size); if no row has it, one is added.
        recipe: {group title: {setting: value}}, e.g. `recipe_from_config(args)`. Pruning and quantization facts
            are read from config.json (`config.distilkit`) and added; the same group given here adds to them.
        datasets: Hub ids of the training/evaluation datasets (metadata `datasets`; the first one is the
            dataset of the model-index results, named `eval_dataset_name`, config `eval_config`, `eval_split`).
        repo_id: used in the loading snippet (default: `model_name`).
        language, license, tags: card metadata; `pipeline_tag` overrides the one the model class implies.
        latency_setup: how latency was measured, e.g. "batch 1 × 128 tokens, 2 threads, <CPU model>".
        limitations: added to the limitations distilkit derives (teacher, data, int8 hardware dependence).
        model_class: the model's class when its config names none (a model built from a config, not yet saved).
    """

    model_name: str | None = None
    teacher: str | None = None
    teacher_hub_id: str | None = None
    rows: Sequence[ModelRow] = ()
    recipe: Mapping[str, Mapping[str, Any]] | None = None
    datasets: str | Sequence[str] | None = None
    eval_dataset_name: str | None = None
    eval_config: str | None = None
    eval_split: str | None = None
    repo_id: str | None = None
    language: str | Sequence[str] | None = None
    license: str | None = None
    tags: str | Sequence[str] | None = None
    pipeline_tag: str | None = None
    latency_setup: str | None = None
    limitations: Sequence[str] = field(default_factory=list)
    model_class: str | None = None

    def __post_init__(self):
        self.rows = list(self.rows)
        if self.teacher_hub_id and not self.teacher:
            self.teacher = self.teacher_hub_id
        self.datasets = as_list(self.datasets)
        self.language = as_list(self.language)
        self.tags = as_list(self.tags)
        self.limitations = list(self.limitations)


def as_list(value: str | Sequence[str] | None) -> list[str]:
    """A string or a sequence of strings (or None) as a list."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def hub_id(name: str | None) -> str | None:
    """`name` when it names a Hub repo: not empty (a model built from a config), not a local folder."""
    name = str(name or "")
    if not name or Path(name).exists() or name.startswith((".", "/", "~")):
        return None
    try:
        validate_repo_id(name)
    except ValueError:
        return None
    return name


def teacher_hub_id(source: str | None, model=None) -> str | None:
    """The Hub id of a teacher loaded from `source` (a folder or Hub id; None when unknown), if it has one:
    `source` itself when it is a Hub id, else the name `model` was loaded from (`config._name_or_path`) when that
    is a Hub id. A teacher read from a local folder has none."""
    return hub_id(source) or hub_id(getattr(getattr(model, "config", None), "_name_or_path", None))


def teacher_name(source: str | None, model=None) -> str | None:
    """How a card names a teacher loaded from `source`: its Hub id (`teacher_hub_id`), or the folder's name."""
    if source is None and model is None:
        return None
    local = source or getattr(getattr(model, "config", None), "_name_or_path", None) or ""
    return teacher_hub_id(source, model) or Path(str(local)).name or None

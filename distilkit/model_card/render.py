"""Rendering the card: `CardFacts` plus the model's config through the packaged template
(model_cards/distilled_model.md, shipped in the wheel as distilkit/model_cards/) into a `huggingface_hub.ModelCard`,
and writing it to a folder's README.md."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from transformers import PretrainedConfig
from transformers.models.auto import modeling_auto

from .. import __version__
from ..serialization import compression_record, load_config
from ..serialization.compressions import recorded
from .facts import CardFacts
from .recipe import format_number, pruned_to, recipe_groups
from .table import ModelRow, complete_rows

TEMPLATE_NAME = "distilled_model.md"
DISTILKIT_URL = "https://pypi.org/project/distilkit/"
CARD_FILE = "README.md"

# transformers' auto-class table -> (Hub pipeline tag, Auto class that loads the model). An explicit table, so a
# new head is one line here.
_HEADS = (
    ("MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES", "text-classification", "AutoModelForSequenceClassification"),
    ("MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES", "token-classification", "AutoModelForTokenClassification"),
    ("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "text-generation", "AutoModelForCausalLM"),
    ("MODEL_FOR_MASKED_LM_MAPPING_NAMES", "fill-mask", "AutoModelForMaskedLM"),
)


def card_template_path(name: str = TEMPLATE_NAME) -> Path:
    """The packaged card template: distilkit/model_cards/ in an installed wheel, model_cards/ in a source checkout."""
    installed = resources.files("distilkit") / "model_cards" / name
    if installed.is_file():
        return Path(str(installed))
    checkout = Path(__file__).resolve().parents[2] / "model_cards" / name
    if checkout.is_file():
        return checkout
    raise FileNotFoundError(
        f"Model card template {name!r} not found in {installed} nor {checkout}: this distilkit installation is "
        "incomplete (the wheel must contain distilkit/model_cards/*.md)."
    )


def render_model_card(folder: str | os.PathLike, facts: CardFacts | None = None, *,
                      template_path: str | os.PathLike | None = None, **fields) -> ModelCard:
    """distilkit's model card for the model saved in `folder` (config.json and weights; README.md not needed).

    The card states `facts`, or `CardFacts(**fields)` (teacher=, rows=, recipe=, datasets=, ...; `fields` also
    override the ones of `facts`); the model name defaults to the folder's name.
    """
    folder = Path(folder)
    facts = replace(facts, **fields) if facts is not None else CardFacts(**fields)
    return render_card(load_config(folder), facts, folder=folder, template_path=template_path)


def write_model_card(folder: str | os.PathLike, facts: CardFacts | None = None, **card_kwargs) -> Path:
    """Render `render_model_card(folder, facts, **card_kwargs)` into folder/README.md and return its path."""
    return save_card(render_model_card(folder, facts, **card_kwargs), folder)


def save_card(card: ModelCard, folder: str | os.PathLike) -> Path:
    """Save `card` as folder/README.md (the folder made if needed) and return its path."""
    path = Path(folder) / CARD_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    card.save(path)
    return path


def render_card(config: PretrainedConfig, facts: CardFacts, *, folder: Path | None = None,
                template_path: str | os.PathLike | None = None) -> ModelCard:
    """The card of the model with `config`, stating `facts`. `folder` (the saved model, if any) completes the
    `this_model` row (parameters, size) and names the model when `facts.model_name` is empty."""
    if folder is not None and not facts.model_name:
        facts = replace(facts, model_name=folder.resolve().name)
    record = compression_record(config)
    # A model built from a config has no `architectures` until it is saved; the caller may know its class.
    architectures = list(getattr(config, "architectures", None) or ([facts.model_class] if facts.model_class else []))
    detected_tag, auto_class = _head(architectures)
    pipeline_tag = facts.pipeline_tag or detected_tag
    rows = complete_rows(facts.rows, record, folder)
    this_model = next(row for row in rows if row.this_model)
    metric_names = list(dict.fromkeys(name for row in rows for name in row.metrics))
    card_data = _card_data(facts, record, this_model, metric_names, pipeline_tag)
    variables = _template_variables(
        config=config, record=record, facts=facts, architectures=architectures, auto_class=auto_class, rows=rows,
        metric_names=metric_names, groups=recipe_groups(config, record, facts.recipe, facts.teacher),
        eval_note=_eval_note(this_model, facts),
        limitations=_limitations(facts, record, rows) + list(facts.limitations),
    )
    path = Path(template_path) if template_path is not None else card_template_path()
    return ModelCard.from_template(card_data, template_path=str(path), **variables)


def _card_data(facts: CardFacts, record: Mapping, this_model: ModelRow, metric_names: list[str],
               pipeline_tag: str | None) -> ModelCardData:
    """The card's YAML metadata; `this_model`'s metrics become the model-index results."""
    eval_results = None
    if this_model.metrics and facts.datasets and pipeline_tag:
        eval_results = [
            EvalResult(task_type=pipeline_tag, dataset_type=facts.datasets[0],
                       dataset_name=facts.eval_dataset_name or facts.datasets[0], dataset_config=facts.eval_config,
                       dataset_split=facts.eval_split, metric_type=name, metric_value=float(value))
            for name, value in this_model.metrics.items()
        ]
    all_tags = ["distilkit"]
    if facts.teacher:
        all_tags.append("distillation")
    if "pruning" in record or "ffn_pruning" in record:
        all_tags.append("pruned")
    if "quantization" in record:
        all_tags.append("int8")
    all_tags += facts.tags
    return ModelCardData(
        model_name=facts.model_name if eval_results else None,  # the Hub reads it only as the model-index name
        base_model=facts.teacher_hub_id,  # a local teacher folder is named in the text, not linked
        datasets=facts.datasets or None,
        language=facts.language or None,
        license=facts.license,
        library_name="distilkit" if record else "transformers",
        pipeline_tag=pipeline_tag,
        tags=list(dict.fromkeys(all_tags)),
        metrics=metric_names or None,
        eval_results=eval_results,
    )


def _template_variables(*, config, record, facts: CardFacts, architectures, auto_class, rows, metric_names, groups,
                        eval_note, limitations) -> dict[str, Any]:
    """Everything the template uses besides `card_data`, formatted for a markdown table."""
    layers = getattr(config, "num_hidden_layers", None)
    hidden = getattr(config, "hidden_size", None)
    architecture = config.model_type
    remote_codes = {compression.remote_code for compression in recorded(record)}
    if layers and hidden:
        architecture = f"{layers}-layer {config.model_type} (hidden size {hidden})"
    return {
        "model_name": facts.model_name,
        "teacher": facts.teacher,
        "teacher_url": f"https://huggingface.co/{facts.teacher_hub_id}" if facts.teacher_hub_id else None,
        "distilkit_url": DISTILKIT_URL,
        "architecture": architecture,
        "architecture_class": architectures[0] if architectures else config.model_type,
        "auto_class": auto_class,
        "datasets": facts.datasets,
        "pruned_to": pruned_to(config, record),
        "quantization": record.get("quantization"),
        "structure": " and ".join(compression.description for compression in recorded(record)),
        "needs_distilkit": bool(record),
        # distilkit.save_pretrained writes loading code for transformers alone when all compressions share one
        "loads_with_remote_code": len(remote_codes) == 1 and None not in remote_codes,
        "repo_id": facts.repo_id or facts.model_name,
        "metric_names": [_cell(name) for name in metric_names],
        "rows": [
            {
                "name": _cell(f"**{row.name}** (this model)" if row.this_model else row.name),
                "metrics": [_metric(row.metrics.get(name)) for name in metric_names],
                "parameters": _count(row.parameters),
                "size": _size(row.size_mb),
                "latency": "–" if row.latency_ms is None else f"{row.latency_ms:.1f}",
            }
            for row in rows
        ],
        "recipe": [
            {"title": title, "settings": [(_cell(name), _cell(_value(value))) for name, value in settings.items()]}
            for title, settings in groups.items() if settings
        ],
        "latency_setup": facts.latency_setup,
        "eval_note": eval_note,
        "limitations": limitations,
        "distilkit_version": __version__,
    }


def _eval_note(this_model: ModelRow, facts: CardFacts) -> str | None:
    if not this_model.metrics:
        return None
    where = facts.eval_dataset_name or (facts.datasets[0] if facts.datasets else None)
    if not where:
        return None
    return f"Metrics on {where}" + (f" ({facts.eval_split} split)" if facts.eval_split else "") + "."


def _limitations(facts: CardFacts, record: Mapping, rows: Sequence[ModelRow]) -> list[str]:
    items = []
    if facts.teacher:
        items.append(f"It learned from {facts.teacher}'s outputs and inherits its biases and errors; it is usually "
                     "less accurate than the teacher (see the table).")
    if facts.datasets:
        items.append(f"Trained and evaluated on {', '.join(facts.datasets)} only; quality on other data is not "
                     "measured.")
    else:
        items.append("The training and evaluation data are not stated on this card; quality on your data is not "
                     "measured.")
    if "quantization" in record:
        items.append("Int8 outputs differ slightly from the float model's; int8 speed depends on the CPU's "
                     "instruction set (AVX-512 VNNI, AVX2), so the gain may differ on your hardware.")
    if record:
        items.append("Needs distilkit to load (see above).")
    if any(row.latency_ms is not None for row in rows):
        items.append("Latency was measured on one machine"
                     + (f" ({facts.latency_setup})" if facts.latency_setup else "")
                     + "; it varies with hardware, threads, batch size and sequence length.")
    return items


def _head(architectures: Sequence[str]) -> tuple[str | None, str]:
    for name in architectures:
        for table, tag, auto_class in _HEADS:
            classes = getattr(modeling_auto, table, {}).values()
            if any(name == c or (isinstance(c, tuple) and name in c) for c in classes):
                return tag, auto_class
    return None, architectures[0] if architectures else "AutoModel"


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _value(value) -> str:
    if isinstance(value, float):
        return format_number(value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return str(value)


def _metric(value) -> str:
    return "–" if value is None else f"{value:.4f}"


def _count(value: int | None) -> str:
    if value is None:
        return "–"
    for threshold, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if value >= threshold:
            return f"{value / threshold:.1f}{suffix}"
    return str(value)


def _size(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"

"""Model cards and the Hub: distilkit's card rendered from the packaged template, and pushing a saved folder.

    card = render_model_card("out", teacher="org/teacher", rows=[...], recipe=recipe_from_config(args))
    card.save("out/README.md")                      # or write_model_card("out", ...)
    push_folder("out", "user/name")                 # checks the folder, creates the repo, uploads, returns the URL
    distilkit.from_pretrained("user/name")          # downloads it and loads it back, pruned and int8 included

`DistillationTrainer.create_model_card` (and so `push_to_hub`) calls `write_trainer_model_card`, which writes the
card on the main process only. Cards are rendered with `huggingface_hub.ModelCard.from_template` from
model_cards/distilled_model.md, shipped in the wheel as distilkit/model_cards/ (see pyproject.toml).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, get_token
from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects, validate_repo_id
from transformers import PretrainedConfig
from transformers.models.auto import modeling_auto

from .benchmarking import count_parameters, cpu_latency_ms, folder_size_mb
from .config import DistillationConfig
from .serialization import compression_record, load_config

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
_RECIPE_ORDER = ("Distillation", "Training", "Pruning", "Quantization")
# Trainer metrics that describe the run, not the model.
_NOT_MODEL_METRICS = ("runtime", "samples_per_second", "steps_per_second", "epoch", "step")
# Never uploaded: Trainer checkpoints, private files (the same patterns as Trainer.push_to_hub) and hidden files.
UPLOAD_IGNORE_PATTERNS = ["_*", "checkpoint-*", ".*", *DEFAULT_IGNORE_PATTERNS]
_TOKENIZER_VOCABULARIES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                           "tokenizer.model")


def card_template_path(name: str = TEMPLATE_NAME) -> Path:
    """The packaged card template: distilkit/model_cards/ in an installed wheel, model_cards/ in a source checkout."""
    installed = resources.files("distilkit") / "model_cards" / name
    if installed.is_file():
        return Path(str(installed))
    checkout = Path(__file__).resolve().parent.parent / "model_cards" / name
    if checkout.is_file():
        return checkout
    raise FileNotFoundError(
        f"Model card template {name!r} not found in {installed} nor {checkout}: this distilkit installation is "
        "incomplete (the wheel must contain distilkit/model_cards/*.md)."
    )


# ---- the comparison table ----


@dataclass
class ModelRow:
    """One row of the card's table. `None` is shown as "–" (not measured).

    `this_model` marks the model the card describes (the one in the folder/repo): its metrics become the card's
    model-index results, and its row is filled from the folder when parameters or size are missing.
    """

    name: str
    metrics: dict[str, float] = field(default_factory=dict)
    parameters: int | None = None
    size_mb: float | None = None
    latency_ms: float | None = None
    this_model: bool = False

    def merged(self, other: ModelRow) -> ModelRow:
        """This row with the values `other` sets (metrics merged key by key)."""
        return replace(
            self,
            metrics={**self.metrics, **other.metrics},
            parameters=other.parameters if other.parameters is not None else self.parameters,
            size_mb=other.size_mb if other.size_mb is not None else self.size_mb,
            latency_ms=other.latency_ms if other.latency_ms is not None else self.latency_ms,
        )


def measure_model(
    model,
    name: str,
    *,
    folder: str | os.PathLike | None = None,
    metrics: Mapping[str, float] | None = None,
    latency: Mapping[str, int] | None = None,
    this_model: bool = False,
) -> ModelRow:
    """A table row for `model`: parameters, size of `folder`'s weights (else of the weights in memory) and, when
    `latency=dict(batch_size=1, seq_len=128, threads=2)` is given, CPU latency (`benchmarking.cpu_latency_ms`).
    Say how latency was measured with `latency_setup=` when rendering the card."""
    size = folder_size_mb(folder) if folder is not None else _weights_mb(model)
    return ModelRow(
        name=name,
        metrics=dict(metrics or {}),
        parameters=count_parameters(model),
        size_mb=size,
        latency_ms=cpu_latency_ms(model, **latency) if latency else None,
        this_model=this_model,
    )


def _weights_mb(model) -> float:
    """Bytes the model's tensors take in a safetensors file (tied tensors once), in MB."""
    seen: dict[tuple[int, int], int] = {}
    for tensor in model.state_dict().values():
        seen[(tensor.untyped_storage().data_ptr(), tensor.storage_offset())] = tensor.numel() * tensor.element_size()
    return sum(seen.values()) / 1e6


def _stored_parameter_count(folder: Path, record: Mapping) -> int | None:
    """`benchmarking.count_parameters` of the saved model, read from the safetensors headers (nothing loaded):
    every stored tensor except the scales of int8 layers (their int8 weights and float biases count)."""
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    quantized = record.get("quantization") or {}
    buffers = {f"{name}.weight_scale" for kind in ("linear", "embedding") for name in quantized.get(kind, [])}
    total = 0
    for path in files:
        with safe_open(path, framework="pt") as weights:
            for key in weights.keys():
                if key not in buffers:
                    total += math.prod(weights.get_slice(key).get_shape())
    return total


# ---- the recipe ----


def recipe_from_config(args: DistillationConfig, layer_map: Mapping[int, int] | None = None
                       ) -> dict[str, dict[str, Any]]:
    """The distillation and training settings of a `DistillationConfig`, grouped as the card shows them.

    `layer_map` is the resolved student -> teacher hidden-state map (`DistillationTrainer.layer_map`); without it
    the configured value ("uniform" or a dict) is shown.
    """
    terms = []
    if args.alpha < 1:
        terms.append(f"{_number(1 - args.alpha)} × cross-entropy on the labels")
    if args.alpha > 0:
        terms.append(f"{_number(args.alpha)} × T²·KL(teacher ‖ student) on temperature-T soft labels")
    if args.hidden_weight > 0:
        terms.append(f"{_number(args.hidden_weight)} × hidden-state {args.hidden_loss}, summed over matched layers")
    if args.attention_weight > 0:
        terms.append(f"{_number(args.attention_weight)} × attention-map {args.attention_loss}, summed over matched "
                     "layers")
    distillation: dict[str, Any] = {
        "temperature (T)": args.temperature,
        "alpha (soft-label weight)": args.alpha,
        "loss": " + ".join(terms),
    }
    if args.hidden_weight > 0 or args.attention_weight > 0:
        shown = layer_map if layer_map else args.layer_map
        distillation["layer map (student ← teacher hidden state)"] = (
            ", ".join(f"{s} ← {t}" for s, t in sorted(shown.items())) if isinstance(shown, Mapping) else shown
        )
    if args.teacher_dtype:
        distillation["teacher dtype"] = args.teacher_dtype
    training: dict[str, Any] = {"learning rate": args.learning_rate}
    if args.max_steps and args.max_steps > 0:
        training["max steps"] = args.max_steps
    else:
        training["epochs"] = args.num_train_epochs
    training["batch size per device"] = args.per_device_train_batch_size
    if args.gradient_accumulation_steps > 1:
        training["gradient accumulation steps"] = args.gradient_accumulation_steps
    training["weight decay"] = args.weight_decay
    training["seed"] = args.seed
    if args.bf16 or args.fp16:
        training["mixed precision"] = "bf16" if args.bf16 else "fp16"
    return {"Distillation": distillation, "Training": training}


def _pruning_facts(config: PretrainedConfig, record: Mapping) -> dict[str, Any] | None:
    pruning = record.get("pruning")
    if not pruning:
        return None
    kept = [len(heads) for heads in pruning.get("kept_heads", [])]
    per_layer = getattr(config, "num_attention_heads", None)
    total = per_layer * len(kept) if per_layer else None
    return {"kept": sum(kept), "total": total if total is not None else "?", "per_layer": kept}


def _structure_recipe(config: PretrainedConfig, record: Mapping) -> dict[str, dict[str, Any]]:
    """What config.distilkit says about pruning and quantization (what the folder holds, whoever made it)."""
    groups: dict[str, dict[str, Any]] = {}
    pruning = _pruning_facts(config, record)
    if pruning:
        groups["Pruning"] = {
            "attention heads kept": f"{pruning['kept']} of {pruning['total']}",
            "heads kept per layer": ", ".join(map(str, pruning["per_layer"])),
            "method": "structural: pruned heads are removed from the weights, not masked",
        }
    quantization = record.get("quantization")
    if quantization:
        scheme = quantization.get("scheme") or {}
        group = {"int8 Linear layers": len(quantization.get("linear", []))}
        if scheme.get("linear_weights"):
            group["Linear weights"] = scheme["linear_weights"]
        if scheme.get("linear_activations"):
            group["Linear activations"] = scheme["linear_activations"]
        if quantization.get("embedding"):
            group["int8 embeddings"] = len(quantization["embedding"])
            if scheme.get("embedding_weights"):
                group["embedding weights"] = scheme["embedding_weights"]
        group["kept in float"] = "every layer not listed under distilkit.quantization in config.json (by default " \
                                 "the task head)"
        groups["Quantization"] = group
    return groups


def _pruning_callback_recipe(callback) -> dict[str, Any]:
    schedule = f"every {callback.prune_every_steps} steps from step {callback.start_step}"
    if callback.num_prunes:
        schedule += f", {callback.num_prunes} times"
    return {
        "target fraction of heads pruned": callback.target_fraction,
        "schedule": schedule,
        "head importance": f"{callback.method} on {callback.num_batches} batches",
    }


# ---- rendering ----


def render_model_card(
    folder: str | os.PathLike,
    *,
    teacher: str | None = None,
    rows: Sequence[ModelRow] = (),
    recipe: Mapping[str, Mapping[str, Any]] | None = None,
    datasets: str | Sequence[str] | None = None,
    eval_dataset_name: str | None = None,
    eval_config: str | None = None,
    eval_split: str | None = None,
    repo_id: str | None = None,
    model_name: str | None = None,
    language: str | Sequence[str] | None = None,
    license: str | None = None,
    tags: str | Sequence[str] | None = None,
    pipeline_tag: str | None = None,
    latency_setup: str | None = None,
    limitations: Sequence[str] = (),
    template_path: str | os.PathLike | None = None,
) -> ModelCard:
    """distilkit's model card for the model saved in `folder` (config.json and weights; README.md not needed).

    Args:
        teacher: Hub id of the teacher; becomes `base_model` and is linked from the card (a local folder is
            only named).
        rows: the comparison table (teacher, student, pruned, int8, ...), e.g. from `measure_model`. The row with
            `this_model=True` is completed from the folder (parameters, size); if no row has it, one is added.
        recipe: {group title: {setting: value}}, e.g. `recipe_from_config(args)`. Pruning and quantization facts
            are read from config.json (`config.distilkit`) and added; the same group given here adds to them.
        datasets: Hub ids of the training/evaluation datasets (metadata `datasets`; the first one is the
            dataset of the model-index results, named `eval_dataset_name`, config `eval_config`, `eval_split`).
        repo_id: used in the loading snippet (default: `model_name`).
        latency_setup: how latency was measured, e.g. "batch 1 × 128 tokens, 2 threads, <CPU model>".
        limitations: added to the limitations distilkit derives (teacher, data, int8 hardware dependence).
    """
    folder = Path(folder)
    config = load_config(folder)
    return _render(
        config, folder, teacher=teacher, rows=rows, recipe=recipe, datasets=datasets,
        eval_dataset_name=eval_dataset_name, eval_config=eval_config, eval_split=eval_split, repo_id=repo_id,
        model_name=model_name or folder.resolve().name, language=language, license=license, tags=tags,
        pipeline_tag=pipeline_tag, latency_setup=latency_setup, limitations=limitations,
        template_path=template_path,
    )


def write_model_card(folder: str | os.PathLike, **card_kwargs) -> Path:
    """Render `render_model_card(folder, **card_kwargs)` into folder/README.md and return its path."""
    path = Path(folder) / CARD_FILE
    render_model_card(folder, **card_kwargs).save(path)
    return path


def _render(
    config: PretrainedConfig,
    folder: Path | None,
    *,
    teacher: str | None,
    rows: Sequence[ModelRow],
    recipe: Mapping[str, Mapping[str, Any]] | None,
    datasets: str | Sequence[str] | None,
    eval_dataset_name: str | None,
    eval_config: str | None,
    eval_split: str | None,
    repo_id: str | None,
    model_name: str,
    language: str | Sequence[str] | None,
    license: str | None,
    tags: str | Sequence[str] | None,
    pipeline_tag: str | None,
    latency_setup: str | None,
    limitations: Sequence[str],
    template_path: str | os.PathLike | None,
    model_class: str | None = None,
) -> ModelCard:
    record = compression_record(config)
    # A model built from a config has no `architectures` until it is saved; the caller may know its class.
    architectures = list(getattr(config, "architectures", None) or ([model_class] if model_class else []))
    detected_tag, auto_class = _head(architectures)
    pipeline_tag = pipeline_tag or detected_tag
    datasets = _as_list(datasets)
    needs_distilkit = bool(record)

    rows = _complete_rows(rows, record, folder)
    this_model = next(row for row in rows if row.this_model)
    metric_names = list(dict.fromkeys(name for row in rows for name in row.metrics))

    eval_results = None
    if this_model.metrics and datasets and pipeline_tag:
        eval_results = [
            EvalResult(task_type=pipeline_tag, dataset_type=datasets[0],
                       dataset_name=eval_dataset_name or datasets[0], dataset_config=eval_config,
                       dataset_split=eval_split, metric_type=name, metric_value=float(value))
            for name, value in this_model.metrics.items()
        ]
    all_tags = ["distilkit"]
    if teacher:
        all_tags.append("distillation")
    if "pruning" in record:
        all_tags.append("pruned")
    if "quantization" in record:
        all_tags.append("int8")
    all_tags += _as_list(tags)
    card_data = ModelCardData(
        model_name=model_name if eval_results else None,  # the Hub reads it only as the model-index name
        base_model=_hub_id(teacher),  # a local teacher folder is named in the text, not linked
        datasets=datasets or None,
        language=_as_list(language) or None,
        license=license,
        library_name="distilkit" if needs_distilkit else "transformers",
        pipeline_tag=pipeline_tag,
        tags=list(dict.fromkeys(all_tags)),
        metrics=metric_names or None,
        eval_results=eval_results,
    )

    given = {title: dict(settings) for title, settings in (recipe or {}).items()}
    if teacher:
        given["Distillation"] = {"teacher": teacher, **given.get("Distillation", {})}
    structure = _structure_recipe(config, record)
    titles = [t for t in _RECIPE_ORDER if t in given or t in structure] + [t for t in given if t not in _RECIPE_ORDER]
    groups = {title: {**structure.get(title, {}), **given.get(title, {})} for title in titles}

    variables = _template_variables(
        config=config, record=record, model_name=model_name, teacher=teacher, datasets=datasets,
        architectures=architectures, auto_class=auto_class, needs_distilkit=needs_distilkit, rows=rows,
        metric_names=metric_names, groups=groups, repo_id=repo_id or model_name, latency_setup=latency_setup,
        eval_note=_eval_note(this_model, datasets, eval_dataset_name, eval_split),
        limitations=_limitations(teacher, datasets, record, rows, latency_setup) + list(limitations),
        version=_version(),
    )
    path = Path(template_path) if template_path is not None else card_template_path()
    return ModelCard.from_template(card_data, template_path=str(path), **variables)


def _template_variables(*, config, record, model_name, teacher, datasets, architectures, auto_class,
                        needs_distilkit, rows, metric_names, groups, repo_id, latency_setup, eval_note, limitations,
                        version) -> dict[str, Any]:
    """Everything the template uses besides `card_data`, formatted for a markdown table."""
    layers = getattr(config, "num_hidden_layers", None)
    hidden = getattr(config, "hidden_size", None)
    architecture = config.model_type
    if layers and hidden:
        architecture = f"{layers}-layer {config.model_type} (hidden size {hidden})"
    return {
        "model_name": model_name,
        "teacher": teacher,
        "teacher_url": f"https://huggingface.co/{teacher}" if _hub_id(teacher) else None,
        "distilkit_url": DISTILKIT_URL,
        "architecture": architecture,
        "architecture_class": architectures[0] if architectures else config.model_type,
        "auto_class": auto_class,
        "datasets": datasets,
        "pruning": _pruning_facts(config, record),
        "quantization": record.get("quantization"),
        "structure": " and ".join(
            label for key, label in (("pruning", "pruned attention heads"), ("quantization", "int8 layers"))
            if key in record
        ),
        "needs_distilkit": needs_distilkit,
        "repo_id": repo_id,
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
        "latency_setup": latency_setup,
        "eval_note": eval_note,
        "limitations": limitations,
        "distilkit_version": version,
    }


def _complete_rows(rows: Sequence[ModelRow], record: Mapping, folder: Path | None) -> list[ModelRow]:
    """The rows with exactly one `this_model` row, whose missing parameters and size come from the folder."""
    rows = list(rows)
    marked = [i for i, row in enumerate(rows) if row.this_model]
    if len(marked) > 1:
        raise ValueError(f"Only one table row can be this_model=True; got {[rows[i].name for i in marked]}.")
    if not marked:
        rows.append(ModelRow(name=_default_row_name(record), this_model=True))
        marked = [len(rows) - 1]
    row = rows[marked[0]]
    if folder is not None and folder.is_dir():
        if row.parameters is None:
            row = replace(row, parameters=_stored_parameter_count(folder, record))
        if row.size_mb is None and any(folder.glob("*.safetensors")):
            row = replace(row, size_mb=folder_size_mb(folder))
    rows[marked[0]] = row
    return rows


def _default_row_name(record: Mapping) -> str:
    applied = [label for key, label in (("pruning", "pruned"), ("quantization", "int8")) if key in record]
    return "student" + (f" ({', '.join(applied)})" if applied else "")


def _eval_note(this_model: ModelRow, datasets, dataset_name, split) -> str | None:
    if not this_model.metrics:
        return None
    where = dataset_name or (datasets[0] if datasets else None)
    if not where:
        return None
    return f"Metrics on {where}" + (f" ({split} split)" if split else "") + "."


def _limitations(teacher, datasets, record, rows, latency_setup) -> list[str]:
    items = []
    if teacher:
        items.append(f"It learned from {teacher}'s outputs and inherits its biases and errors; it is usually less "
                     "accurate than the teacher (see the table).")
    if datasets:
        items.append(f"Trained and evaluated on {', '.join(datasets)} only; quality on other data is not measured.")
    else:
        items.append("The training and evaluation data are not stated on this card; quality on your data is not "
                     "measured.")
    if "quantization" in record:
        items.append("Int8 outputs differ slightly from the float model's; int8 speed depends on the CPU's "
                     "instruction set (AVX-512 VNNI, AVX2), so the gain may differ on your hardware.")
    if "pruning" in record or "quantization" in record:
        items.append("Needs distilkit to load (see above).")
    if any(row.latency_ms is not None for row in rows):
        items.append("Latency was measured on one machine" + (f" ({latency_setup})" if latency_setup else "")
                     + "; it varies with hardware, threads, batch size and sequence length.")
    return items


def _head(architectures: Sequence[str]) -> tuple[str | None, str]:
    for name in architectures:
        for table, tag, auto_class in _HEADS:
            classes = getattr(modeling_auto, table, {}).values()
            if any(name == c or (isinstance(c, tuple) and name in c) for c in classes):
                return tag, auto_class
    return None, architectures[0] if architectures else "AutoModel"


def _as_list(value) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _value(value) -> str:
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return str(value)


def _number(value: float) -> str:
    return f"{value:g}"


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


# ---- the Trainer's card ----


def trainer_model_card(
    trainer,
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
    """distilkit's card for a `DistillationTrainer`'s student; the arguments are `Trainer.create_model_card`'s.

    The table gets a teacher row and a student row (parameters and weight size measured; the student's metrics
    from its last evaluation). `rows` adds rows or completes these two (a row named "teacher", or one with
    `this_model=True`, is merged into them), e.g. the teacher's accuracy or latencies. `finetuned_from` is the
    teacher's Hub id (default: the teacher's `name_or_path` when it is a Hub id); `dataset_tags` are dataset Hub
    ids, `dataset` their display names and `dataset_args` their configs; `tasks` overrides the pipeline tag.
    """
    from .pruning.callback import HeadPruningCallback

    args, model = trainer.args, trainer.model
    output_dir = Path(args.output_dir)
    model_name = model_name or (args.hub_model_id or output_dir.resolve().name).split("/")[-1]
    repo_id = getattr(trainer, "hub_model_id", None) or args.hub_model_id or model_name
    teacher_model = getattr(trainer, "teacher", None)
    teacher = finetuned_from or _hub_id(getattr(teacher_model, "name_or_path", None))
    record = compression_record(model.config)

    # Sizes of the weights in memory (what save_pretrained writes): output_dir may hold an older save.
    student = measure_model(model, _default_row_name(record), metrics=_last_eval_metrics(trainer.state.log_history),
                            this_model=True)
    table = []
    if teacher_model is not None:
        local = Path(getattr(teacher_model, "name_or_path", "") or "")
        teacher_folder = local if local.is_dir() and any(local.glob("*.safetensors")) else None
        table.append(measure_model(teacher_model, "teacher", folder=teacher_folder))
    table.append(student)
    for row in rows:
        target = next((i for i, r in enumerate(table)
                       if (row.this_model and r.this_model) or (not row.this_model and r.name == row.name)), None)
        if target is None:
            table.append(row)
        else:
            table[target] = table[target].merged(row)

    recipe = recipe_from_config(args, getattr(trainer, "layer_map", None) or None)
    recipe["Training"]["optimizer steps"] = trainer.state.global_step
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, HeadPruningCallback):
            recipe["Pruning"] = _pruning_callback_recipe(callback)

    return _render(
        model.config, None, teacher=teacher, rows=table, recipe=recipe,
        datasets=_as_list(dataset_tags) or _as_list(dataset), eval_dataset_name=(_as_list(dataset) or [None])[0],
        eval_config=(_as_list(dataset_args) or [None])[0], eval_split=None, repo_id=repo_id, model_name=model_name,
        language=language, license=license, tags=tags, pipeline_tag=(_as_list(tasks) or [None])[0],
        latency_setup=latency_setup, limitations=limitations, template_path=None, model_class=type(model).__name__,
    )


def write_trainer_model_card(trainer, **card_kwargs) -> Path | None:
    """Write `trainer_model_card(trainer, **card_kwargs)` to output_dir/README.md on the main process only; return
    its path there (None on the other processes)."""
    if not trainer.is_world_process_zero():
        return None
    card = trainer_model_card(trainer, **card_kwargs)
    path = Path(trainer.args.output_dir) / CARD_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    card.save(path)
    return path


def _hub_id(name: str | None) -> str | None:
    """`name` when it names a Hub repo: not empty (a model built from a config), not a local folder."""
    name = str(name or "")
    if not name or Path(name).exists() or name.startswith((".", "/", "~")):
        return None
    try:
        validate_repo_id(name)
    except ValueError:
        return None
    return name


def _last_eval_metrics(log_history: Sequence[Mapping]) -> dict[str, float]:
    for entry in reversed(log_history):
        metrics = {key[len("eval_"):]: value for key, value in entry.items() if key.startswith("eval_")}
        metrics = {k: v for k, v in metrics.items() if k not in _NOT_MODEL_METRICS and isinstance(v, (int, float))}
        if metrics:
            return metrics
    return {}


# ---- pushing a folder ----


class IncompleteFolderError(ValueError):
    """The folder misses something a Hub repo needs; raised before anything is sent."""

    def __init__(self, folder: Path, problems: Sequence[str]):
        self.folder, self.problems = folder, list(problems)
        super().__init__(f"{folder} is not ready to push; nothing was uploaded:\n" +
                         "\n".join(f"  - {p}" for p in self.problems))


@dataclass(frozen=True)
class PushResult:
    repo_id: str
    url: str
    files: tuple[str, ...]
    dry_run: bool
    commit_url: str | None = None


def check_folder(folder: str | os.PathLike) -> list[str]:
    """What `folder` lacks to be pushed and loaded back (empty: complete): config.json naming a model class,
    safetensors weights (all shards), tokenizer files, and a README.md model card whose YAML metadata parses and
    whose library_name matches config.json (a pruned or int8 model needs distilkit to load)."""
    folder = Path(folder)
    if not folder.is_dir():
        return [f"{folder} is not a folder."]
    problems = []
    config: dict = {}
    config_path = folder / "config.json"
    if not config_path.is_file():
        problems.append("config.json is missing: save the model with model.save_pretrained(folder).")
    else:
        try:
            config = json.loads(config_path.read_text())
        except ValueError as err:
            problems.append(f"config.json is not valid JSON ({err}).")
        if config and not config.get("architectures"):
            problems.append("config.json names no model class (architectures); save with model.save_pretrained.")

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (ValueError, KeyError) as err:
            problems.append(f"model.safetensors.index.json is not a valid index ({err}).")
        else:
            missing = sorted(s for s in shards if not (folder / s).is_file())
            if missing:
                problems.append(f"weight shards listed in model.safetensors.index.json are missing: {missing}.")
    elif not (folder / "model.safetensors").is_file():
        pickled = [p.name for p in folder.glob("*.bin")]
        problems.append(
            "no safetensors weights (model.safetensors)" + (f"; found only pickle weights {pickled}" if pickled else "")
            + ": save with model.save_pretrained(folder) (safetensors is the default)."
        )

    if not (folder / "tokenizer_config.json").is_file() or not any(
            (folder / name).is_file() for name in _TOKENIZER_VOCABULARIES):
        problems.append("tokenizer files are missing (tokenizer_config.json plus tokenizer.json or a vocabulary): "
                        "save them with tokenizer.save_pretrained(folder).")

    readme = folder / CARD_FILE
    if not readme.is_file():
        problems.append("README.md (the model card) is missing: write it with distilkit.hub.write_model_card(folder, "
                        "teacher=...) or trainer.create_model_card().")
    else:
        metadata, error = _card_metadata(readme)
        if error:
            problems.append(f"README.md has no valid YAML metadata block ({error}).")
        elif config.get("distilkit") and metadata.get("library_name") != "distilkit":
            problems.append(
                f"README.md says library_name: {metadata.get('library_name')!r}, but config.json records distilkit "
                f"compression ({', '.join(sorted(config['distilkit']))}), which only distilkit.from_pretrained loads: "
                "regenerate the card with distilkit.hub.write_model_card(folder, ...)."
            )
    return problems


def _card_metadata(readme: Path) -> tuple[dict, str | None]:
    text = readme.read_text(encoding="utf-8")
    if not text.startswith("---"):
        return {}, "the file does not start with a '---' metadata block"
    parts = text.split("\n---", 1)
    if len(parts) != 2:
        return {}, "the '---' metadata block is not closed"
    try:
        metadata = yaml.safe_load(parts[0][3:]) or {}
    except yaml.YAMLError as err:
        return {}, f"invalid YAML: {err}"
    if not isinstance(metadata, dict):
        return {}, "the metadata block is not a YAML mapping"
    return metadata, None


def files_to_upload(folder: str | os.PathLike) -> list[str]:
    """The files `push_folder` uploads, relative to `folder` (checkpoints, `_*` and hidden files left out)."""
    folder = Path(folder)
    paths = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return list(filter_repo_objects(paths, ignore_patterns=UPLOAD_IGNORE_PATTERNS))


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    dry_run: bool = False,
    token: str | None = None,
    endpoint: str | None = None,
    revision: str | None = None,
    commit_message: str = "Upload model with distilkit",
) -> PushResult:
    """Check `folder` (see `check_folder`), create the model repo `repo_id` if needed and upload the folder.

    Nothing is sent when the folder is incomplete (`IncompleteFolderError`) or with `dry_run=True`, which returns
    the files that would be uploaded. The token is `token`, else HF_TOKEN, else the saved login (`hf auth login`);
    the Hub is `endpoint`, else HF_ENDPOINT, else huggingface.co. `private` applies when the repo is created; an
    existing repo keeps its visibility. Returns the repo URL and the uploaded files.
    """
    folder = Path(folder)
    validate_repo_id(repo_id)
    problems = check_folder(folder)
    if problems:
        raise IncompleteFolderError(folder, problems)
    files = tuple(files_to_upload(folder))
    api = HfApi(endpoint=endpoint or os.environ.get("HF_ENDPOINT") or None, library_name="distilkit",
                library_version=_version())
    if dry_run:
        return PushResult(repo_id=repo_id, url=f"{api.endpoint.rstrip('/')}/{repo_id}", files=files, dry_run=True)
    token = token or get_token()
    if not token:
        raise PermissionError(
            "No Hugging Face token: set HF_TOKEN or log in with `hf auth login` (a token with write access)."
        )
    try:
        repo_url = api.create_repo(repo_id, token=token, private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_url.repo_id, folder_path=folder, token=token, revision=revision,
            commit_message=commit_message, ignore_patterns=UPLOAD_IGNORE_PATTERNS,
        )
    except Exception as err:
        # huggingface_hub's HTTP errors are OSErrors already; its transport errors (httpx) are not.
        if isinstance(err, OSError) or not _is_transport_error(err):
            raise
        raise ConnectionError(f"Could not reach the Hub at {api.endpoint} ({type(err).__name__}: {err}).") from err
    return PushResult(repo_id=repo_url.repo_id, url=str(repo_url), files=files, dry_run=False,
                      commit_url=commit.commit_url)


def _is_transport_error(err: Exception) -> bool:
    """A connection, timeout or protocol failure of the HTTP client huggingface_hub uses (httpx or httpx2)."""
    return any(cls.__name__ == "TransportError" and cls.__module__.startswith("httpx") for cls in type(err).__mro__)


def _version() -> str:
    from . import __version__

    return __version__

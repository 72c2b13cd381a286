"""The card's recipe: how the model was made, as {group title: {setting: value}}, from a `DistillationConfig`
(`recipe_from_config`), a `PruningCallback` and what config.distilkit records (pruning, quantization)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transformers import PretrainedConfig

from .. import loss_terms
from ..architectures import get_architecture
from ..config import DistillationConfig

RECIPE_ORDER = ("Distillation", "Training", "Pruning", "Quantization")


def recipe_from_config(args: DistillationConfig, layer_map: Mapping[int, int] | None = None,
                       transfer_examples: int = 0) -> dict[str, dict[str, Any]]:
    """The distillation and training settings of a `DistillationConfig`, grouped as the card shows them.

    `layer_map` is the resolved student -> teacher hidden-state map (`DistillationTrainer.layer_map`); without it
    the configured value ("uniform" or a dict) is shown. `transfer_examples`: how many unlabelled examples the run
    learnt from (transfer data, augmented copies).
    """
    distillation: dict[str, Any] = {
        "temperature (T)": args.temperature,
        "alpha (soft-label weight)": loss_terms.soft_label_weight(args),
        "loss": loss_description(args),
    }
    if args.intermediate_epochs > 0:
        distillation["schedule"] = (
            f"staged (TinyBERT): the first {format_number(args.intermediate_epochs)} epochs train "
            f"{loss_terms.describe(args, format_number, loss_terms.INTERMEDIATE)} alone, then "
            f"{loss_terms.describe(args, format_number, loss_terms.PREDICTION)} alone"
        )
    if transfer_examples:
        distillation["transfer data"] = (f"{transfer_examples:,} unlabelled examples beside the labelled ones, "
                                         "learnt from the teacher's outputs alone")
    if loss_terms.layer_terms(args):
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


def loss_description(args: DistillationConfig) -> str:
    """The training loss as the card states it: its weighted terms (distilkit.loss_terms) joined with " + "."""
    return loss_terms.describe(args, format_number)


def pruning_callback_recipe(callback) -> dict[str, Any]:
    """The "Pruning" settings of a `PruningCallback` that pruned the model (heads, FFN neurons) while it trained."""
    schedule = f"every {callback.prune_every_steps} steps from step {callback.start_step}"
    if callback.num_prunes:
        schedule += f", {callback.num_prunes} times"
    recipe = {
        "target fraction of heads pruned": callback.target_fraction,
        "schedule": schedule,
        "head importance": f"{callback.method} on {callback.num_batches} batches",
    }
    if callback.ffn_target_fraction > 0:
        recipe["target fraction of FFN neurons pruned"] = callback.ffn_target_fraction
    return recipe


def recipe_groups(config: PretrainedConfig, record: Mapping, given: Mapping[str, Mapping[str, Any]] | None,
                  teacher: str | None) -> dict[str, dict[str, Any]]:
    """The card's recipe: the `given` groups, the teacher first under "Distillation", and what the compression
    record says about pruning and quantization, in RECIPE_ORDER (other groups after)."""
    given = {title: dict(settings) for title, settings in (given or {}).items()}
    if teacher:
        given["Distillation"] = {"teacher": teacher, **given.get("Distillation", {})}
    structure = _structure_recipe(config, record)
    titles = [t for t in RECIPE_ORDER if t in given or t in structure] + [t for t in given if t not in RECIPE_ORDER]
    return {title: {**structure.get(title, {}), **given.get(title, {})} for title in titles}


def pruning_facts(config: PretrainedConfig, record: Mapping) -> dict[str, Any] | None:
    """Heads kept in total, of how many, and per layer, from the compression record (None: not pruned)."""
    pruning = record.get("pruning")
    if not pruning:
        return None
    return _kept_facts(pruning.get("kept_heads", []), getattr(config, "num_attention_heads", None))


def ffn_pruning_facts(config: PretrainedConfig, record: Mapping) -> dict[str, Any] | None:
    """FFN neurons kept in total, of how many, and per layer, from the compression record (None: no FFN pruning)."""
    ffn_pruning = record.get("ffn_pruning")
    if not ffn_pruning:
        return None
    try:
        width = getattr(config, get_architecture(config).ffn_width_attr, None)
    except ValueError:  # a family distilkit has no entry for: the total is unknown
        width = None
    return _kept_facts(ffn_pruning.get("kept_neurons", []), width)


def pruned_to(config: PretrainedConfig, record: Mapping) -> str | None:
    """What pruning left, as the card's first sentence says it: "5 of 8 attention heads and 64 of 128 FFN
    neurons" (None: not pruned)."""
    facts = [(pruning_facts(config, record), "attention heads"), (ffn_pruning_facts(config, record), "FFN neurons")]
    return " and ".join(f"{f['kept']} of {f['total']} {unit}" for f, unit in facts if f) or None


def _kept_facts(kept_per_layer: list[list[int]], original_per_layer: int | None) -> dict[str, Any]:
    kept = [len(units) for units in kept_per_layer]
    total = original_per_layer * len(kept) if original_per_layer else None
    return {"kept": sum(kept), "total": total if total is not None else "?", "per_layer": kept}


def format_number(value: float) -> str:
    return f"{value:g}"


def _structure_recipe(config: PretrainedConfig, record: Mapping) -> dict[str, dict[str, Any]]:
    """What config.distilkit says about pruning and quantization (what the folder holds, whoever made it)."""
    groups: dict[str, dict[str, Any]] = {}
    pruning, ffn_pruning = pruning_facts(config, record), ffn_pruning_facts(config, record)
    if pruning or ffn_pruning:
        group = {}
        if pruning:
            group["attention heads kept"] = f"{pruning['kept']} of {pruning['total']}"
            group["heads kept per layer"] = ", ".join(map(str, pruning["per_layer"]))
        if ffn_pruning:
            group["FFN neurons kept"] = f"{ffn_pruning['kept']} of {ffn_pruning['total']}"
            group["FFN neurons kept per layer"] = ", ".join(map(str, ffn_pruning["per_layer"]))
        units = " and ".join(unit for unit, facts in (("heads", pruning), ("FFN neurons", ffn_pruning)) if facts)
        group["method"] = f"structural: pruned {units} are removed from the weights, not masked"
        groups["Pruning"] = group
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

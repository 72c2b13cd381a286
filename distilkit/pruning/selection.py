"""Choosing heads or FFN neurons to prune: a global ranking by normalised importance, and the one-call
`prune_heads_to_fraction` (heads) and `prune_ffn_to_fraction` (neurons)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
from transformers import PreTrainedModel

from .importance import LossFn, compute_ffn_importance, compute_head_importance
from .structural import ffn_width, head_layout, kept_heads, kept_neurons, prune_ffn, prune_heads


def least_important_heads(
    importance: torch.Tensor, num_groups: int, group_size: int = 1, min_heads_per_layer: int = 0
) -> dict[int, list[int]]:
    """The `num_groups` least important heads of the whole model, as {layer: [heads]} in original numbering.

    `importance` is [num_layers, num_heads] as returned by `compute_head_importance` (NaN marks pruned heads).
    With grouped-query attention (`group_size` query heads per key/value head) whole groups are ranked by the
    sum of their heads' scores, and `num_groups` counts groups; otherwise a group is one head. No layer is left
    with fewer than `min_heads_per_layer` heads.
    """
    return _least_important(importance, num_groups, group_size, min_heads_per_layer, "heads")


def least_important_neurons(importance: torch.Tensor, count: int, min_neurons_per_layer: int = 0
                            ) -> dict[int, list[int]]:
    """The `count` least important FFN neurons of the whole model, as {layer: [neurons]} in original numbering, from
    `compute_ffn_importance`'s [num_layers, intermediate size] (NaN marks pruned neurons)."""
    return _least_important(importance, count, 1, min_neurons_per_layer, "neurons")


def _least_important(importance: torch.Tensor, num_groups: int, group_size: int, min_per_layer: int, unit: str
                     ) -> dict[int, list[int]]:
    num_layers, num_heads = importance.shape
    if num_heads % group_size:
        raise ValueError(f"group_size {group_size} does not divide the number of heads per layer ({num_heads}).")
    group_scores = importance.float().reshape(num_layers, num_heads // group_size, group_size).sum(-1)
    available = ~group_scores.isnan()
    remaining_heads = (available.sum(-1) * group_size).tolist()
    candidates = sorted(
        (group_scores[layer, group].item(), layer, group) for layer, group in available.nonzero().tolist()
    )
    chosen: dict[int, list[int]] = {}
    picked = 0
    for _, layer, group in candidates:
        if picked == num_groups:
            break
        if remaining_heads[layer] - group_size < min_per_layer:
            continue
        remaining_heads[layer] -= group_size
        chosen.setdefault(layer, []).extend(range(group * group_size, (group + 1) * group_size))
        picked += 1
    if picked < num_groups:
        units = unit if group_size == 1 else f"groups of {group_size} {unit}"
        raise ValueError(
            f"Cannot choose {num_groups} {units} to prune: only {picked} can go while keeping at least "
            f"{min_per_layer} {unit} per layer. Ask for fewer, or lower min_{unit}_per_layer."
        )
    return {layer: sorted(heads) for layer, heads in sorted(chosen.items())}


def least_important_per_layer(importance: torch.Tensor, keep: Sequence[int], group_size: int = 1
                              ) -> dict[int, list[int]]:
    """The units to remove so that layer i keeps its `keep[i]` most important ones (heads, in whole key/value groups
    of `group_size`, or FFN neurons), as {layer: [units]} in original numbering. `importance` is [num_layers,
    units] (NaN marks units already gone); a layer that already has `keep[i]` or fewer loses nothing."""
    num_layers, width = importance.shape
    if len(keep) != num_layers:
        raise ValueError(f"keep has {len(keep)} counts for a model of {num_layers} layers.")
    chosen: dict[int, list[int]] = {}
    for layer, count in enumerate(keep):
        if count % group_size or not 0 <= count <= width:
            raise ValueError(f"Layer {layer}: cannot keep {count} of {width} units in whole groups of {group_size}.")
        scores = importance[layer].float().reshape(-1, group_size).sum(-1)
        available = [g for g in range(scores.shape[0]) if not scores[g].isnan()]
        extra = len(available) - count // group_size
        if extra <= 0:
            continue
        weakest = sorted(available, key=lambda g: (scores[g].item(), g))[:extra]
        chosen[layer] = sorted(u for g in weakest for u in range(g * group_size, (g + 1) * group_size))
    return chosen


def groups_to_prune_for_fraction(model: PreTrainedModel, fraction: float) -> int:
    """How many more heads (or key/value groups) must go so that `fraction` of the original heads are pruned."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be between 0 and 1 (share of the original heads to prune), got {fraction}.")
    layout = head_layout(model)
    total = layout.num_layers * layout.num_groups
    remaining = sum(len(kept) for kept in kept_heads(model)) // layout.group_size
    return max(0, round(fraction * total) - (total - remaining))


def neurons_to_prune_for_fraction(model: PreTrainedModel, fraction: float) -> int:
    """How many more FFN neurons must go so that `fraction` of the original neurons are pruned."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be between 0 and 1 (share of the original FFN neurons to prune), got "
                         f"{fraction}.")
    kept = kept_neurons(model)
    total = len(kept) * ffn_width(model)
    remaining = sum(len(layer) for layer in kept)
    return max(0, round(fraction * total) - (total - remaining))


def prune_heads_to_fraction(
    model: PreTrainedModel,
    dataloader: Iterable[Mapping[str, torch.Tensor]] | None,
    fraction: float,
    method: str = "taylor",
    *,
    loss_fn: LossFn | None = None,
    num_batches: int | None = None,
    min_heads_per_layer: int = 0,
) -> tuple[PreTrainedModel, dict[int, list[int]]]:
    """Prune the least important heads until `fraction` of the model's original heads are gone.

    Importance is computed with `compute_head_importance(model, dataloader, method, ...)`, normalised per layer,
    and heads are ranked across all layers (whole key/value groups for grouped-query attention, so the fraction
    is rounded to whole groups). Heads pruned earlier count towards the fraction. Returns the model (pruned in
    place) and the heads this call removed, {layer: [heads]} in the original numbering.
    """
    count = groups_to_prune_for_fraction(model, fraction)
    if count == 0:
        return model, {}
    layout = head_layout(model)
    importance = compute_head_importance(model, dataloader, method, loss_fn=loss_fn, num_batches=num_batches)
    heads = least_important_heads(importance, count, layout.group_size, min_heads_per_layer)
    prune_heads(model, heads)
    return model, heads


def prune_ffn_to_fraction(
    model: PreTrainedModel,
    dataloader: Iterable[Mapping[str, torch.Tensor]] | None,
    fraction: float,
    method: str = "taylor",
    *,
    loss_fn: LossFn | None = None,
    num_batches: int | None = None,
    min_neurons_per_layer: int = 0,
) -> tuple[PreTrainedModel, dict[int, list[int]]]:
    """Prune the least important FFN neurons until `fraction` of the model's original neurons are gone.

    As `prune_heads_to_fraction`, with `compute_ffn_importance` (normalised per layer, ranked across layers). Neurons
    pruned earlier count towards the fraction. Returns the model (pruned in place) and the neurons this call
    removed, {layer: [neurons]} in the original numbering.
    """
    count = neurons_to_prune_for_fraction(model, fraction)
    if count == 0:
        return model, {}
    importance = compute_ffn_importance(model, dataloader, method, loss_fn=loss_fn, num_batches=num_batches)
    neurons = least_important_neurons(importance, count, min_neurons_per_layer)
    prune_ffn(model, neurons)
    return model, neurons

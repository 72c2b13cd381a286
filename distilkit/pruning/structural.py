"""Structural pruning of attention heads and FFN neurons: they are deleted from the weights, not masked.

Removing head h of a layer deletes its rows of the query/key/value projections and its columns of the output
projection. The pruned model is smaller and faster, and computes exactly what the unpruned model computes with
those heads' contributions zeroed. transformers 5 dropped `head_mask` and `model.prune_heads`, so distilkit does
the surgery itself (`surgery.py`), driven by the module paths in `distilkit.architectures`; this module checks
requests, keeps the records and carries optimizer state over.

Head indices always refer to the ORIGINAL numbering of the unpruned model. Each attention module remembers the
heads it still has (`KEPT_HEADS_ATTR`), so pruning can be applied repeatedly, and the same list is mirrored into
`config.distilkit["pruning"]`, which `save_pretrained` writes to config.json and `distilkit.from_pretrained`
reads back to rebuild the structure (`restore_pruning`).

FFN neurons (the intermediate units of each layer's feed-forward block) work the same way: removing neuron n of
a layer deletes its rows of the FFN's input projection(s) and its column of the output projection, so the model
computes what the unpruned one computes with that neuron's activation zeroed. `prune_ffn` takes original
numbering too, each layer remembers its neurons (`KEPT_NEURONS_ATTR`), and the record is
`config.distilkit["ffn_pruning"] = {"kept_neurons": [...]}` (`restore_ffn_pruning`). A layer may lose its whole
FFN: the block then adds only the output projection's bias.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel

from ..architectures import ArchitectureSpec, get_architecture, get_layers
from ..serialization.format import set_compression_record
from .surgery import KEPT_HEADS_ATTR, KEPT_NEURONS_ATTR, ParameterChange, prune_layer_heads, prune_layer_neurons

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeadLayout:
    """How many heads a model had before pruning, and how they are grouped.

    `group_size` is the number of query heads sharing one key/value head (grouped-query attention); it is 1
    for ordinary multi-head attention. Heads are pruned, and ranked for pruning, in whole groups.
    """

    spec: ArchitectureSpec
    num_layers: int
    num_heads: int
    group_size: int

    @property
    def num_groups(self) -> int:
        return self.num_heads // self.group_size


def head_layout(model: PreTrainedModel) -> HeadLayout:
    """The original head layout of `model`, read from its config (which pruning never changes)."""
    spec = get_architecture(model)
    num_heads = int(getattr(model.config, spec.heads_attr))
    return HeadLayout(spec, len(get_layers(model)), num_heads, head_group_size(model.config))


def head_group_size(config) -> int:
    """Query heads per key/value head in a model with `config`: heads are pruned in groups of this size (1 for
    ordinary multi-head attention)."""
    spec = get_architecture(config)
    if not spec.grouped_kv:
        return 1
    num_heads = int(getattr(config, spec.heads_attr))
    return num_heads // int(getattr(config, spec.kv_heads_attr, None) or num_heads)


def attention_modules(model: PreTrainedModel) -> list[nn.Module]:
    """The module owning the q/k/v projections, one per layer."""
    spec = get_architecture(model)
    return [layer.get_submodule(spec.attention) for layer in get_layers(model)]


def kept_heads(model: PreTrainedModel) -> list[list[int]]:
    """Per layer, the heads the model still has, in the original numbering."""
    num_heads = head_layout(model).num_heads
    return [list(getattr(module, KEPT_HEADS_ATTR, range(num_heads))) for module in attention_modules(model)]


def removed_heads(model: PreTrainedModel) -> dict[int, list[int]]:
    """Per layer that lost heads, the heads removed so far, in the original numbering."""
    num_heads = head_layout(model).num_heads
    removed = {}
    for layer, kept in enumerate(kept_heads(model)):
        gone = sorted(set(range(num_heads)) - set(kept))
        if gone:
            removed[layer] = gone
    return removed


def prune_heads(
    model: PreTrainedModel,
    heads_to_prune: Mapping[int, Iterable[int]],
    optimizer: torch.optim.Optimizer | None = None,
) -> PreTrainedModel:
    """Remove attention heads from `model` in place and return it.

    `heads_to_prune` maps a layer index to head indices in the ORIGINAL numbering of the unpruned model, e.g.
    `{0: [1, 5], 3: [0]}`; heads that are already gone are skipped, so the call can be repeated. A layer may lose
    all its heads: its attention block then adds only the output projection's bias.

    With grouped-query attention (Llama, Qwen2, Mistral) several query heads share one key/value head; only
    whole groups can be removed, and asking for part of a group is an error.

    If `optimizer` is given, the state it holds for the sliced parameters (e.g. Adam moments) is sliced the same
    way and its parameter groups point at the new parameters, so training can go on without rebuilding it.
    """
    layout = head_layout(model)
    current = kept_heads(model)
    request = _validated_request(layout, heads_to_prune, current)
    changes: list[ParameterChange] = []
    for layer_index, remove in request.items():
        layer = get_layers(model)[layer_index]
        changes += prune_layer_heads(layer, layout.spec, current[layer_index], remove, layout.group_size)
        logger.debug("Pruned heads %s of layer %d.", sorted(remove), layer_index)
    if request:
        set_compression_record(model, "pruning", {"kept_heads": kept_heads(model)})
    if optimizer is not None and changes:
        carry_optimizer_state(optimizer, changes)
    return model



def restore_pruning(model: PreTrainedModel, record: dict) -> PreTrainedModel:
    """Give `model`, freshly built from its config, the head structure described by `record`, the
    `{"kept_heads": [[heads of layer 0], ...]}` that `prune_heads` keeps in `config.distilkit["pruning"]` (its
    restore function for `distilkit.from_pretrained`, see `distilkit.serialization.compressions`)."""
    layout = head_layout(model)
    kept = record.get("kept_heads") if isinstance(record, dict) else None
    if not isinstance(kept, list) or len(kept) != layout.num_layers:
        raise ValueError(
            f"config.distilkit['pruning'] must be {{'kept_heads': [one list of head indices per layer]}} with "
            f"{layout.num_layers} lists for this model; got {record!r}."
        )
    heads_to_prune = {}
    for layer, heads in enumerate(kept):
        missing = sorted(set(range(layout.num_heads)) - {int(h) for h in heads})
        if missing:
            heads_to_prune[layer] = missing
    return prune_heads(model, heads_to_prune)


def ffn_width(model: PreTrainedModel) -> int:
    """The number of FFN neurons per layer before pruning, read from the config (which pruning never changes)."""
    return int(getattr(model.config, get_architecture(model).ffn_width_attr))


def kept_neurons(model: PreTrainedModel) -> list[list[int]]:
    """Per layer, the FFN neurons the model still has, in the original numbering."""
    width = ffn_width(model)
    return [list(getattr(layer, KEPT_NEURONS_ATTR, range(width))) for layer in get_layers(model)]


def prune_ffn(
    model: PreTrainedModel,
    neurons_to_prune: Mapping[int, Iterable[int]],
    optimizer: torch.optim.Optimizer | None = None,
) -> PreTrainedModel:
    """Remove FFN neurons from `model` in place and return it.

    `neurons_to_prune` maps a layer index to neuron indices in the ORIGINAL numbering (0..intermediate size - 1),
    e.g. `{0: [3, 17]}`; neurons already gone are skipped, so the call can be repeated. A layer may lose all its
    neurons: its FFN then adds only the output projection's bias. `optimizer`: as for `prune_heads`.
    """
    spec = get_architecture(model)
    current = kept_neurons(model)
    checked = _checked_indices(neurons_to_prune, len(current), ffn_width(model), "neurons")
    changes: list[ParameterChange] = []
    for layer_index, neurons in checked.items():
        remove = neurons & set(current[layer_index])
        if remove:
            changes += prune_layer_neurons(get_layers(model)[layer_index], spec, current[layer_index], remove)
            logger.debug("Pruned %d FFN neurons of layer %d.", len(remove), layer_index)
    if changes:
        set_compression_record(model, "ffn_pruning", {"kept_neurons": kept_neurons(model)})
        if optimizer is not None:
            carry_optimizer_state(optimizer, changes)
    return model


def restore_ffn_pruning(model: PreTrainedModel, record: dict) -> PreTrainedModel:
    """Give `model`, freshly built from its config, the FFN structure described by `record`, the
    `{"kept_neurons": [[neurons of layer 0], ...]}` that `prune_ffn` keeps in `config.distilkit["ffn_pruning"]`
    (its restore function for `distilkit.from_pretrained`)."""
    num_layers, width = len(get_layers(model)), ffn_width(model)
    kept = record.get("kept_neurons") if isinstance(record, dict) else None
    if not isinstance(kept, list) or len(kept) != num_layers:
        raise ValueError(
            f"config.distilkit['ffn_pruning'] must be {{'kept_neurons': [one list of neuron indices per layer]}} "
            f"with {num_layers} lists for this model; got {record!r}."
        )
    return prune_ffn(model, {layer: sorted(set(range(width)) - {int(n) for n in neurons})
                             for layer, neurons in enumerate(kept)})


def _validated_request(
    layout: HeadLayout, heads_to_prune: Mapping[int, Iterable[int]], current: list[list[int]]
) -> dict[int, set[int]]:
    """The heads still present that `heads_to_prune` asks to remove, per layer, after checking every index."""
    request: dict[int, set[int]] = {}
    for layer, heads in _checked_indices(heads_to_prune, layout.num_layers, layout.num_heads, "heads").items():
        present = set(current[layer])
        if layout.group_size > 1:
            _check_whole_groups(layout, layer, heads, present)
        remove = heads & present
        if remove:
            request[layer] = remove
    return request


def _checked_indices(to_prune: Mapping[int, Iterable[int]], num_layers: int, count: int, unit: str
                     ) -> dict[int, set[int]]:
    """`to_prune` ({layer: [indices]}) as sets, after checking that every layer and index (< `count`) exists."""
    if not isinstance(to_prune, Mapping):
        raise TypeError(
            f"{unit}_to_prune must map layer index -> {unit[:-1]} indices, e.g. {{0: [1, 2]}}; got "
            f"{type(to_prune).__name__}."
        )
    checked: dict[int, set[int]] = {}
    for layer_key, indices in to_prune.items():
        layer = operator.index(layer_key)
        if not 0 <= layer < num_layers:
            raise ValueError(f"Layer {layer} does not exist: the model has layers 0..{num_layers - 1}.")
        indices = {operator.index(i) for i in indices}
        bad = sorted(i for i in indices if not 0 <= i < count)
        if bad:
            raise ValueError(
                f"{unit.capitalize()} {bad} of layer {layer} do not exist: each layer has {unit} 0..{count - 1} "
                "(indices refer to the original, unpruned numbering)."
            )
        checked[layer] = checked.get(layer, set()) | indices
    return checked


def _check_whole_groups(layout: HeadLayout, layer: int, heads: set[int], present: set[int]) -> None:
    size = layout.group_size
    for group in sorted({h // size for h in heads}):
        members = set(range(group * size, (group + 1) * size))
        missing = sorted((members & present) - heads)
        if missing:
            raise ValueError(
                f"{layout.spec.family} models share each key/value head between {size} query heads, so heads are "
                f"pruned in whole groups. Layer {layer}: heads {sorted(heads & members)} are only part of group "
                f"{group} (heads {sorted(members)}); add heads {missing} or leave the group alone."
            )


def carry_optimizer_state(optimizer, changes: Iterable[ParameterChange]) -> None:
    """Point `optimizer` at the new parameters and slice its per-parameter state like the parameters.

    Structural pruning replaces parameters by smaller ones, so an optimizer built before it would keep updating
    the orphaned old tensors. Slicing its state instead of rebuilding it keeps the momentum of the surviving
    weights, and keeps the optimizer object (which the lr scheduler and accelerate's wrapper hold) the same.
    State that is not shaped like its parameter (e.g. factored second moments) cannot be sliced and is reset.
    """
    inner = optimizer
    while not isinstance(inner, torch.optim.Optimizer) and hasattr(inner, "optimizer"):
        inner = inner.optimizer  # accelerate's AcceleratedOptimizer and similar wrappers
    by_old = {id(change.old): change for change in changes}
    for group in inner.param_groups:
        group["params"] = [by_old[id(p)].new if id(p) in by_old else p for p in group["params"]]
    for change in by_old.values():
        state = inner.state.pop(change.old, None)
        if not state:
            continue
        sliced = {}
        for key, value in state.items():
            if torch.is_tensor(value) and value.shape == change.old.shape:
                value = value.index_select(change.dim, change.index.to(value.device))
            elif torch.is_tensor(value) and value.dim() > 0:
                logger.warning("Optimizer state %r of a pruned parameter cannot be sliced; it is reset.", key)
                sliced = None
                break
            sliced[key] = value
        if sliced:
            inner.state[change.new] = sliced


def _match(model: PreTrainedModel, kept: list[list[int]] | None, current: list[list[int]], prune, units: str
           ) -> None:
    if kept is None:
        return
    extra = [sorted(set(k) - set(c)) for c, k in zip(current, kept)]
    if len(kept) != len(current) or any(extra):
        raise ValueError(f"it was saved with {units} {kept}, which this model ({units} {current}) no longer has")
    prune(model, {layer: sorted(set(c) - set(k)) for layer, (c, k) in enumerate(zip(current, kept))})


def match_pruning(model: PreTrainedModel, record: dict) -> None:
    """Remove the heads a live model still has but a pruning `record` (of a checkpoint of the same run, taken
    while pruning during training) no longer has; ValueError if the record keeps a head the model has lost."""
    _match(model, record.get("kept_heads"), kept_heads(model), prune_heads, "heads")


def match_ffn_pruning(model: PreTrainedModel, record: dict) -> None:
    """`match_pruning` for FFN neurons."""
    _match(model, record.get("kept_neurons"), kept_neurons(model), prune_ffn, "FFN neurons")

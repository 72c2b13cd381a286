"""The weight surgery of head and FFN-neuron pruning, for one layer at a time. Depends on torch only, on purpose.

`distilkit.pruning.structural` validates requests and keeps records around these functions. This file is also
copied verbatim into a saved model folder by `distilkit.pruning.remote_code.add_remote_code`, so that folder loads with
`AutoModel...from_pretrained(folder, trust_remote_code=True)` without distilkit installed: keep it free of
distilkit imports and relative imports.

`spec` below is anything with the attributes of `distilkit.architectures.ArchitectureSpec` (module paths
relative to a layer, and the names of the attributes that count heads), plus `attention`, the path of the module
that owns the query projection.

Both kinds of pruning come down to `_slice_linear`: heads are rows of q/k/v and columns of the output projection,
FFN neurons are rows of the FFN's input projection(s) and columns of its output projection. A layer may lose all
of its neurons: zero-width Linears compute an empty intermediate activation, and the output projection adds only
its bias, which is what the unpruned FFN computes with every neuron zeroed.
"""

from __future__ import annotations

import inspect
import types
from dataclasses import dataclass

import torch
from torch import nn

# Attribute of an attention module: its kept heads, in the original numbering. Absent means "all heads".
KEPT_HEADS_ATTR = "distilkit_kept_heads"
# Attributes set on attention modules that need special handling after pruning (see the functions below).
_HEADLESS_OUTPUT_ATTR = "distilkit_headless_output"
_PER_HEAD_BIAS_ATTR = "distilkit_per_head_bias"
# Attribute of a transformer layer: its kept FFN neurons, in the original numbering. Absent means "all neurons".
KEPT_NEURONS_ATTR = "distilkit_kept_neurons"


@dataclass(frozen=True)
class ParameterChange:
    """A parameter replaced by a slice of itself: `new = old.index_select(dim, index)`."""

    old: nn.Parameter
    new: nn.Parameter
    dim: int
    index: torch.Tensor


def prune_layer_heads(
    layer: nn.Module, spec, kept: list[int], remove: set[int], group_size: int = 1
) -> list[ParameterChange]:
    """Delete the heads in `remove` from one layer that currently has the heads `kept` (original numbering).

    Query rows and output-projection columns go per head; key/value rows go per key/value head, i.e. per group
    of `group_size` query heads (the caller checks that only whole groups are removed). Returns the replaced
    parameters so an optimizer can follow them.
    """
    attention = layer.get_submodule(spec.attention)
    head_dim = int(getattr(attention, spec.head_dim_attr))
    device = layer.get_submodule(spec.query).weight.device
    new_kept = [h for h in kept if h not in remove]
    query_rows = _head_rows([kept.index(h) for h in new_kept], head_dim, device)
    if group_size > 1:
        groups = sorted({h // group_size for h in kept})
        new_groups = sorted({h // group_size for h in new_kept})
        kv_rows = _head_rows([groups.index(g) for g in new_groups], head_dim, device)
    else:
        kv_rows = query_rows

    # Per-head bias slicing needs the argument's position in the ORIGINAL forward: install it before a headless
    # forward could replace that.
    if spec.per_head_bias_arg is not None:
        _install_per_head_bias_slicing(attention, spec.per_head_bias_arg)

    changes = []
    changes += _slice_linear(layer, spec.query, query_rows, dim=0)
    changes += _slice_linear(layer, spec.key, kv_rows, dim=0)
    changes += _slice_linear(layer, spec.value, kv_rows, dim=0)
    changes += _slice_linear(layer, spec.output, query_rows, dim=1)

    for attr in spec.head_count_attrs:
        setattr(attention, attr, len(new_kept))
    for attr in spec.head_width_attrs:
        setattr(attention, attr, len(new_kept) * head_dim)
    setattr(attention, KEPT_HEADS_ATTR, new_kept)
    if not new_kept:
        _make_headless(attention, spec)
    return changes


def prune_layer_neurons(layer: nn.Module, spec, kept: list[int], remove: set[int]) -> list[ParameterChange]:
    """Delete the FFN neurons in `remove` from one layer that currently has the neurons `kept` (original
    numbering): their rows of every `spec.ffn_in` projection and their columns of `spec.ffn_out`. Returns the
    replaced parameters so an optimizer can follow them."""
    new_kept = [n for n in kept if n not in remove]
    device = layer.get_submodule(spec.ffn_out).weight.device
    index = torch.tensor([kept.index(n) for n in new_kept], dtype=torch.long, device=device)
    changes = []
    for path in spec.ffn_in:
        changes += _slice_linear(layer, path, index, dim=0)
    changes += _slice_linear(layer, spec.ffn_out, index, dim=1)
    setattr(layer, KEPT_NEURONS_ATTR, new_kept)
    return changes


def _head_rows(positions: list[int], head_dim: int, device: torch.device) -> torch.Tensor:
    """Row indices of the heads at `positions` (current numbering) in a [heads * head_dim] projection."""
    rows = [p * head_dim + i for p in positions for i in range(head_dim)]
    return torch.tensor(rows, dtype=torch.long, device=device)


def _slice_linear(root: nn.Module, path: str, index: torch.Tensor, dim: int) -> list[ParameterChange]:
    """Replace the nn.Linear at `path` by the rows (dim 0) or input columns (dim 1) listed in `index`."""
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path)
    old = getattr(parent, name)
    if type(old) is not nn.Linear:
        raise TypeError(
            f"Cannot prune {path}: it is a {type(old).__name__}, not a torch.nn.Linear. Prune heads and FFN neurons "
            "before quantizing the model or wrapping its projections (e.g. with LoRA adapters)."
        )
    weight = old.weight.detach().index_select(dim, index)
    # A 1x1 placeholder on the meta device: nothing is initialised only to be overwritten, and a layer that lost
    # every head (zero features) triggers no "zero-element tensor" warning. The real weight is assigned next.
    new = nn.Linear(1, 1, bias=False, device="meta")
    new.out_features, new.in_features = weight.shape
    new.weight = nn.Parameter(weight, requires_grad=old.weight.requires_grad)
    changes = [ParameterChange(old.weight, new.weight, dim, index)]
    if old.bias is not None:
        if dim == 0:
            new.bias = nn.Parameter(old.bias.detach().index_select(0, index), requires_grad=old.bias.requires_grad)
            changes.append(ParameterChange(old.bias, new.bias, 0, index))
        else:
            new.bias = old.bias  # an output projection's bias belongs to no head or neuron: keep the same parameter
    new.train(old.training)
    setattr(parent, name, new)
    return changes


def _make_headless(attention: nn.Module, spec) -> None:
    """Give an attention module without heads a forward that works.

    The original forwards reshape projections with a `-1` head dimension, which is ambiguous for a tensor with
    zero elements, so they cannot run once every head is gone.
    """
    prefix = spec.attention + "."
    inner_output = spec.output[len(prefix) :] if spec.output.startswith(prefix) else None
    setattr(attention, _HEADLESS_OUTPUT_ATTR, (inner_output, spec.head_dim_attr))
    attention.forward = types.MethodType(_headless_attention_forward, attention)


def _headless_attention_forward(self: nn.Module, hidden_states: torch.Tensor, *args, **kwargs):
    """Forward of an attention module whose heads were all pruned.

    Every head's contribution is zero, so the concatenated head outputs are an empty [..., 0] tensor. When the
    output projection belongs to this module it maps that to its bias (what the zeroed reference computes);
    otherwise the caller's projection does. Attention weights are an empty [batch, 0, q, k] tensor, and a KV
    cache is still advanced (with zero heads) so that later layers and generation see the right length.
    """
    inner_output, head_dim_attr = getattr(self, _HEADLESS_OUTPUT_ATTR)
    batch, length = hidden_states.shape[:2]
    context = hidden_states.new_zeros(*hidden_states.shape[:-1], 0)
    output = self.get_submodule(inner_output)(context) if inner_output else context
    cache = kwargs.get("past_key_values")
    layer_idx = getattr(self, "layer_idx", None)
    if cache is not None and layer_idx is not None and hasattr(cache, "update"):
        empty = hidden_states.new_zeros(batch, 0, length, int(getattr(self, head_dim_attr)))
        cache.update(empty, empty, layer_idx)
    weights = hidden_states.new_zeros(batch, 0, length, length)
    return output, weights


def _install_per_head_bias_slicing(attention: nn.Module, arg_name: str) -> None:
    """Make `attention` see only its kept heads' slice of a per-head bias computed for all original heads."""
    if hasattr(attention, _PER_HEAD_BIAS_ATTR):
        return
    parameters = list(inspect.signature(type(attention).forward).parameters)
    position = parameters.index(arg_name) - 1  # minus `self`: hook args exclude it
    setattr(attention, _PER_HEAD_BIAS_ATTR, (arg_name, position))
    attention.register_forward_pre_hook(_slice_per_head_bias, with_kwargs=True)


def _slice_per_head_bias(module: nn.Module, args: tuple, kwargs: dict):
    name, position = getattr(module, _PER_HEAD_BIAS_ATTR)
    kept = getattr(module, KEPT_HEADS_ATTR)
    if len(args) > position and args[position] is not None:
        bias = args[position]
        index = torch.tensor(kept, dtype=torch.long, device=bias.device)
        args = (*args[:position], bias.index_select(1, index), *args[position + 1 :])
    elif kwargs.get(name) is not None:
        bias = kwargs[name]
        index = torch.tensor(kept, dtype=torch.long, device=bias.device)
        kwargs = {**kwargs, name: bias.index_select(1, index)}
    return args, kwargs


def restore_kept_heads(model: nn.Module, spec, kept_heads: list[list[int]]) -> None:
    """Prune a model freshly built from its config down to `kept_heads` (one list per layer, original numbering).

    The loader of the self-contained remote code; distilkit's own loader validates first (`restore_pruning`).
    """
    num_heads = int(getattr(model.config, spec.heads_attr))
    group_size = 1
    if spec.grouped_kv:
        group_size = num_heads // int(getattr(model.config, spec.kv_heads_attr, None) or num_heads)
    layers = model.base_model.get_submodule(spec.layers)
    for layer, kept in zip(layers, kept_heads, strict=True):
        remove = set(range(num_heads)) - {int(h) for h in kept}
        if remove:
            prune_layer_heads(layer, spec, list(range(num_heads)), remove, group_size)


def restore_kept_neurons(model: nn.Module, spec, kept_neurons: list[list[int]]) -> None:
    """Prune a model freshly built from its config down to `kept_neurons` (one list per layer, original numbering).

    The loader of the self-contained remote code; distilkit's own loader validates first (`restore_ffn_pruning`).
    """
    width = int(getattr(model.config, spec.ffn_width_attr))
    layers = model.base_model.get_submodule(spec.layers)
    for layer, kept in zip(layers, kept_neurons, strict=True):
        remove = set(range(width)) - {int(n) for n in kept}
        if remove:
            prune_layer_neurons(layer, spec, list(range(width)), remove)

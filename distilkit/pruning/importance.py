"""How much each attention head, or FFN neuron, matters, to decide which to prune.

Two estimates, both returned as a [num_layers, num_heads] tensor in the original head numbering (heads already
pruned are NaN, "no value", so they cannot be mistaken for unimportant heads that are still there):

- "taylor" (Michel et al., 2019, "Are Sixteen Heads Really Better than One?"): put a gate of value 1 on each head's
  output and accumulate |dL/d gate| over the data. It is the first-order estimate of how much the loss changes
  when the head is removed. The gates are distilkit's own forward pre-hooks on the output projection, since
  transformers 5 no longer has `head_mask`.
- "magnitude": the L2 norm of the head's weights (its q/k/v rows and output-projection columns). Needs no data.

By default each layer's scores are divided by their L2 norm (Michel et al.): raw gradient sizes differ a lot
between layers, and a global ranking of raw scores would empty the layers with small gradients first.

`compute_ffn_importance` scores FFN neurons the same two ways, as [num_layers, intermediate size]: "taylor" gates
each neuron's intermediate activation (the input of the FFN's output projection), "magnitude" is the L2 norm of
the neuron's rows of the input projection(s) and its column of the output projection.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn
from transformers import PreTrainedModel

from ..architectures import get_architecture, get_layers
from .structural import ffn_width, head_layout, kept_heads, kept_neurons

METHODS = ("taylor", "magnitude")

LossFn = Callable[[PreTrainedModel, Mapping[str, torch.Tensor]], torch.Tensor]


def compute_head_importance(
    model: PreTrainedModel,
    dataloader: Iterable[Mapping[str, torch.Tensor]] | None,
    method: str = "taylor",
    *,
    loss_fn: LossFn | None = None,
    num_batches: int | None = None,
    normalize: bool = True,
) -> torch.Tensor:
    """Importance of every attention head: a float32 CPU tensor [num_layers, num_heads], NaN for pruned heads.

    Args:
        dataloader: batches (dicts of tensors) to estimate "taylor" importance on; moved to the model's device.
            Not read by "magnitude", which accepts None.
        method: "taylor" or "magnitude" (see the module docstring).
        loss_fn: `loss_fn(model, batch) -> scalar loss` for "taylor", e.g. a distillation loss against a
            teacher. By default the model's own loss, so batches then need labels.
        num_batches: read at most this many batches (default: the whole dataloader).
        normalize: divide each layer's scores by their L2 norm, so layers can be ranked together.

    The model's parameters and their `.grad` are left untouched, and it is evaluated in eval mode (no dropout),
    then put back in the mode it was in.
    """
    _check_arguments(method, dataloader, num_batches, "head")
    if method == "taylor":
        scores = _taylor_scores(model, dataloader, loss_fn, num_batches, _head_gates(model))
    else:
        scores = _magnitude_scores(model)
    return _importance_table(kept_heads(model), head_layout(model).num_heads, scores, normalize)


def compute_ffn_importance(
    model: PreTrainedModel,
    dataloader: Iterable[Mapping[str, torch.Tensor]] | None,
    method: str = "taylor",
    *,
    loss_fn: LossFn | None = None,
    num_batches: int | None = None,
    normalize: bool = True,
) -> torch.Tensor:
    """Importance of every FFN neuron: a float32 CPU tensor [num_layers, intermediate size], NaN for pruned
    neurons. Arguments and behaviour as `compute_head_importance`."""
    _check_arguments(method, dataloader, num_batches, "FFN neuron")
    if method == "taylor":
        scores = _taylor_scores(model, dataloader, loss_fn, num_batches, _neuron_gates(model))
    else:
        scores = _neuron_magnitude_scores(model)
    return _importance_table(kept_neurons(model), ffn_width(model), scores, normalize)


def _check_arguments(method: str, dataloader, num_batches: int | None, unit: str) -> None:
    if method not in METHODS:
        raise ValueError(f"Unknown {unit} importance method {method!r}; choose one of {METHODS}.")
    if num_batches is not None and num_batches < 1:
        raise ValueError(f"num_batches must be at least 1 (or None for the whole dataloader), got {num_batches}.")
    if method == "taylor" and dataloader is None:
        raise ValueError('method="taylor" needs a dataloader of batches; method="magnitude" needs none.')


def _importance_table(kept: list[list[int]], width: int, scores: list[torch.Tensor], normalize: bool) -> torch.Tensor:
    """[num_layers, width] with each layer's `scores` at its kept indices (normalised if asked), NaN elsewhere."""
    importance = torch.full((len(kept), width), float("nan"))
    for layer, (layer_kept, layer_scores) in enumerate(zip(kept, scores)):
        if not layer_kept:
            continue
        if normalize:
            layer_scores = layer_scores / layer_scores.norm().clamp_min(torch.finfo(torch.float32).tiny)
        importance[layer, layer_kept] = layer_scores
    return importance


def _taylor_scores(
    model: PreTrainedModel, dataloader: Iterable, loss_fn: LossFn | None, num_batches: int | None, gating
) -> list[torch.Tensor]:
    """Per layer, the summed |dL/d gate| of the gates that `gating` (`_head_gates` or `_neuron_gates`) installs."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    seen = 0
    try:
        with gating as gates, torch.enable_grad():
            totals = [torch.zeros(0 if gate is None else gate.numel()) for gate in gates]
            live = [i for i, gate in enumerate(gates) if gate is not None]
            for batch in dataloader:
                if num_batches is not None and seen >= num_batches:
                    break
                seen += 1
                if not live:  # every head (neuron) is gone: nothing to score
                    continue
                batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
                loss = loss_fn(model, batch) if loss_fn is not None else _model_loss(model, batch)
                grads = torch.autograd.grad(loss, [gates[i] for i in live], allow_unused=True)
                for i, grad in zip(live, grads):
                    if grad is not None:  # None: this layer does not influence loss_fn's loss
                        totals[i] += grad.detach().abs().float().cpu()
    finally:
        model.train(was_training)
    if seen == 0:
        raise ValueError("The dataloader yielded no batches; Taylor importance needs at least one.")
    return totals


def _model_loss(model: PreTrainedModel, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    loss = getattr(model(**batch), "loss", None)
    if loss is None:
        raise ValueError(
            f"The model computed no loss from a batch with keys {sorted(batch)}. Include labels in the batches, "
            "or pass loss_fn=lambda model, batch: ... (e.g. a distillation loss against a teacher)."
        )
    return loss


def _head_gates(model: PreTrainedModel):
    """Per layer, a gate of ones [kept heads] multiplied into each head's slice of the output projection input.

    All-ones gates leave the forward unchanged; their gradients are the Taylor scores. None for headless layers.
    """
    return _gates(model, get_architecture(model).output, kept_heads(model))


def _neuron_gates(model: PreTrainedModel):
    """Per layer, a gate of ones [kept neurons] multiplied into the FFN's intermediate activation (the input of its
    output projection). None for layers without FFN neurons."""
    return _gates(model, get_architecture(model).ffn_out, kept_neurons(model))


@contextmanager
def _gates(model: PreTrainedModel, path: str, kept: list[list[int]]) -> Iterator[list[torch.Tensor | None]]:
    """Per layer, a gate of ones [len(kept)] applied by a forward pre-hook to the input of the Linear at `path`."""
    gates: list[torch.Tensor | None] = []
    handles = []
    try:
        for layer, layer_kept in zip(get_layers(model), kept):
            if not layer_kept:
                gates.append(None)
                continue
            linear = layer.get_submodule(path)
            gate = torch.ones(len(layer_kept), device=linear.weight.device, dtype=linear.weight.dtype,
                              requires_grad=True)
            handles.append(linear.register_forward_pre_hook(functools.partial(_apply_gate, gate)))
            gates.append(gate)
        yield gates
    finally:
        for handle in handles:
            handle.remove()


def _apply_gate(gate: torch.Tensor, module: nn.Module, args: tuple) -> tuple:
    units = args[0].unflatten(-1, (gate.numel(), -1))  # [..., heads, head_dim], or [..., neurons, 1]
    return ((units * gate[:, None]).flatten(-2), *args[1:])


def _magnitude_scores(model: PreTrainedModel) -> list[torch.Tensor]:
    layout = head_layout(model)
    spec = layout.spec
    scores = []
    with torch.no_grad():
        for layer, kept in zip(get_layers(model), kept_heads(model)):
            if not kept:
                scores.append(torch.zeros(0))
                continue
            n = len(kept)
            kv_count = len({h // layout.group_size for h in kept})
            q, k, v, o = (layer.get_submodule(path).weight for path in (spec.query, spec.key, spec.value, spec.output))
            per_head = _squares_per_head(q, 0, n) + _squares_per_head(o, 1, n)
            per_kv_head = _squares_per_head(k, 0, kv_count) + _squares_per_head(v, 0, kv_count)
            # Each query head is charged its group's key/value weights; without grouping, a group is one head.
            scores.append((per_head + per_kv_head.repeat_interleave(n // kv_count)).sqrt().cpu())
    return scores


def _squares_per_head(weight: torch.Tensor, dim: int, count: int) -> torch.Tensor:
    """Sum of squared weights of each of `count` heads laid out along `dim` (0: output rows, 1: input columns)."""
    per_head = weight.float().unflatten(dim, (count, -1))  # dim 0: [count, d, in]; dim 1: [out, count, d]
    return per_head.pow(2).sum(dim=[d for d in range(per_head.dim()) if d != dim])


def _neuron_magnitude_scores(model: PreTrainedModel) -> list[torch.Tensor]:
    spec = get_architecture(model)
    scores = []
    with torch.no_grad():
        for layer in get_layers(model):
            squares = layer.get_submodule(spec.ffn_out).weight.float().pow(2).sum(0)
            for path in spec.ffn_in:
                squares = squares + layer.get_submodule(path).weight.float().pow(2).sum(1)
            scores.append(squares.sqrt().cpu())
    return scores

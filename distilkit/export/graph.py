"""Tracing a model into an ONNX graph (`export_graph`), and checking the file with ONNX Runtime (`check_graph`).

The graph is traced by torch.onnx's TorchScript exporter (`dynamo=False`) from one forward pass on padded dummy
inputs, with these choices:

* inputs: those of `input_ids`, `attention_mask`, `token_type_ids` that the model's forward takes, in that order
  and under those names (the tokenizer's). `token_type_ids` only when the model has several token types
  (RoBERTa's single type is left out, as optimum does) and the tokenizer, if known, returns them;
* outputs: every tensor of the model's output (`logits`; `last_hidden_state` and `pooler_output` for a bare
  encoder), under the output's own key, for one pass without a key/value cache (`use_cache=False`);
* dynamic axes: batch and sequence on every input; an output dimension is dynamic when two dry runs at different
  shapes show it follows the batch or the sequence (so a classifier's label axis stays fixed);
* eager attention while tracing (restored afterwards), and a padded row in the dummy batch: sdpa code paths may
  drop the mask when a traced batch has no padding, which would bake "no padding" into the graph;
* int8 layers as ONNX integer ops (`int8_ops`).

Each layer's reshapes use the head count of its own (possibly pruned) weights, so per-layer head counts trace
as constants of that layer and non-uniformly pruned models export as they are.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .int8_ops import integer_ops_for_export

CANDIDATE_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Forward arguments fixed for the export: one pass without a key/value cache, outputs as a dict.
FIXED_ARGUMENTS = {"use_cache": False, "return_dict": True}
# (batch, sequence) of the traced dummy inputs, and of the second dry run / the check with ONNX Runtime.
TRACE_SHAPE = (2, 7)
CHECK_SHAPE = (3, 11)
# Tokens of padding at the end of the first row of every dummy batch.
PADDING = 2


@dataclass(frozen=True)
class GraphSignature:
    """The names of a graph's inputs and outputs, and which of their dimensions are dynamic."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    dynamic_axes: dict[str, dict[int, str]]


def input_names(model: nn.Module, tokenizer=None) -> tuple[str, ...]:
    """The graph's inputs, as the module docstring describes."""
    accepted = inspect.signature(model.forward).parameters
    names = [name for name in CANDIDATE_INPUTS if name in accepted]
    token_types = getattr(model.config, "type_vocab_size", 0) or 0
    tokenizer_names = getattr(tokenizer, "model_input_names", None)
    if "token_type_ids" in names and (token_types < 2 or (tokenizer_names and "token_type_ids" not in tokenizer_names)):
        names.remove("token_type_ids")
    if "input_ids" not in names:
        raise ValueError(f"{type(model).__name__}.forward takes no input_ids; distilkit exports token models only.")
    return tuple(names)


def dummy_inputs(model: nn.Module, names: tuple[str, ...], shape: tuple[int, int], seed: int = 0) -> dict:
    """Random token ids (and types) of `shape`; the first row ends in `PADDING` padded positions."""
    config = model.config
    batch, length = shape
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, config.vocab_size, shape, generator=generator)
    mask = torch.ones(shape, dtype=torch.long)
    mask[0, length - PADDING:] = 0
    pad = getattr(config, "pad_token_id", None)
    if pad is not None:
        ids[0, length - PADDING:] = pad
    token_types = max(getattr(config, "type_vocab_size", 1) or 1, 1)
    values = {"input_ids": ids, "attention_mask": mask,
              "token_type_ids": torch.randint(0, token_types, shape, generator=generator)}
    return {name: values[name] for name in names}


def _fixed_arguments(model: nn.Module) -> dict:
    accepted = inspect.signature(model.forward).parameters
    return {name: value for name, value in FIXED_ARGUMENTS.items() if name in accepted}


@torch.no_grad()
def forward_outputs(model: nn.Module, inputs: dict) -> dict[str, torch.Tensor]:
    """The tensors of one forward pass, by output name (what the exported graph returns)."""
    outputs = model(**inputs, **_fixed_arguments(model))
    return {name: value for name, value in outputs.items() if isinstance(value, torch.Tensor)}


def graph_signature(model: nn.Module, tokenizer=None) -> GraphSignature:
    """Inputs, outputs and dynamic axes of the graph of `model` (two dry runs, at TRACE_SHAPE and CHECK_SHAPE)."""
    names = input_names(model, tokenizer)
    runs = [forward_outputs(model, dummy_inputs(model, names, shape)) for shape in (TRACE_SHAPE, CHECK_SHAPE)]
    axes: dict[str, dict[int, str]] = {name: {0: "batch", 1: "sequence"} for name in names}
    for output, first in runs[0].items():
        second = runs[1][output].shape
        if len(second) != first.dim():
            raise ValueError(f"Output {output!r} of {type(model).__name__} changes rank with the input shape.")
        for dim, sizes in enumerate(zip(first.shape, second)):
            axis = {(TRACE_SHAPE[0], CHECK_SHAPE[0]): "batch", (TRACE_SHAPE[1], CHECK_SHAPE[1]): "sequence"}.get(sizes)
            if axis is None and sizes[0] != sizes[1]:
                raise ValueError(f"Dimension {dim} of output {output!r} follows neither the batch nor the sequence "
                                 f"({sizes[0]} then {sizes[1]}); it cannot be exported with dynamic axes.")
            if axis is not None:
                axes.setdefault(output, {})[dim] = axis
    return GraphSignature(names, tuple(runs[0]), axes)


class _Forward(nn.Module):
    """The model as a function of positional tensors returning a tuple, which is what the tracer takes."""

    def __init__(self, model: nn.Module, signature: GraphSignature):
        super().__init__()
        self.model = model
        self.signature = signature
        self.train(model.training)  # torch.onnx.export restores this mode on the wrapper, and so on the model

    def forward(self, *tensors):
        outputs = self.model(**dict(zip(self.signature.inputs, tensors)), **_fixed_arguments(self.model))
        return tuple(outputs[name] for name in self.signature.outputs)


@contextmanager
def export_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode and eager attention for the block; the model's own mode and attention come back afterwards."""
    training = model.training
    attention = getattr(model.config, "_attn_implementation", None)
    model.eval()
    if attention not in (None, "eager"):
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if attention not in (None, "eager"):
            model.set_attn_implementation(attention)
        model.train(training)


@contextmanager
def _quiet_tracer() -> Iterator[None]:
    # The tracer warns about every Python-level shape computation of transformers' code, and torch warns that the
    # TorchScript exporter is the legacy one; the graph is checked against the model instead (`check_graph`).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx.*")
        yield


def export_graph(model: nn.Module, path: Path, opset: int, tokenizer=None) -> GraphSignature:
    """Write the ONNX graph of `model` to `path` (see the module docstring); returns its signature."""
    with export_mode(model), _quiet_tracer():
        signature = graph_signature(model, tokenizer)
        inputs = dummy_inputs(model, signature.inputs, TRACE_SHAPE)
        with integer_ops_for_export(model):
            torch.onnx.export(_Forward(model, signature), tuple(inputs.values()), str(path),
                              input_names=list(signature.inputs), output_names=list(signature.outputs),
                              dynamic_axes=signature.dynamic_axes, opset_version=opset, do_constant_folding=True,
                              dynamo=False)
    return signature


@dataclass(frozen=True)
class GraphCheck:
    """ONNX Runtime's outputs against the model's on one batch at CHECK_SHAPE (with padding)."""

    max_difference: float  # largest absolute difference over all outputs
    max_reference: float  # largest absolute value of the model's outputs


def check_graph(path: Path, model: nn.Module, signature: GraphSignature, seed: int = 1) -> GraphCheck:
    """Run the file in ONNX Runtime (CPU) and the model in PyTorch on the same new batch, and compare.

    Raises if ONNX Runtime cannot load or run the file, or returns outputs of other shapes or non-finite values.
    """
    from .session import ort_session

    session = ort_session(path, threads=1)  # a small batch: threads would only wait on each other when busy
    with export_mode(model):
        inputs = dummy_inputs(model, signature.inputs, CHECK_SHAPE, seed)
        expected = forward_outputs(model, inputs)
    got = session.run(list(signature.outputs), {name: value.numpy() for name, value in inputs.items()})
    difference = reference = 0.0
    for name, value in zip(signature.outputs, got):
        value = torch.from_numpy(value)
        if value.shape != expected[name].shape or not torch.isfinite(value).all():
            raise RuntimeError(f"ONNX Runtime's {name!r} from {path} has shape {tuple(value.shape)} (finite: "
                               f"{bool(torch.isfinite(value).all())}), the model's {tuple(expected[name].shape)}: "
                               "the export is broken.")
        difference = max(difference, float((value - expected[name].float()).abs().max()))
        reference = max(reference, float(expected[name].abs().max()))
    return GraphCheck(difference, reference)

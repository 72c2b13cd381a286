"""distilkit's int8 modules as ONNX integer ops, so an int8 model exports its int8 weights as they are.

`torch.onnx.export` cannot trace `Int8Linear`'s kernels (fbgemm's packed weights are torch.ao quantized objects),
and a dequantized float copy would lose both the size and the speed. So while a model is exported, each
`Int8Linear` runs `_DynamicInt8MatMul`, an autograd Function whose `symbolic` writes the graph that ONNX Runtime's
own `quantize_dynamic` writes for a MatMul:

    DynamicQuantizeLinear(x)                 -> x_q (uint8), x_scale, x_zero_point    one scale per tensor
    MatMulInteger(x_q, W_q, x_zero_point, 0)  -> int32                               W_q: int8 [in, out]
    Cast(float) * (x_scale * weight_scale)    -> float                               weight_scale: [out]
    + bias

ONNX Runtime's graph optimizer fuses exactly this pattern into its fast kernels (com.microsoft
DynamicQuantizeMatMul, or MatMulIntegerToFloat when several layers share one input), so the export runs where ORT's
own int8 models run. Only standard ONNX ops are written; the fusion is ORT's choice at load time.

The scheme is distilkit's (`distilkit.quantization.kernels`): symmetric per-output-channel int8 weights (zero
point 0), asymmetric per-tensor uint8 activations. ONNX's DynamicQuantizeLinear always uses the full range
0..255, as distilkit does on CPUs with AVX-512 VNNI; on CPUs without it distilkit uses 0..127, so the ONNX model
rounds activations about twice as finely as the PyTorch model there. The zero point is rounded slightly
differently from fbgemm's too: logits differ by a small amount (see `distilkit.export` for the measured bound).

`Int8Embedding` needs no mapping: its forward (a Gather of int8 rows, a Cast, a Gather of the row scales, a Mul)
traces into ONNX as it is, and nothing folds its int8 rows back into floats.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from ..quantization.kernels import dequantize_rows
from ..quantization.layer import Int8Linear

_ONNX_FLOAT = 1  # onnx.TensorProto.FLOAT, without importing onnx here


def _integer_matmul(g, x, weight_t, weight_scale):
    """DynamicQuantizeLinear + MatMulInteger + Cast + Mul: ORT's dynamic int8 MatMul without its bias."""
    x_q, x_scale, x_zero_point = g.op("DynamicQuantizeLinear", x, outputs=3)
    weight_zero_point = g.op("Constant", value_t=torch.zeros((), dtype=torch.int8))
    accumulator = g.op("MatMulInteger", x_q, weight_t, x_zero_point, weight_zero_point)
    scale = g.op("Mul", x_scale, weight_scale)
    return g.op("Mul", g.op("Cast", accumulator, to_i=_ONNX_FLOAT), scale)


def _traced_value(x, weight_t, weight_scale, bias=None):
    """The Functions' forward, which runs only while the exporter traces: it gives the shape and dtype of the
    output and a value close to the int8 one (the dequantized weights, float activations). It must be made of
    plain ops: the exporter's graph passes fail on the reductions of run-time activation quantization here."""
    return F.linear(x, dequantize_rows(weight_t.t(), weight_scale, x.dtype), bias)


class _DynamicInt8MatMul(torch.autograd.Function):
    """`x @ W` with int8 `W` ([in, out]) and per-column scales, as ONNX integer ops when exported."""

    @staticmethod
    def forward(ctx, x, weight_t, weight_scale):
        return _traced_value(x, weight_t, weight_scale)

    @staticmethod
    def symbolic(g, x, weight_t, weight_scale):
        return _integer_matmul(g, x, weight_t, weight_scale)


class _DynamicInt8MatMulBias(torch.autograd.Function):
    """The same with a float bias added (the pattern ORT writes for a MatMul followed by an Add)."""

    @staticmethod
    def forward(ctx, x, weight_t, weight_scale, bias):
        return _traced_value(x, weight_t, weight_scale, bias)

    @staticmethod
    def symbolic(g, x, weight_t, weight_scale, bias):
        return g.op("Add", _integer_matmul(g, x, weight_t, weight_scale), bias)


def _export_forward(module: Int8Linear):
    def forward(x: torch.Tensor) -> torch.Tensor:
        # The transpose of a constant is folded by the exporter: the file holds one int8 [in, out] matrix.
        weight_t = module.weight.t()
        scale = module.weight_scale.float()
        if module.bias is None:
            return _DynamicInt8MatMul.apply(x, weight_t, scale)
        return _DynamicInt8MatMulBias.apply(x, weight_t, scale, module.bias.to(x.dtype))

    return forward


@contextmanager
def integer_ops_for_export(model: nn.Module) -> Iterator[int]:
    """Within the block, every `Int8Linear` of `model` with weights traces to ONNX integer ops; yields how many.

    The model is not copied: each module gets an instance-level `forward` that is removed again on exit. A layer
    with no weights (all its heads or neurons pruned) keeps its own forward, which adds only its bias.
    """
    from ..quantization.layer import FusedActivation
    from ..quantization.model import fuse_activations, group_shared_inputs

    # The run-time fusions of the PyTorch int8 path (q/k/v as one product, GELU inside the FFN's product) are
    # undone for the trace: the graph holds each Int8Linear and activation as it is saved, and ONNX Runtime fuses
    # what its kernels fuse.
    fused = any(isinstance(m, FusedActivation) for m in model.modules())
    grouped = any(getattr(m, "_shared_input_group", None) is not None for m in model.modules())
    fuse_activations(model, enabled=False)
    group_shared_inputs(model, enabled=False)
    patched = [m for m in model.modules() if isinstance(m, Int8Linear) and m.weight.numel() > 0]
    try:
        for module in patched:
            module.forward = _export_forward(module)
        yield len(patched)
    finally:
        for module in patched:
            module.__dict__.pop("forward", None)
        if grouped:
            group_shared_inputs(model)
        if fused:
            fuse_activations(model)

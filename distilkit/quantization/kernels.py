"""The int8 matrix products behind `Int8Linear`, and the one function that picks which to run.

Every kernel computes the same thing, the quantization scheme of `Int8Linear`:

* weights: int8, symmetric, one float scale per output channel (`W ~= weight[n, :] * weight_scale[n]`);
* activations: quantized at run time, asymmetric uint8 with ONE scale and zero point for the whole input tensor,
  chosen from its min and max exactly as fbgemm chooses them (`activation_qparams`);
* the product is accumulated in integers (or in float on exactly representable integers), then rescaled, and
  the float bias is added.

Per-tensor activations were chosen because fbgemm's dynamic int8 GEMM, the only int8 kernel in stock PyTorch
that is fast and exact on every x86 CPU, supports nothing finer. Per-token activations are more accurate, but
`torch._int_mm` on CPU is only exact with VNNI: forcing fbgemm/oneDNN to AVX2 (`FBGEMM_ENABLE_INSTRUCTIONS`)
makes it return saturated sums. The kernels' speed and accuracy side by side: benchmarks/results/quantization.md
(`benchmarks/bench_quantization.py --kernels`).

The same op, `torch.ops.quantized.linear_dynamic`, runs oneDNN's GEMM when the weights are packed by the
"onednn" engine, with the same activation parameters (`ChooseQuantizationParams`). On CPUs with AMX int8 tiles
(Intel Sapphire Rapids and later) oneDNN uses them, and that is the "onednn" kernel `select_kernel` prefers there
(inputs under `ONEDNN_MIN_ROWS` rows still go to fbgemm, which costs less per call). Whole models against
torch.ao and ONNX Runtime: benchmarks/results/int8_engines.md (`benchmarks/int8_profile.py`).

CPUs without AVX-512 VNNI build the int8 dot product from `vpmaddubsw`, which adds two uint8*int8 products in
a *saturating* int16. With full-range uint8 activations and int8 weights that can overflow (255*127*2 > 32767),
so on those CPUs activations use the range 0..127 ("reduce_range", as torch.ao does). The range therefore
depends on the CPU (`activation_reduce_range`), and every kernel on that CPU uses the same one, so the fast path
and the fallback agree.

Kernels hold run-time state only (fbgemm's or oneDNN's packed copy of the weights, weight row sums): it is built from the
module's int8 weight and scales on first use, never saved, and rebuilt when those tensors change.
"""

from __future__ import annotations

import functools
import os
import platform
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

# Forces a kernel for every Int8Linear whose `kernel` is "auto": "reference" (pure PyTorch), "onednn", "fbgemm"
# or "cuda_int_mm". Useful to check a result against the reference, or on a PyTorch without the fbgemm ops.
KERNEL_ENV = "DISTILKIT_INT8_KERNEL"
AUTO = "auto"

# Largest int8 magnitude used for weights: symmetric [-127, 127], so negating a weight never overflows.
WEIGHT_QMAX = 127
# fbgemm's floor on activation scales (quant_utils::ChooseQuantizationParams, SMALL_SCALE_THRESHOLD).
_MIN_ACTIVATION_SCALE = 6.1e-5


# --------------------------------------------------------------------------------------------------------------
# The scheme, in plain PyTorch
# --------------------------------------------------------------------------------------------------------------


@functools.cache
def _cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none: not Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def _cpu_has_avx512_vnni() -> bool:
    return "avx512_vnni" in _cpu_flags()  # unknown CPU: assume the worst, which is only slightly less accurate


# oneDNN's names (ONEDNN_MAX_CPU_ISA, formerly DNNL_MAX_CPU_ISA) for instruction sets without an int8 dot product.
_ONEDNN_ISAS_WITHOUT_VNNI = {"SSE41", "AVX", "AVX2", "AVX512_CORE"}


def _onednn_max_isa() -> str:
    return (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").upper()


def _cpu_has_amx(kind: str) -> bool:
    """AMX tiles of `kind` ("int8", "bf16"; Intel Sapphire Rapids and later), unless oneDNN is told to stay below
    them."""
    max_isa = _onednn_max_isa()
    return f"amx_{kind}" in _cpu_flags() and (max_isa in {"", "ALL", "DEFAULT"} or "AMX" in max_isa)


def _cpu_has_amx_int8() -> bool:
    return _cpu_has_amx("int8")


def activation_reduce_range(device: torch.device | str = "cpu") -> bool:
    """Whether activations are quantized to 0..127 instead of 0..255 on `device` (see the module docstring).

    True on x86 CPUs without AVX-512 VNNI, and when fbgemm or oneDNN is told to avoid VNNI via
    FBGEMM_ENABLE_INSTRUCTIONS or ONEDNN_MAX_CPU_ISA.
    """
    if torch.device(device).type != "cpu":
        return False
    if platform.machine().lower() not in {"x86_64", "amd64", "i386", "i686"}:
        return False
    forced_isa = os.environ.get("FBGEMM_ENABLE_INSTRUCTIONS", "").upper()
    if forced_isa in {"AVX2", "AVX512", "AVX512_256"}:
        return True
    if _onednn_max_isa() in _ONEDNN_ISAS_WITHOUT_VNNI:  # oneDNN saturates there too (measured with AVX2)
        return True
    return not _cpu_has_avx512_vnni()


def activation_qparams(x: torch.Tensor, reduce_range: bool) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Scale, zero point and largest level for quantizing all of `x` to uint8, as fbgemm's dynamic linear does.

    Mirrors `quant_utils::ChooseQuantizationParams`: the range [min, max] is widened to contain 0, mapped onto
    0..qmax, and the zero point is the rounded integer that represents 0.0 exactly (so zero padding stays zero).
    Returns 0-d tensors so no value leaves the device.
    """
    qmax = 127 if reduce_range else 255
    low = x.amin().double().clamp(max=0)
    high = x.amax().double().clamp(min=0)
    scale = (high - low) / qmax
    degenerate = (scale.float() == 0) | torch.isinf(1 / scale.float())
    scale = torch.where(degenerate, torch.full_like(scale, 0.1), scale)
    # The zero point comes from the unclamped scale: fbgemm rescales min and max along with a too small scale.
    zero_from_min = -low / scale
    zero_from_max = qmax - high / scale
    use_min = (-(low / scale).abs()) < (qmax - (high / scale).abs())
    zero_point = torch.where(use_min, zero_from_min, zero_from_max).clamp(0, qmax).round()
    scale = scale.clamp(min=_MIN_ACTIVATION_SCALE).float()
    return scale, zero_point.float(), qmax


def quantize_activation(x: torch.Tensor, reduce_range: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(levels, scale, zero_point): `x ~= (levels - zero_point) * scale`, levels are integers in 0..qmax (float32)."""
    x = x.float()
    scale, zero_point, qmax = activation_qparams(x, reduce_range)
    levels = torch.round(x * (1 / scale) + zero_point).clamp_(0, qmax)
    return levels, scale, zero_point


def fake_quantize_activation(x: torch.Tensor, reduce_range: bool) -> torch.Tensor:
    """`x` rounded to the values its uint8 quantization can represent, in float32."""
    levels, scale, zero_point = quantize_activation(x, reduce_range)
    return (levels - zero_point) * scale


def dequantize_rows(weight: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Float weights from int8 rows and their per-row scales."""
    return weight.to(dtype) * scale.to(dtype).unsqueeze(-1)


# --------------------------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Int8Kernel:
    """One way to run `y = x @ dequant(W).T + b` under the scheme above.

    `prepare(weight, weight_scale, bias, device)` builds run-time state from the module's tensors (called once,
    then cached by the module); `linear(x, state)` computes the output in `x.dtype`. A kernel that can apply an
    activation (a name in ACTIVATIONS) to the product before writing it out has `linear_activation(x, state,
    name)`; for the others the module applies it afterwards, the same function on the same float values. A kernel
    that can write the product in another dtype directly has `linear_to(x, state, dtype)` (`linear_in` calls it, or
    converts `linear`'s output).
    """

    name: str
    available: Callable[[torch.device], bool]
    prepare: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.device], Any]
    linear: Callable[[torch.Tensor, Any], torch.Tensor]
    linear_activation: Callable[[torch.Tensor, Any, str], torch.Tensor] | None = None
    linear_to: Callable[[torch.Tensor, Any, torch.dtype], torch.Tensor] | None = None

    def linear_in(self, x: torch.Tensor, state: Any, dtype: torch.dtype | None) -> torch.Tensor:
        """The product in `dtype` (None: `x.dtype`), written so by the kernel where it can."""
        if dtype is None or dtype == x.dtype:
            return self.linear(x, state)
        if self.linear_to is not None:
            return self.linear_to(x, state, dtype)
        return self.linear(x, state).to(dtype)


# Activations an Int8Linear can apply to its output (`Int8Linear.activation`), by name: exact (erf) GELU, the
# activation of BERT-style feed-forward blocks.
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"gelu": F.gelu}


# Reference: dequantize the weights on every call and fake-quantize the activations. Works wherever PyTorch
# works (on CUDA in the activations' fp16/bf16), and defines what the fast kernels must match.


@dataclass(frozen=True)
class _ReferenceState:
    weight: torch.Tensor
    weight_scale: torch.Tensor
    bias: torch.Tensor | None
    reduce_range: bool


def _reference_prepare(weight, weight_scale, bias, device) -> _ReferenceState:
    return _ReferenceState(weight, weight_scale, bias, activation_reduce_range(device))


def reference_linear(x: torch.Tensor, state: _ReferenceState) -> torch.Tensor:
    # float32 on CPU (no fast half matmul there); the activations' own dtype on accelerators.
    compute = torch.float32 if x.device.type == "cpu" else x.dtype
    x_hat = fake_quantize_activation(x, state.reduce_range).to(compute)
    weight = dequantize_rows(state.weight, state.weight_scale, compute)
    bias = state.bias.to(compute) if state.bias is not None else None
    return F.linear(x_hat, weight, bias).to(x.dtype)


# fbgemm and oneDNN: PyTorch's dynamic int8 linear (`torch.ops.quantized.linear_dynamic`), fed with a weight packed
# from OUR int8 values and scales by one of its two x86 engines. The op finds the activations' min and max, picks
# the scale and zero point with the same `ChooseQuantizationParams` as `activation_qparams`, quantizes, multiplies
# in integers and rescales: nothing is computed twice on our side. The packed object remembers its engine, so the
# same op runs fbgemm's GEMM (AVX2 / AVX-512 VNNI) or oneDNN's (which uses AMX tiles where the CPU has them).
# The ops are deprecated with torch.ao.quantization, hence the availability checks.


def _dynamic_linear_available(engine: str) -> Callable[[torch.device], bool]:
    def available(device: torch.device) -> bool:
        return (
            device.type == "cpu"
            and engine in torch.backends.quantized.supported_engines
            and hasattr(torch.ops.quantized, "linear_dynamic")
        )

    return available


@dataclass(frozen=True)
class _DynamicLinearState:
    packed: Any  # torch.classes.quantized.LinearPackedParamsBase: the engine's own copy of the weights and bias
    reduce_range: bool


def _dynamic_linear_prepare(engine: str):
    def prepare(weight, weight_scale, bias, device) -> _DynamicLinearState:
        scale = weight_scale.float()
        # quantize_per_channel of the dequantized values gives back exactly our int8 values (|error| << 0.5).
        # Its deprecation warning is ours to act on (hence the reference kernel), not the user's.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*deprecated")
            qweight = torch.quantize_per_channel(
                dequantize_rows(weight, scale, torch.float32),
                scale.double(),
                torch.zeros_like(scale, dtype=torch.long),
                axis=0,
                dtype=torch.qint8,
            )
        bias = bias.float() if bias is not None else None
        # The packed format belongs to the engine active at packing time; pin ours rather than the default "x86"
        # engine, which decides by itself.
        previous = torch.backends.quantized.engine
        torch.backends.quantized.engine = engine
        try:
            packed = torch.ops.quantized.linear_prepack(qweight, bias)
        finally:
            torch.backends.quantized.engine = previous
        return _DynamicLinearState(packed, activation_reduce_range(device))

    return prepare


def _dynamic_linear(x: torch.Tensor, state: _DynamicLinearState) -> torch.Tensor:
    return torch.ops.quantized.linear_dynamic(x.float(), state.packed, state.reduce_range).to(x.dtype)


# oneDNN costs more per call than fbgemm (about 0.1 ms, more when the input shape changes between calls), so small
# inputs such as one decoding step go to fbgemm. Crossover measured at 16-64 rows for K=768, N=768..3072 (1 thread,
# AMX CPU): oneDNN 1.5-2x slower at 1-4 rows, 1.5-2.5x faster from 64 rows on.
ONEDNN_MIN_ROWS = 32

# With an activation to apply, the oneDNN kernel quantizes the input itself and calls oneDNN's int8 linear on uint8
# input (`torch.ops.onednn.qlinear_pointwise`, the op torch.compile's x86 int8 path uses), which applies GELU to the
# float output in the same pass: measured on bert-base's FFN input projection (M=1024, K=768, N=3072, AMX CPU, busy
# machine), quantize + fused product took about as long as linear_dynamic alone, and the separate GELU pass over the
# 1024 x 3072 output is gone. _ONEDNN_POST_OPS maps ACTIVATIONS names to its post-op name and algorithm.
_ONEDNN_POST_OPS = {"gelu": ("gelu", "none")}


def _onednn_qlinear_available() -> bool:
    return hasattr(torch.ops.onednn, "qlinear_pointwise") and hasattr(torch.ops.onednn, "qlinear_prepack")


def quantize_to_uint8(x: torch.Tensor, reduce_range: bool) -> tuple[torch.Tensor, float, int]:
    """(uint8 levels, scale, zero point) of a 2-d float tensor under the scheme (`activation_qparams`).

    The levels come from torch.quantize_per_tensor, whose quint8 storage is read as plain uint8 without a copy.
    """
    low, high = torch.aminmax(x)  # one pass; the qparams only depend on min and max
    scale, zero_point, _ = activation_qparams(torch.stack([low, high]), reduce_range)
    scale, zero_point = float(scale), int(zero_point)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*deprecated")
        quantized = torch.quantize_per_tensor(x, scale, zero_point, torch.quint8)
    levels = torch.empty(0, dtype=torch.uint8, device=x.device)
    levels.set_(quantized.untyped_storage(), quantized.storage_offset(), quantized.shape, quantized.stride())
    return levels, scale, zero_point


class _OnednnState:
    """oneDNN's packed weights for linear_dynamic, fbgemm's for inputs under ONEDNN_MIN_ROWS rows, and oneDNN's for
    qlinear_pointwise (fused activations); each packed on first need."""

    def __init__(self, weight, weight_scale, bias, device) -> None:
        self._source = (weight, weight_scale, bias, device)
        self.reduce_range = activation_reduce_range(device)
        self._large: _DynamicLinearState | None = None
        self._small: _DynamicLinearState | None = None
        self._static: tuple | None = None

    def large(self) -> _DynamicLinearState:
        if self._large is None:
            self._large = _dynamic_linear_prepare("onednn")(*self._source)
        return self._large

    def small(self) -> _DynamicLinearState:
        if self._small is None:
            fbgemm = _dynamic_linear_available("fbgemm")(torch.device("cpu"))
            self._small = _dynamic_linear_prepare("fbgemm")(*self._source) if fbgemm else self.large()
        return self._small

    def static(self) -> tuple:
        """(packed int8 weight, float32 scales, zero points, float32 bias) for qlinear_pointwise."""
        if self._static is None:
            weight, weight_scale, bias, _ = self._source
            packed = torch.ops.onednn.qlinear_prepack(weight.contiguous(), None)
            zero_points = torch.zeros(weight.shape[0], dtype=torch.long)
            self._static = (packed, weight_scale.float(), zero_points, None if bias is None else bias.float())
        return self._static


def _onednn_linear(x: torch.Tensor, state: _OnednnState) -> torch.Tensor:
    rows = x.numel() // x.shape[-1]
    return _dynamic_linear(x, state.large() if rows >= ONEDNN_MIN_ROWS else state.small())


def _onednn_linear_activation(x: torch.Tensor, state: _OnednnState, activation: str) -> torch.Tensor:
    rows = x.numel() // x.shape[-1]
    if rows < ONEDNN_MIN_ROWS or activation not in _ONEDNN_POST_OPS or not _onednn_qlinear_available():
        return ACTIVATIONS[activation](_onednn_linear(x, state))
    return _onednn_qlinear(x, state, torch.float32, *_ONEDNN_POST_OPS[activation]).to(x.dtype)


def _onednn_linear_to(x: torch.Tensor, state: _OnednnState, dtype: torch.dtype) -> torch.Tensor:
    """The product written in `dtype` by oneDNN (bfloat16: half the bytes, and no conversion pass after it)."""
    rows = x.numel() // x.shape[-1]
    if rows < ONEDNN_MIN_ROWS or dtype not in _ONEDNN_OUTPUT_DTYPES or not _onednn_qlinear_available():
        return _onednn_linear(x, state).to(dtype)
    return _onednn_qlinear(x, state, dtype, "none", "")


# What oneDNN's int8 linear writes its output in besides float32.
_ONEDNN_OUTPUT_DTYPES = (torch.float32, torch.bfloat16)


def _onednn_qlinear(x: torch.Tensor, state: _OnednnState, dtype: torch.dtype, post_op: str,
                    algorithm: str) -> torch.Tensor:
    """oneDNN's int8 linear on `x` quantized here under the scheme, with a post-op, written in `dtype`."""
    rows = x.numel() // x.shape[-1]
    x2d = x.reshape(rows, x.shape[-1]).float().contiguous()
    levels, scale, zero_point = quantize_to_uint8(x2d, state.reduce_range)
    packed, weight_scale, weight_zero_points, bias = state.static()
    out = torch.ops.onednn.qlinear_pointwise(
        levels, scale, zero_point, packed, weight_scale, weight_zero_points, bias,
        1.0, 0, dtype, post_op, [], algorithm,
    )  # fmt: skip
    return out.reshape(*x.shape[:-1], out.shape[-1])


# CUDA: torch._int_mm (int8 x int8 -> int32, cuBLASLt). UNVERIFIED ON A GPU: the maths is tested on CPU with an
# exact integer matmul standing in for torch._int_mm (tests/test_quantization.py), the CUDA run is not.
# Asymmetric uint8 levels do not fit int8, so they are shifted by 128 and the shift is corrected with the weight
# row sums:  sum_k (q_k - z) w_nk = sum_k (q_k - 128) w_nk - (z - 128) * sum_k w_nk.


def _cuda_int_mm_available(device: torch.device) -> bool:
    return (
        device.type == "cuda"
        and hasattr(torch, "_int_mm")
        and torch.cuda.is_available()
        and torch.cuda.get_device_capability(device) >= (8, 0)
    )


@dataclass(frozen=True)
class _IntMMState:
    weight_t: torch.Tensor  # [in, out] view of the [out, in] int8 weight: the column-major operand _int_mm wants
    row_sum: torch.Tensor  # [out] int32, sum of each output channel's int8 weights
    weight_scale: torch.Tensor
    bias: torch.Tensor | None
    reference: _ReferenceState  # for shapes _int_mm does not take


def _int_mm_prepare(weight, weight_scale, bias, device) -> _IntMMState:
    return _IntMMState(
        weight_t=weight.t(),
        row_sum=weight.sum(dim=1, dtype=torch.int32),
        weight_scale=weight_scale.float(),
        bias=bias,
        reference=_reference_prepare(weight, weight_scale, bias, device),
    )


def _int_mm_shapes_ok(rows: int, in_features: int, out_features: int) -> bool:
    # cuBLASLt int8 GEMM via torch._int_mm: more than 16 rows, inner and output sizes multiples of 8.
    return rows > 16 and in_features % 8 == 0 and out_features % 8 == 0


def int_mm_linear(x: torch.Tensor, state: _IntMMState, int_mm: Callable | None = None) -> torch.Tensor:
    """The `_int_mm` kernel; `int_mm` (default `torch._int_mm`) is replaceable to test the arithmetic on CPU."""
    int_mm = int_mm or torch._int_mm
    x2d = x.reshape(-1, x.shape[-1])
    in_features, out_features = state.weight_t.shape
    if not _int_mm_shapes_ok(x2d.shape[0], in_features, out_features):
        return reference_linear(x, state.reference)
    levels, scale, zero_point = quantize_activation(x2d, reduce_range=False)
    shifted = (levels - 128).to(torch.int8)
    accumulator = int_mm(shifted, state.weight_t)
    corrected = accumulator.float() - (zero_point - 128) * state.row_sum.float()
    out = corrected.mul_(scale * state.weight_scale)
    if state.bias is not None:
        out = out.add_(state.bias.float())
    return out.to(x.dtype).reshape(*x.shape[:-1], out_features)


KERNELS: dict[str, Int8Kernel] = {
    kernel.name: kernel
    for kernel in (
        Int8Kernel(
            "onednn", _dynamic_linear_available("onednn"), _OnednnState, _onednn_linear, _onednn_linear_activation,
            _onednn_linear_to,
        ),
        Int8Kernel("fbgemm", _dynamic_linear_available("fbgemm"), _dynamic_linear_prepare("fbgemm"), _dynamic_linear),
        Int8Kernel("cuda_int_mm", _cuda_int_mm_available, _int_mm_prepare, int_mm_linear),
        Int8Kernel("reference", lambda device: True, _reference_prepare, reference_linear),
    )
}

def _always() -> bool:
    return True


# Preference order per device type when nothing is forced: the first kernel that is available and whose CPU
# condition holds wins. oneDNN's GEMM runs on AMX tiles where the CPU has them: one bert-base layer's Linear
# products 2.7-3x faster than fbgemm's on a 2-core Sapphire Rapids-class Xeon (benchmarks/int8_profile.py).
# Without AMX, fbgemm stays first: it is the portable path, and oneDNN without AMX has not been measured faster
# (an earlier AMD EPYC run found torch's "x86" engine, which may pick oneDNN, no faster than fbgemm).
_PREFERRED: dict[str, tuple[tuple[str, Callable[[], bool]], ...]] = {
    "cpu": (("onednn", _cpu_has_amx_int8), ("fbgemm", _always), ("reference", _always)),
    "cuda": (("cuda_int_mm", _always), ("reference", _always)),
}


def select_kernel(device: torch.device | str, requested: str = AUTO) -> Int8Kernel:
    """The kernel that runs an Int8Linear on `device`: the ONE place where that choice is made.

    `requested` (an Int8Linear's `kernel` attribute) names a kernel or is "auto"; for "auto" the environment
    variable DISTILKIT_INT8_KERNEL can name one, otherwise the fastest available for the device type is used.
    Naming a kernel that cannot run on `device` is an error rather than a silent substitution.
    """
    if requested == AUTO:
        requested = os.environ.get(KERNEL_ENV, AUTO) or AUTO
    return _select_kernel(torch.device(device), requested)


@functools.lru_cache(maxsize=64)  # called on every forward of every Int8Linear
def _select_kernel(device: torch.device, requested: str) -> Int8Kernel:
    if requested != AUTO:
        kernel = KERNELS.get(requested)
        if kernel is None:
            raise ValueError(f"Unknown int8 kernel {requested!r}; choose one of {sorted(KERNELS)} or 'auto'.")
        if not kernel.available(device):
            raise ValueError(f"The int8 kernel {requested!r} cannot run on {device} with this PyTorch build.")
        return kernel
    for name, condition in _PREFERRED.get(device.type, ()):
        if condition() and KERNELS[name].available(device):
            return KERNELS[name]
    return KERNELS["reference"]

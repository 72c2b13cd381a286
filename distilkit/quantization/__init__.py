"""Int8 quantization: int8 Linear layers with run-time activation quantization, int8 embeddings, save and reload.

    model = distilkit.quantization.quantize_int8(model, quantize_embeddings=True)
    distilkit.save_pretrained(model, "out")            # int8 weights + float scales in safetensors
    model = distilkit.from_pretrained("out")           # the same int8 model back

`quantize_int8` is distilkit's own dynamic int8 (not `torch.ao.quantization.quantize_dynamic`): plain int8 and
scale buffers that save to safetensors, kernels chosen per CPU (`select_kernel`). Modules: kernels (the scheme
and the kernels that run it), layer (`Int8Linear`, `Int8Embedding`, run-time groups), attention (what the
attention products run in: bfloat16 where the CPU is fast at it), model (rewriting a model, restoring a saved one).
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .attention import set_attention
    from .kernels import select_kernel
    from .layer import Int8Embedding, Int8Linear
    from .model import quantize_int8, select_modules

_EXPORTS = {
    "select_kernel": "kernels",
    "Int8Embedding": "layer",
    "Int8Linear": "layer",
    "quantize_int8": "model",
    "select_modules": "model",
    "set_attention": "attention",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["Int8Embedding", "Int8Linear", "quantize_int8", "select_kernel", "select_modules", "set_attention"]

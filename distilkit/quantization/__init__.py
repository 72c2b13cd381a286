"""Int8 quantization: int8 Linear layers with run-time activation quantization, int8 embeddings, save and reload.

    model = distilkit.quantization.quantize_dynamic(model, quantize_embeddings=True)
    model.save_pretrained("out")                      # int8 weights + float scales in safetensors
    model = distilkit.from_pretrained("out")           # the same int8 model back
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .kernels import KERNEL_ENV, KERNELS, activation_reduce_range, select_kernel
    from .layer import Int8Embedding, Int8Linear, SharedInputGroup, quantize_rows
    from .model import quantize_dynamic, restore_quantization, select_modules, task_head_names

_EXPORTS = {
    "KERNEL_ENV": "kernels",
    "KERNELS": "kernels",
    "activation_reduce_range": "kernels",
    "select_kernel": "kernels",
    "Int8Embedding": "layer",
    "Int8Linear": "layer",
    "SharedInputGroup": "layer",
    "quantize_rows": "layer",
    "quantize_dynamic": "model",
    "restore_quantization": "model",
    "select_modules": "model",
    "task_head_names": "model",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "KERNELS",
    "KERNEL_ENV",
    "Int8Embedding",
    "Int8Linear",
    "SharedInputGroup",
    "activation_reduce_range",
    "quantize_dynamic",
    "quantize_rows",
    "restore_quantization",
    "select_kernel",
    "select_modules",
    "task_head_names",
]

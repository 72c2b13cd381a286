"""Int8 quantization: int8 Linear layers with run-time activation quantization, int8 embeddings, save and reload.

    model = distilkit.quantization.quantize_dynamic(model, quantize_embeddings=True)
    model.save_pretrained("out")                      # int8 weights + float scales in safetensors
    model = distilkit.from_pretrained("out")           # the same int8 model back
"""

from .kernels import KERNEL_ENV, KERNELS, activation_reduce_range, select_kernel
from .layer import Int8Embedding, Int8Linear, quantize_rows
from .model import quantize_dynamic, restore_quantization, select_modules, task_head_names

__all__ = [
    "KERNELS",
    "KERNEL_ENV",
    "Int8Embedding",
    "Int8Linear",
    "activation_reduce_range",
    "quantize_dynamic",
    "quantize_rows",
    "restore_quantization",
    "select_kernel",
    "select_modules",
    "task_head_names",
]

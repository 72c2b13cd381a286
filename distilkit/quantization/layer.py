"""The modules that replace nn.Linear and nn.Embedding in a quantized model.

Both keep their int8 values and float scales as ordinary buffers, so `state_dict()`, `save_pretrained` and
safetensors see plain tensors (`weight` int8, `weight_scale` float32, `bias` float) and no pickled objects.
Whatever a kernel derives from them to run fast (fbgemm's packed weights) lives in a private cache that is never
part of the state dict, and is rebuilt whenever the buffers change: after `load_state_dict`, `.to(...)`, or any
in-place edit (tracked by the tensors' version counters).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .kernels import AUTO, WEIGHT_QMAX, dequantize_rows, select_kernel


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 quantization with one scale per row: (int8 values, float32 scales).

    A row is an output channel of a Linear layer or a token of an embedding matrix. All-zero rows get scale 1,
    so no scale is zero and dequantization stays exact for them.
    """
    weight = weight.detach().float()
    absmax = weight.abs().amax(dim=-1) if weight.shape[-1] else weight.new_zeros(weight.shape[:-1])
    scale = torch.where(absmax > 0, absmax / WEIGHT_QMAX, torch.ones_like(absmax))
    values = torch.round(weight / scale.unsqueeze(-1)).clamp_(-WEIGHT_QMAX, WEIGHT_QMAX).to(torch.int8)
    return values, scale


def _tensor_key(tensor: torch.Tensor | None) -> tuple:
    """Identifies a tensor's current contents: storage, dtype and in-place version.

    Tensors created under torch.inference_mode() have no version counter; they can only be changed in place
    inside inference mode, which this key then does not notice.
    """
    if tensor is None:
        return ()
    version = None if tensor.is_inference() else tensor._version
    return (tensor.data_ptr(), version, tensor.dtype)


class Int8Linear(nn.Module):
    """A Linear layer with int8 weights (per-output-channel scales) and activations quantized at run time.

    The scheme is described in `distilkit.quantization.kernels`; `kernel` names the kernel that runs it ("auto":
    the fastest available, see `select_kernel`). Inference only: the buffers carry no gradients.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        bias_dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        kernel: str = AUTO,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.kernel = kernel
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("weight_scale", torch.ones(out_features, dtype=torch.float32, device=device))
        bias_tensor = torch.zeros(out_features, dtype=bias_dtype, device=device) if bias else None
        self.register_buffer("bias", bias_tensor)
        self._cache: tuple[tuple, object] | None = None

    @classmethod
    def from_linear(cls, linear: nn.Linear, kernel: str = AUTO) -> Int8Linear:
        """Quantize a float nn.Linear."""
        module = cls.like(linear, kernel)
        values, scale = quantize_rows(linear.weight)
        module.weight.copy_(values)
        module.weight_scale.copy_(scale)
        if linear.bias is not None:
            module.bias.copy_(linear.bias.detach())
        return module

    @classmethod
    def like(cls, linear: nn.Linear, kernel: str = AUTO) -> Int8Linear:
        """An empty Int8Linear shaped like `linear`, to be filled by `load_state_dict` (no quantization work)."""
        return cls(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            bias_dtype=linear.weight.dtype,
            device=linear.weight.device,
            kernel=kernel,
        )

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return dequantize_rows(self.weight, self.weight_scale, dtype)

    def _kernel_state(self, kernel, device: torch.device):
        key = (kernel.name, device, _tensor_key(self.weight), _tensor_key(self.weight_scale), _tensor_key(self.bias))
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, kernel.prepare(self.weight, self.weight_scale, self.bias, device))
        return self._cache[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() == 0 or self.weight.numel() == 0:
            # Nothing to multiply: an empty batch, or a projection whose attention heads were all pruned
            # (0 output features, or 0 input features, where the output is just the bias).
            out = x.new_zeros(*x.shape[:-1], self.out_features)
            return out + self.bias.to(x.dtype) if self.bias is not None else out
        kernel = select_kernel(x.device, self.kernel)
        return kernel.linear(x, self._kernel_state(kernel, x.device))

    def __getstate__(self):
        # Packed kernel state is derived data (and fbgemm's may not pickle): copies and pickles rebuild it.
        state = self.__dict__.copy()
        state["_cache"] = None
        return state

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"kernel={self.kernel}"
        )


class Int8Embedding(nn.Module):
    """An embedding matrix stored as int8 rows with one float scale per row (weight-only quantization).

    Looking up a token dequantizes only its row, so this costs no speed; it exists to shrink the file and the
    memory of models whose vocabulary is a large share of the weights (half of MiniLM-L6).
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: int | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.padding_idx = padding_idx
        self.register_buffer("weight", torch.zeros(num_embeddings, embedding_dim, dtype=torch.int8, device=device))
        self.register_buffer("weight_scale", torch.ones(num_embeddings, dtype=dtype, device=device))

    @classmethod
    def from_embedding(cls, embedding: nn.Embedding) -> Int8Embedding:
        """Quantize a float nn.Embedding; outputs keep its dtype."""
        module = cls.like(embedding)
        values, scale = quantize_rows(embedding.weight)
        module.weight.copy_(values)
        module.weight_scale.copy_(scale)
        return module

    @classmethod
    def like(cls, embedding: nn.Embedding) -> Int8Embedding:
        """An empty Int8Embedding shaped like `embedding`, to be filled by `load_state_dict`."""
        weight = embedding.weight
        return cls(
            embedding.num_embeddings, embedding.embedding_dim, embedding.padding_idx, weight.dtype, weight.device
        )

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        rows = F.embedding(input_ids, self.weight)
        return rows.to(self.weight_scale.dtype) * F.embedding(input_ids, self.weight_scale.unsqueeze(-1))

    def extra_repr(self) -> str:
        text = f"{self.num_embeddings}, {self.embedding_dim}"
        return text + (f", padding_idx={self.padding_idx}" if self.padding_idx is not None else "")

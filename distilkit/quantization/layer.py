"""The modules that replace nn.Linear and nn.Embedding in a quantized model.

Both keep their int8 values and float scales as ordinary buffers, so `state_dict()`, `save_pretrained` and
safetensors see plain tensors (`weight` int8, `weight_scale` float32, `bias` float) and no pickled objects.
Whatever a kernel derives from them to run fast (fbgemm's packed weights) lives in a private cache that is never
part of the state dict, and is rebuilt whenever the buffers change: after `load_state_dict`, `.to(...)`, or any
in-place edit (tracked by the tensors' version counters).

Int8Linears that always read the same input (an attention block's query, key and value projections) can be
linked in a `SharedInputGroup`, which runs them as one int8 product: the activation is quantized once and one
GEMM with all their output channels replaces three. The link is run-time state too; each module keeps and saves
its own buffers. So is `Int8Linear.activation`, an activation applied to the output (fused into the product where
the kernel can): `distilkit.quantization.model.fuse_activations` moves a feed-forward block's GELU there.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .kernels import ACTIVATIONS, AUTO, WEIGHT_QMAX, dequantize_rows, select_kernel


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
    the fastest available, see `select_kernel`). `activation` (None or a name in kernels.ACTIVATIONS) is applied to
    the output, by the kernel when it can fuse it. Inference only: the buffers carry no gradients.
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
        self._shared_input_group: SharedInputGroup | None = None
        self.activation: str | None = None

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
            out = out + self.bias.to(x.dtype) if self.bias is not None else out
            activation = getattr(self, "activation", None)
            return ACTIVATIONS[activation](out) if activation is not None else out
        kernel = select_kernel(x.device, self.kernel)
        activation = getattr(self, "activation", None)  # getattr: modules pickled before these attributes existed
        group = getattr(self, "_shared_input_group", None)
        if activation is None and group is not None and group.enabled:
            return group.run(self, x, kernel)
        if activation is None:
            return kernel.linear(x, self._kernel_state(kernel, x.device))
        if kernel.linear_activation is not None:
            return kernel.linear_activation(x, self._kernel_state(kernel, x.device), activation)
        return ACTIVATIONS[activation](kernel.linear(x, self._kernel_state(kernel, x.device)))

    def __getstate__(self):
        # Packed kernel state is derived data (and fbgemm's may not pickle): copies and pickles rebuild it.
        state = self.__dict__.copy()
        state["_cache"] = None
        return state

    def extra_repr(self) -> str:
        activation = f", activation={self.activation}" if getattr(self, "activation", None) else ""
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"kernel={self.kernel}{activation}"
        )


class _Pending:
    """The outputs of a group's product that its other members have not collected yet, and the input they are for."""

    def __init__(self, x: torch.Tensor, outputs: dict[Int8Linear, torch.Tensor]) -> None:
        self.input = x
        self.version = _version(x)
        self.outputs = outputs


def _version(tensor: torch.Tensor) -> int | None:
    return None if tensor.is_inference() else tensor._version


class SharedInputGroup:
    """Int8Linears called on the same input tensor, run as ONE int8 product (same scheme; the same results up to
    float rounding in the rescaling).

    The first member called with an input computes the product for all members, with their int8 rows, scales and
    biases concatenated (so the activation is quantized once, with the qparams each member would have chosen on
    its own); the others then collect their slice of it when called with that same tensor object, unchanged
    (same in-place version). The output slices are views of the joint output.

    Anything else falls back to separate products, so results never depend on the grouping: a member called with
    a different input while results are waiting disables the group for good (its members do not share inputs
    after all), and members set to different kernels run on their own. Tensors created under
    torch.inference_mode() have no version counter, so an in-place change of the input between two members' calls
    goes unnoticed there; attention blocks do not do that.

    `output_dtype` (None: the input's dtype): what the members' outputs are written in for float32 CPU inputs, while
    `output_config._attn_implementation` (the model's config) is `output_attention`. With bfloat16 attention products
    (`distilkit.quantization.attention`), query, key and value are rounded to bfloat16 anyway; writing them so from
    the int8 product saves a conversion pass over each. The check is made on every call, so a model switched to
    another attention implementation by transformers' own `set_attn_implementation` gets float32 again.
    """

    def __init__(self, members: Sequence[Int8Linear]) -> None:
        self.members = tuple(members)
        self.enabled = True
        self.output_dtype: torch.dtype | None = None
        self.output_config = None
        self.output_attention: str | None = None
        self._cache: tuple[tuple, object] | None = None
        self._local = threading.local()  # waiting results are per thread: threads may share a model

    def write_as(self, dtype: torch.dtype | None, config=None, attention: str | None = None) -> None:
        """Write float32 inputs' products in `dtype` while `config._attn_implementation == attention` (None: as
        the input)."""
        self.output_dtype, self.output_config, self.output_attention = dtype, config, attention

    def _output_dtype(self, x: torch.Tensor) -> torch.dtype | None:
        dtype = getattr(self, "output_dtype", None)
        if dtype is None or x.dtype != torch.float32 or x.device.type != "cpu":
            return None
        return dtype if getattr(self.output_config, "_attn_implementation", None) == self.output_attention else None

    def wrote(self) -> torch.dtype | None:
        """The dtype this thread's last product of the group was written in by `output_dtype` (None: as the input):
        what the attention reads to give a float32 model its float32 output back."""
        return getattr(self._local, "wrote", None)

    @staticmethod
    def can_group(members: Sequence[nn.Module]) -> bool:
        """Whether `members` can run as one product: two or more non-empty Int8Linears of one input width, without
        activations, all with or all without a bias of one dtype, on one device."""
        if len(members) < 2 or not all(
            isinstance(m, Int8Linear) and getattr(m, "activation", None) is None for m in members
        ):
            return False
        first = members[0]
        biases = {(m.bias is None, None if m.bias is None else m.bias.dtype) for m in members}
        return (
            len(set(map(id, members))) == len(members)
            and all(m.in_features == first.in_features and m.weight.numel() > 0 for m in members)
            and len(biases) == 1
            and len({m.weight.device for m in members}) == 1
        )

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_cache"] = None
        del state["_local"]
        return state

    def __setstate__(self, state) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def _kernel_state(self, kernel, device: torch.device):
        key = (kernel.name, device) + tuple(
            _tensor_key(t) for m in self.members for t in (m.weight, m.weight_scale, m.bias)
        )
        if self._cache is None or self._cache[0] != key:
            bias = None if self.members[0].bias is None else torch.cat([m.bias for m in self.members])
            weight = torch.cat([m.weight for m in self.members])
            scale = torch.cat([m.weight_scale for m in self.members])
            self._cache = (key, kernel.prepare(weight, scale, bias, device))
        return self._cache[1]

    def run(self, member: Int8Linear, x: torch.Tensor, kernel) -> torch.Tensor:
        pending = getattr(self._local, "pending", None)
        if pending is not None:
            if pending.input is x and member in pending.outputs and pending.version == _version(x):
                out = pending.outputs.pop(member)
                if not pending.outputs:
                    self._local.pending = None
                return out
            self._local.pending = None
            if pending.outputs and pending.input is not x:
                self.enabled = False  # results were waiting for another input: the members do not share inputs
        dtype = self._output_dtype(x)
        self._local.wrote = dtype
        if self.enabled and all(m.kernel == member.kernel for m in self.members):
            joint = kernel.linear_in(x, self._kernel_state(kernel, x.device), dtype)
            outputs = dict(zip(self.members, joint.split([m.out_features for m in self.members], dim=-1)))
            mine = outputs.pop(member)
            self._local.pending = _Pending(x, outputs)
            return mine
        return kernel.linear_in(x, member._kernel_state(kernel, x.device), dtype)


def activation_name(module: nn.Module) -> str | None:
    """The kernels.ACTIVATIONS name of an activation module that computes exactly that function, else None.

    Exact (erf) GELU only: torch's nn.GELU() and transformers' GELUActivation (config `hidden_act="gelu"`), whose
    forward is torch.nn.functional.gelu; tanh approximations and Python re-implementations stay where they are.
    """
    if type(module) is nn.GELU and module.approximate == "none":
        return "gelu"
    is_transformers_gelu = type(module).__name__ == "GELUActivation" and type(module).__module__.startswith(
        "transformers."
    )
    if is_transformers_gelu and getattr(module, "act", None) is F.gelu:
        return "gelu"
    return None


class FusedActivation(nn.Identity):
    """Stands where an activation module was, once the preceding Int8Linear applies it (`Int8Linear.activation`).

    Keeps the original module (outside the module tree: it holds no state) so the move can be undone.
    """

    def __init__(self, original: nn.Module, name: str) -> None:
        super().__init__()
        self.activation = name
        self._original = (original,)

    @property
    def original(self) -> nn.Module:
        return self._original[0]

    def extra_repr(self) -> str:
        return f"{self.activation}, applied by the Int8Linear before it"


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

"""Random-weight twins: a model of exactly a given `ModelShape`, built from a config, and its exact weight size.

Speed and size depend on a model's shape, not on its weights' values, so the cost of a compression plan can be
measured on a twin with random weights instead of compressing the real model. A twin is made the way distilkit
makes the real thing: the sequence-classification model of the config with the shape's number of layers,
structurally pruned (`distilkit.pruning`) down to the shape's head and neuron counts (which ones does not matter
for cost: the last ones go), then quantized (`distilkit.quantization.quantize_int8`) when the shape is int8.
"""

from __future__ import annotations

import copy
import functools
from contextlib import nullcontext

import torch
from transformers import AutoModelForSequenceClassification, PretrainedConfig, PreTrainedModel

from ..architectures import get_architecture
from ..pruning.structural import prune_ffn, prune_heads
from ..quantization.model import quantize_int8
from ..serialization.format import CONFIG_KEY, base_config_class
from ..student import every_kth_layer
from .shape import ModelShape


def twin_config(config: PretrainedConfig, num_layers: int) -> PretrainedConfig:
    """A copy of `config` for an uncompressed model of `num_layers` layers: compression records dropped, per-layer
    lists such as Qwen2's layer_types following evenly spaced layers (as `student_from_teacher` keeps), and a
    padding token (0) where the config has none, so any batch runs."""
    original_layers = int(config.num_hidden_layers)
    twin = copy.deepcopy(config)
    twin.__class__ = base_config_class(type(config))
    if hasattr(twin, CONFIG_KEY):
        delattr(twin, CONFIG_KEY)
    twin.num_hidden_layers = num_layers
    twin._attn_implementation_internal = None  # the default one, not the teacher's (see random_twin)
    if getattr(twin, "pad_token_id", None) is None:
        # Decoder families' classification heads need one to find each row's last token once batch size > 1.
        twin.pad_token_id = 0
    layer_types = getattr(twin, "layer_types", None)
    if isinstance(layer_types, list) and len(layer_types) == original_layers:
        twin.layer_types = [layer_types[i] for i in every_kth_layer(original_layers, num_layers)]
    return twin


def random_twin(config: PretrainedConfig, shape: ModelShape, device: str | torch.device = "cpu") -> PreTrainedModel:
    """A float32 model with random weights and exactly `shape` (in eval mode), for a config of any family in
    `distilkit.architectures`. `device="meta"` builds it without allocating weights (for sizes). Its attention
    implementation is the one a saved model is loaded with by default (sdpa where the family supports it), as the
    compressed model will be deployed, whatever the teacher was loaded with (eager, for attention distillation).

    Raises ValueError for an unsupported model type (naming the supported ones) or a shape the config cannot have.
    """
    spec = get_architecture(config)
    shape.check_fits(config)
    on_meta = torch.device(device).type == "meta"
    with torch.device(device), nullcontext() if on_meta else _no_init_weights():
        model = AutoModelForSequenceClassification.from_config(twin_config(config, shape.num_layers),
                                                               dtype=torch.float32)
    if not on_meta:
        _fill_like_init(model)
    num_heads = int(getattr(config, spec.heads_attr))
    width = int(getattr(config, spec.ffn_width_attr))
    prune_heads(model, {layer: range(kept, num_heads) for layer, kept in enumerate(shape.heads) if kept < num_heads})
    prune_ffn(model, {layer: range(kept, width) for layer, kept in enumerate(shape.ffn) if kept < width})
    if shape.int8:
        quantize_int8(model, quantize_embeddings=shape.int8_embeddings)
    return model.eval()


def _no_init_weights():
    """transformers' context that skips weight initialisation (`_fill_like_init` fills the weights instead: drawing
    them costs most of building a twin); no context where this transformers lacks it."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # pragma: no cover - other transformers versions
        return nullcontext()
    return no_init_weights()


@functools.lru_cache(maxsize=1)
def _value_pool() -> torch.Tensor:
    """2^20 values drawn once from N(0, 0.02²) (transformers' usual weight init), with a fixed seed."""
    return torch.randn(1 << 20, generator=torch.Generator().manual_seed(0)) * 0.02


@torch.no_grad()
def _fill_like_init(model: torch.nn.Module) -> None:
    """Every parameter set to values of the kind transformers' init gives: matrices N(0, 0.02²)-distributed (copied
    from one pool of values, each parameter from where the last one stopped, which is fast), biases 0, norm
    weights 1. Latency depends on shapes, not on these values, as long as they are ordinary floats (uninitialised
    memory may hold NaNs or subnormals, which run slower)."""
    pool = _value_pool()
    offset = 0
    for name, parameter in model.named_parameters():
        if name.endswith("bias"):
            parameter.zero_()
        elif parameter.dim() < 2:
            parameter.fill_(1.0)
        else:
            flat, done = parameter.view(-1), 0
            while done < flat.numel():
                count = min(flat.numel() - done, pool.numel() - offset)
                flat[done:done + count].copy_(pool[offset:offset + count])
                done, offset = done + count, (offset + count) % pool.numel()


def twin_attention(config: PretrainedConfig) -> dict[str, str]:
    """What `config`'s twins run their attention with, for the latency cache key: the attention implementation
    `random_twin` gives them, and what the int8 twins' attention products run in on this machine (`quantize_int8`'s
    "auto", see `distilkit.quantization.attention`), with "int8_qkv" where their query/key/value product writes
    bfloat16 for those (BERT-style families; int8 twins measured before it did ran slower, so their timings are not
    reused; no key otherwise, so other caches stay valid). One twin on the meta device: nothing is allocated."""
    from ..quantization.attention import AUTO, resolve_attention

    spec = get_architecture(config)
    shape = ModelShape((int(getattr(config, spec.heads_attr)),), (1,))
    twin = random_twin(config, shape, device="meta")
    facts = {"attn_implementation": twin.config._attn_implementation, "int8_attention": resolve_attention(twin, AUTO)}
    if facts["int8_attention"] == "bfloat16" and spec.plain_qkv:
        facts["int8_qkv"] = "bfloat16"
    return facts


def size_bytes(config: PretrainedConfig, shape: ModelShape) -> int:
    """Exact bytes of the weights a model of `shape` saves (float32 values, or int8 values plus float32 scales and
    float biases): the state dict of its twin built on the meta device, so nothing is allocated. The saved file
    adds only its header (a few KB of tensor names and offsets)."""
    model = random_twin(config, shape, device="meta")
    tensors = {id(tensor): tensor for tensor in model.state_dict(keep_vars=True).values()}
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors.values())


def header_bytes(config: PretrainedConfig, shape: ModelShape) -> int:
    """Bytes of the safetensors header a saved model of `shape` carries before its weights (the length prefix and
    the JSON table of tensor names, dtypes, shapes and offsets): a few KB, which matters for small models."""
    import json

    from safetensors.torch import _TYPES

    model = random_twin(config, shape, device="meta")
    dtype_names = {dtype: name for name, dtype in _TYPES.items()}
    table, offset, seen = {"__metadata__": {"format": "pt"}}, 0, set()
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) in seen:  # a tied weight is saved once
            continue
        seen.add(id(tensor))
        size = tensor.numel() * tensor.element_size()
        table[name] = {"dtype": dtype_names.get(tensor.dtype, "F32"), "shape": list(tensor.shape),
                       "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(table, separators=(",", ":"))
    return 8 + len(text) + (-len(text)) % 8

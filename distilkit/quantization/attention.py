"""What an int8 model's attention products (query x key, probabilities x value) run in: `quantize_int8(model,
attention=...)`.

`quantize_int8` makes the Linear layers int8. What is left of a Transformer layer's cost is mostly the two attention
products, which ONNX Runtime's dynamic int8 quantizes too (to 8 bits, per tensor). On CPUs with AMX (Intel Sapphire
Rapids and later), PyTorch's CPU flash attention runs about twice as fast in bfloat16 as in float32 at bert-base's
shapes (batch 8 x 128), so distilkit can run them in bfloat16: query, key and value are rounded to bfloat16 (8
significant bits), the kernel accumulates and normalises in float32, and the output comes back as float32.

Choices: "auto" (the default: bfloat16 where the CPU has AMX-BF16, the model can take it and its attention heads
hold at least MIN_AUTO_HEAD_DIM values, as bert-base's do; float32 elsewhere, e.g. for MiniLM-L6's heads of 32,
where bfloat16 was not faster), "float32", "bfloat16".

Measured (benchmarks/results/int8_attention_accuracy.md): a fine-tuned MiniLM-L6 in int8 agreed with its float
predictions on 98.74% of SST-2 dev with bfloat16 attention and on 99.08% with float32 (accuracy 84.75% and 84.63%,
float 84.40%); on MRPC test, 98.14% and 98.43% (74.38%, 74.90%; float 74.72%). ONNX Runtime's int8 of the same
models agreed on 95.18% and 95.83%.

What "auto" comes to is decided when the model is quantized and kept in the quantization record (`"attention"`), so
a saved model reloads computing exactly what it computed; `set_attention(model, "auto")` decides again on another
machine. A folder saved before the choice existed runs float32, as it did. Only model families whose attention goes
through transformers' attention interface with the "sdpa" implementation take bfloat16 (BERT, RoBERTa, DistilBERT,
Llama-style; not MPNet, whose attention is its own); `quantize_int8` refuses an explicit "bfloat16" for the others.
transformers builds the padding mask by the attention implementation's name, so the name distilkit registers gets
sdpa's mask builder too. Exporting to ONNX traces the float attention (`distilkit.export`), and inputs that are not
float32 on a CPU pass through unchanged.

Where the query, key and value projections reach the attention function only reshaped (`ArchitectureSpec.plain_qkv`:
BERT, RoBERTa, DistilBERT; not Llama-style models, whose rotary embedding comes between), the int8 product of the
three writes them in bfloat16 directly (`bf16_qkv`; oneDNN writes half the bytes, and the three conversion passes
are gone), whenever a float32 model on a CPU runs this attention implementation.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

logger = logging.getLogger(__name__)

BF16_SDPA = "distilkit_bf16_sdpa"  # the name registered in transformers' attention interface
AUTO = "auto"
ATTENTION_DTYPES = ("float32", "bfloat16")
ATTENTION_CHOICES = (AUTO, *ATTENTION_DTYPES)
# "auto" takes bfloat16 for heads of at least this size. Measured (benchmarks/results/cpu_engines_attention_ab.md,
# 30 interleaved rounds): bert-base (heads of 64) ran 2-8% faster with bfloat16 attention at batch 1 and 8, 1 and 2
# threads; MiniLM-L6 (heads of 32) from 6% slower to 2% faster, the conversions to and from bfloat16 costing about
# what the smaller products save.
MIN_AUTO_HEAD_DIM = 64


def _sdpa():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward


# Set on an attention module to the `layer.SharedInputGroup` that may write its query, key and value in bfloat16
# (`bf16_qkv`): where the group did (a float32 model), the attention output goes back to float32 all the same.
QKV_BF16_ATTR = "_distilkit_bf16_qkv"


def bf16_sdpa_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        attention_mask: torch.Tensor | None, **kwargs):
    """transformers' sdpa attention with query, key and value in bfloat16 (float32 CPU inputs, or bfloat16 ones
    written so by the int8 product of a float32 model), the output back in float32."""
    group = getattr(module, QKV_BF16_ATTR, None)
    written_bf16 = query.dtype == torch.bfloat16 and group is not None and group.wrote() == torch.bfloat16
    if not (query.dtype == torch.float32 or written_bf16) or query.device.type != "cpu":
        return _sdpa()(module, query, key, value, attention_mask, **kwargs)
    if attention_mask is not None and attention_mask.dtype.is_floating_point:
        attention_mask = attention_mask.to(torch.bfloat16)
    bf16 = torch.bfloat16
    output, weights = _sdpa()(module, query.to(bf16), key.to(bf16), value.to(bf16), attention_mask, **kwargs)
    return output.float(), weights


def _register() -> None:
    """Register the attention function under BF16_SDPA, and sdpa's mask builder under the same name: transformers
    builds the padding (and causal) mask by the attention implementation's name, and builds none for a name it does
    not know, so without it padded batches would attend to their padding."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(BF16_SDPA, bf16_sdpa_attention)
    AttentionMaskInterface.register(BF16_SDPA, sdpa_mask)


def check_attention(model: nn.Module, attention: str) -> None:
    """ValueError, naming what would be right, for an `attention` that is not one of ATTENTION_DTYPES or that
    `model`'s attention cannot take."""
    if attention not in ATTENTION_CHOICES:
        raise ValueError(f"attention={attention!r}: choose one of {list(ATTENTION_CHOICES)}.")
    if attention == "bfloat16" and not takes_bf16_attention(model):
        config = getattr(model, "config", None)
        raise ValueError(
            f"attention='bfloat16' needs a transformers model whose attention runs through its attention interface "
            f"with the 'sdpa' implementation; {type(model).__name__} (model_type "
            f"{getattr(config, 'model_type', None)!r}, attention {getattr(config, '_attn_implementation', None)!r}) "
            "does not. Use attention='float32'."
        )


def takes_bf16_attention(model: nn.Module) -> bool:
    config = getattr(model, "config", None)
    return bool(getattr(model, "_supports_attention_backend", False)) and \
        getattr(config, "_attn_implementation", None) in ("sdpa", BF16_SDPA)


def cpu_has_fast_bf16() -> bool:
    """AMX bfloat16 tiles, unless oneDNN is told to stay below them (where bfloat16 attention was measured faster)."""
    from .kernels import _cpu_has_amx

    return _cpu_has_amx("bf16")


def head_dim(model: nn.Module) -> int | None:
    """The model's attention head size, from its config (None where the config does not say)."""
    config = getattr(model, "config", None)
    size = getattr(config, "head_dim", None)
    if size:
        return int(size)
    hidden, heads = getattr(config, "hidden_size", None), getattr(config, "num_attention_heads", None)
    return hidden // heads if hidden and heads else None


def resolve_attention(model: nn.Module, attention: str) -> str:
    """The dtype `attention` means for `model` on this machine: "auto" becomes "bfloat16" where the CPU has AMX-BF16,
    the model takes it and its heads hold at least MIN_AUTO_HEAD_DIM values, "float32" elsewhere; the others stay."""
    if attention != AUTO:
        return attention
    fast = cpu_has_fast_bf16() and takes_bf16_attention(model) and (head_dim(model) or 0) >= MIN_AUTO_HEAD_DIM
    return "bfloat16" if fast else "float32"


def float_attention(implementation: str | None) -> str | None:
    """The float32 attention implementation behind `implementation` ("sdpa" for distilkit's bfloat16 one): what a
    float model compared with an int8 one runs."""
    return "sdpa" if implementation == BF16_SDPA else implementation


def bf16_qkv(model: nn.Module) -> int:
    """Where the family's projections reach the attention function unchanged (`ArchitectureSpec.plain_qkv`: BERT,
    RoBERTa, DistilBERT), have each layer's query/key/value int8 product (`layer.SharedInputGroup`) write bfloat16
    whenever the model runs BF16_SDPA on float32 CPU inputs (checked on every call, so switching the attention
    implementation by any route is followed), and point the attention module at the group; returns the number of
    such products. Run-time only; `quantization.model.group_shared_inputs` calls it."""
    from .layer import Int8Linear
    from .model import _spec_and_layers

    known = _spec_and_layers(model)
    if known is None:
        return 0
    spec, layers = known
    linked = 0
    for layer in layers:
        query = layer.get_submodule(spec.query)
        grouped = spec.plain_qkv and isinstance(query, Int8Linear)
        group = getattr(query, "_shared_input_group", None) if grouped else None
        if group is not None:
            group.write_as(torch.bfloat16, model.config, BF16_SDPA)
            linked += 1
        setattr(layer.get_submodule(spec.attention), QKV_BF16_ATTR, group)
    return linked


def set_attention(model: nn.Module, attention: str) -> str:
    """Run `model`'s attention products in `attention` (one of ATTENTION_CHOICES; `check_attention` first) and
    return the dtype they now run in: "float32" where transformers declined the switch (it only warns, e.g. for a
    model class whose source it cannot read), so that what is recorded is what runs."""
    check_attention(model, attention)
    attention = resolve_attention(model, attention)
    if attention == "bfloat16":
        _register()
        model.set_attn_implementation(BF16_SDPA)
        if model.config._attn_implementation != BF16_SDPA:
            logger.warning("transformers kept %s's attention implementation %r: its attention products run in "
                           "float32.", type(model).__name__, model.config._attn_implementation)
            return "float32"
    elif getattr(getattr(model, "config", None), "_attn_implementation", None) == BF16_SDPA:
        model.set_attn_implementation("sdpa")
    return attention

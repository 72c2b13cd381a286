"""Where each supported model family keeps its layers, attention heads, feed-forward blocks and projections.

This is the one place that knows module names. Everything that walks a model's structure (building a student
from a teacher, head and FFN pruning, ...) looks the family up here instead of testing model types itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class ArchitectureSpec:
    """Module paths for one model family.

    `layers` is relative to the base model (`model.base_model`); the attention and FFN paths are relative to one
    layer. The FFN's intermediate neurons are the output rows of every Linear in `ffn_in` (one for a plain FFN,
    gate and up projections for a gated one) and the input columns of the Linear `ffn_out`.
    """

    family: str
    model_types: tuple[str, ...]
    layers: str
    query: str
    key: str
    value: str
    output: str
    ffn_in: tuple[str, ...]
    ffn_out: str
    # Attribute of the config that holds the FFN's intermediate width (its number of neurons).
    ffn_width_attr: str = "intermediate_size"
    # Grouped-query attention: key/value heads are shared by groups of query heads.
    grouped_kv: bool = False
    # Attribute of the config that holds the number of attention heads.
    heads_attr: str = "num_attention_heads"
    # Attribute of the config that holds the number of key/value heads (read only when `grouped_kv`).
    kv_heads_attr: str = "num_key_value_heads"
    # Attribute of the attention module that holds the width of one head.
    head_dim_attr: str = "attention_head_size"
    # Attributes of the attention module that count heads, and that hold heads * head_dim. Head pruning keeps
    # them in step with the weights, because some forwards reshape with them.
    head_count_attrs: tuple[str, ...] = ()
    head_width_attrs: tuple[str, ...] = ()
    # Name of a forward argument of the attention module that carries a per-head bias [batch, heads, q, k]
    # computed once for all layers with the config's head count (MPNet's relative position bias). A pruned
    # layer must see only its kept heads' slice of it.
    per_head_bias_arg: str | None = None
    # Path (relative to one layer) of the activation module applied to the output of the single `ffn_in` Linear;
    # None for gated FFNs, whose activation applies to one of two products.
    ffn_activation: str | None = None
    # The query, key and value projections' outputs reach the attention function only reshaped (no rotary
    # embedding or norm in between), so an int8 model with bfloat16 attention products can have them written in
    # bfloat16 by the int8 product itself (`distilkit.quantization.attention`).
    plain_qkv: bool = False

    @property
    def attention(self) -> str:
        """Path of the module that owns the q/k/v projections (and the per-head bookkeeping)."""
        return self.query.rsplit(".", 1)[0]


ARCHITECTURES: dict[str, ArchitectureSpec] = {
    spec.family: spec
    for spec in (
        ArchitectureSpec(
            family="bert",
            model_types=("bert", "roberta", "xlm-roberta", "camembert"),
            layers="encoder.layer",
            query="attention.self.query",
            key="attention.self.key",
            value="attention.self.value",
            output="attention.output.dense",
            ffn_in=("intermediate.dense",),
            ffn_out="output.dense",
            head_count_attrs=("num_attention_heads",),
            head_width_attrs=("all_head_size",),
            ffn_activation="intermediate.intermediate_act_fn",
            plain_qkv=True,
        ),
        ArchitectureSpec(
            family="distilbert",
            model_types=("distilbert",),
            layers="transformer.layer",
            query="attention.q_lin",
            key="attention.k_lin",
            value="attention.v_lin",
            output="attention.out_lin",
            ffn_in=("ffn.lin1",),
            ffn_out="ffn.lin2",
            ffn_width_attr="hidden_dim",
            heads_attr="n_heads",
            head_count_attrs=("n_heads",),
            ffn_activation="ffn.activation",
            plain_qkv=True,
        ),
        ArchitectureSpec(
            family="mpnet",
            model_types=("mpnet",),
            layers="encoder.layer",
            query="attention.attn.q",
            key="attention.attn.k",
            value="attention.attn.v",
            output="attention.attn.o",
            ffn_in=("intermediate.dense",),
            ffn_out="output.dense",
            head_count_attrs=("num_attention_heads",),
            head_width_attrs=("all_head_size",),
            per_head_bias_arg="position_bias",
            ffn_activation="intermediate.intermediate_act_fn",
        ),
        ArchitectureSpec(
            family="llama",
            model_types=("llama", "qwen2", "qwen3", "mistral"),
            layers="layers",
            query="self_attn.q_proj",
            key="self_attn.k_proj",
            value="self_attn.v_proj",
            output="self_attn.o_proj",
            ffn_in=("mlp.gate_proj", "mlp.up_proj"),
            ffn_out="mlp.down_proj",
            grouped_kv=True,
            head_dim_attr="head_dim",
        ),
    )
}

SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(t for spec in ARCHITECTURES.values() for t in spec.model_types)


def get_architecture(model_or_config) -> ArchitectureSpec:
    """The spec for a model (or its config); a clear error names the supported model types otherwise."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    for spec in ARCHITECTURES.values():
        if model_type in spec.model_types:
            return spec
    raise ValueError(
        f"Model type {model_type!r} is not supported by distilkit's structural operations. "
        f"Supported model types: {', '.join(SUPPORTED_MODEL_TYPES)}."
    )


def get_submodule(root: nn.Module, path: str) -> nn.Module:
    return root.get_submodule(path) if path else root


def get_layers(model: nn.Module) -> nn.ModuleList:
    """The list of transformer layers of a model (any head on top of a supported base model)."""
    spec = get_architecture(model)
    return get_submodule(model.base_model, spec.layers)


def layers_prefix(model: nn.Module) -> str:
    """State-dict prefix of the layer list, e.g. 'bert.encoder.layer'."""
    spec = get_architecture(model)
    base = next(name for name, module in model.named_modules() if module is model.base_model)
    return ".".join(p for p in (base, spec.layers) if p)

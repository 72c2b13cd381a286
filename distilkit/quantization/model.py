"""Rewriting a model so that its Linear (and optionally Embedding) layers run in int8.

Which modules are quantized is decided here, in `select_modules`: every torch.nn.Linear except the task head
(`task_head_names`), minus what `skip` names, and every torch.nn.Embedding when asked for. The result is recorded
in `config.distilkit["quantization"]` as explicit module names, so loading does not depend on re-running this
selection (whose defaults may change between versions); `restore_quantization` rebuilds the int8 modules from
that record when `distilkit.from_pretrained` loads the model.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Iterable

from torch import nn

from ..architectures import ArchitectureSpec, get_architecture, get_layers
from ..serialization.format import compression_record, set_compression_record
from .attention import bf16_qkv, check_attention, set_attention, takes_bf16_attention
from .kernels import AUTO, KERNELS
from .layer import FusedActivation, Int8Embedding, Int8Linear, SharedInputGroup, activation_name

logger = logging.getLogger(__name__)

RECORD_KEY = "quantization"
RECORD_FORMAT = 1
# Written next to the module lists so a reader of config.json knows what the tensors mean.
SCHEME = {
    "linear_weights": "int8, symmetric, one scale per output channel",
    "linear_activations": "uint8, asymmetric, one scale per tensor, chosen at run time",
    "embedding_weights": "int8, symmetric, one scale per row (weight only)",
}

Pattern = str | re.Pattern


def task_head_names(model: nn.Module) -> set[str]:
    """Names of the modules forming the task head, which stays in float by default.

    The head is everything outside the backbone (`model.base_model`: `classifier`, `pre_classifier`, `score`,
    `qa_outputs`, `lm_head`, `cls.predictions...`), plus the output embeddings of models without a separate
    backbone. A head is small, and its outputs are the logits themselves, so quantizing it costs accuracy for
    little gain.
    """
    named = list(model.named_modules())
    head: set[str] = set()
    base = getattr(model, "base_model", model)
    if isinstance(base, nn.Module) and base is not model:
        inside = {id(module) for module in base.modules()}
        head |= {name for name, module in named if name and id(module) not in inside}
    get_output = getattr(model, "get_output_embeddings", None)
    output = get_output() if callable(get_output) else None
    if output is not None:
        head |= {name for name, module in named if module is output}
    return head


def _matches(name: str, pattern: Pattern) -> bool:
    if isinstance(pattern, re.Pattern):
        return pattern.fullmatch(name) is not None
    return fnmatch.fnmatchcase(name, pattern)


def _covered(name: str, pattern: Pattern) -> bool:
    """Whether `pattern` names the module `name` or one of its parents (naming a block covers its layers)."""
    parts = name.split(".")
    return any(_matches(".".join(parts[:end]), pattern) for end in range(1, len(parts) + 1))


def _as_patterns(patterns: Pattern | Iterable[Pattern] | None, argument: str) -> list[Pattern]:
    if patterns is None:
        return []
    if isinstance(patterns, (str, re.Pattern)):
        return [patterns]
    patterns = list(patterns)
    bad = [p for p in patterns if not isinstance(p, (str, re.Pattern))]
    if bad:
        raise TypeError(f"{argument} takes module-name patterns (str or re.Pattern); got {bad!r}.")
    return patterns


def _tied_names(model: nn.Module) -> dict[str, list[str]]:
    """Module name -> names of the other modules sharing its weight (e.g. an embedding and a tied lm_head).

    One module registered under two names shares nothing with itself; only distinct modules count.
    """
    owners: dict[int, dict[str, int]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        weight = getattr(module, "weight", None)
        if isinstance(weight, nn.Parameter):
            owners.setdefault(id(weight), {})[name] = id(module)
    tied = {}
    for names in owners.values():
        if len(set(names.values())) > 1:
            for name, module_id in names.items():
                tied[name] = [other for other, other_id in names.items() if other_id != module_id]
    return tied


def _supported(module: nn.Module, quantize_embeddings: bool) -> bool:
    # Exact types: subclasses (e.g. nn.MultiheadAttention's out_proj, adapters) may read `.weight` directly.
    return type(module) is nn.Linear or (quantize_embeddings and type(module) is nn.Embedding)


def _check_pattern(model: nn.Module, pattern: Pattern, argument: str, candidates: list[str], quantize_embeddings):
    """A pattern must name at least one module, and cover at least one module that can be quantized."""
    shown = pattern.pattern if isinstance(pattern, re.Pattern) else pattern
    named = dict(model.named_modules())
    if not any(_covered(name, pattern) for name in candidates):
        hits = [name for name in named if name and _matches(name, pattern)]
        if not hits:
            examples = ", ".join(repr(n) for n in candidates[:3]) or "none"
            raise ValueError(
                f"{argument} pattern {shown!r} matches no module of {type(model).__name__}. Patterns are matched "
                f"against dotted module names with fnmatch (pass re.compile(...) for a regular expression), "
                f"e.g. {examples}."
            )
        types = sorted({type(named[name]).__name__ for name in hits})
        embeddings_hint = (
            "" if quantize_embeddings else "; nn.Embedding is quantized only with quantize_embeddings=True"
        )
        raise ValueError(
            f"{argument} pattern {shown!r} matches only modules of type {', '.join(types)} (e.g. {hits[0]!r}), "
            f"which distilkit does not quantize. Supported: torch.nn.Linear and torch.nn.Embedding{embeddings_hint}."
        )


def select_modules(
    model: nn.Module,
    skip: Pattern | Iterable[Pattern] | None = None,
    quantize_embeddings: bool = False,
    modules: Pattern | Iterable[Pattern] | None = None,
) -> tuple[list[str], list[str]]:
    """(Linear names, Embedding names) that `quantize_int8` would replace, with the checks it applies."""
    skip = _as_patterns(skip, "skip")
    include = _as_patterns(modules, "modules")
    candidates = [
        name for name, module in model.named_modules(remove_duplicate=False) if _supported(module, quantize_embeddings)
    ]
    for pattern in include:
        _check_pattern(model, pattern, "modules", candidates, quantize_embeddings)
    for pattern in skip:
        _check_pattern(model, pattern, "skip", candidates, quantize_embeddings)

    if include:
        selected = [name for name in candidates if any(_covered(name, p) for p in include)]
    else:
        head = task_head_names(model)
        selected = [name for name in candidates if name not in head]
    selected = [name for name in selected if not any(_covered(name, p) for p in skip)]

    tied = _tied_names(model)
    for name in [n for n in selected if n in tied]:
        logger.warning(
            "Leaving %s in float: its weight is shared with %s, and quantizing one copy would break the tie.",
            name,
            ", ".join(tied[name]),
        )
    selected = [name for name in selected if name not in tied]

    if not selected:
        matrices = sorted(
            {
                type(m).__name__
                for m in model.modules()
                if isinstance(getattr(m, "weight", None), nn.Parameter) and m.weight.dim() == 2
            }
        )
        raise ValueError(
            f"Nothing to quantize in {type(model).__name__}: no torch.nn.Linear"
            f"{' or nn.Embedding' if quantize_embeddings else ''} module is left after excluding the task head, "
            f"`skip` and tied weights (module types holding weight matrices: {matrices or 'none'})."
        )
    named = dict(model.named_modules(remove_duplicate=False))
    linear = [name for name in selected if type(named[name]) is nn.Linear]
    embedding = [name for name in selected if type(named[name]) is nn.Embedding]
    return linear, embedding


def quantized_module_names(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, (Int8Linear, Int8Embedding))]


def replace_modules(model: nn.Module, names: Iterable[str], build) -> None:
    """Replace each named submodule by `build(old)`; a module registered under several names is replaced once."""
    built: dict[int, nn.Module] = {}
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        old = getattr(parent, child)
        if id(old) not in built:
            built[id(old)] = build(old)
        setattr(parent, child, built[id(old)])


def _spec_and_layers(model: nn.Module) -> tuple[ArchitectureSpec, nn.ModuleList] | None:
    """The family spec and layer list of a model distilkit.architectures knows; None for any other module."""
    try:
        return get_architecture(model), get_layers(model)
    except (ValueError, AttributeError):
        return None


def shared_input_names(model: nn.Module) -> list[list[str]]:
    """Per layer, the names of the Linears that always read the same input: the attention block's query, key and
    value projections, and a gated FFN's input projections (from distilkit.architectures; none for other models)."""
    known = _spec_and_layers(model)
    if known is None:
        return []
    spec, layers = known
    prefix = next(name for name, module in model.named_modules() if module is layers)
    sets = [(spec.query, spec.key, spec.value)] + ([spec.ffn_in] if len(spec.ffn_in) > 1 else [])
    return [[f"{prefix}.{index}.{name}" for name in names] for index in range(len(layers)) for names in sets]


def group_shared_inputs(model: nn.Module, enabled: bool = True) -> int:
    """Link the int8 projections that share an input (see `shared_input_names`) so each set runs as one int8 product
    (`SharedInputGroup`): one activation quantization and one GEMM instead of three. Run-time only: nothing saved
    changes. Of each set, the Int8Linears join (a projection left in float does not); a projection pruned to
    nothing or of another input width keeps the set apart. `enabled=False` only undoes existing links (every
    projection then runs on its own, e.g. to compare). Returns the number of groups linked."""
    named = dict(model.named_modules())
    for module in named.values():
        if isinstance(module, Int8Linear):
            module._shared_input_group = None
    linked = 0
    if not enabled:
        bf16_qkv(model)  # no products: the attention modules are unmarked
        return linked
    for names in shared_input_names(model):
        members = [named[name] for name in names if isinstance(named.get(name), Int8Linear)]
        if SharedInputGroup.can_group(members):
            group = SharedInputGroup(members)
            for member in members:
                member._shared_input_group = group
            linked += 1
    bf16_qkv(model)  # with bfloat16 attention products, query/key/value written in bfloat16
    return linked


def fuse_activations(model: nn.Module, enabled: bool = True) -> int:
    """Move each feed-forward block's activation into the int8 Linear before it (`Int8Linear.activation`), where a
    kernel that can (oneDNN) applies it while writing the product out, saving a pass over the block's widest tensor.

    Only where distilkit.architectures names the activation (`ffn_activation`: BERT, RoBERTa, DistilBERT, MPNet), the
    Linear is int8 and the activation is exact GELU (`activation_name`); the module is replaced by a
    `FusedActivation` placeholder. Run-time only: the state dict and config do not change, and loading applies it
    again. `enabled=False` only puts the activations back. Returns the number of activations moved.
    """
    for name, module in list(model.named_modules()):
        if isinstance(module, FusedActivation):
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, module.original)
        elif isinstance(module, Int8Linear):
            module.activation = None
    known = _spec_and_layers(model) if enabled else None
    if known is None:
        return 0
    spec, layers = known
    if spec.ffn_activation is None or len(spec.ffn_in) != 1:
        return 0
    moved = 0
    for layer in layers:
        linear = layer.get_submodule(spec.ffn_in[0])
        parent_name, _, child = spec.ffn_activation.rpartition(".")
        parent = layer.get_submodule(parent_name)
        activation = getattr(parent, child, None)
        name = activation_name(activation) if isinstance(activation, nn.Module) else None
        if isinstance(linear, Int8Linear) and name is not None:
            linear.activation = name
            setattr(parent, child, FusedActivation(activation, name))
            moved += 1
    return moved


def quantize_int8(
    model: nn.Module,
    skip: Pattern | Iterable[Pattern] | None = None,
    quantize_embeddings: bool = False,
    *,
    modules: Pattern | Iterable[Pattern] | None = None,
    kernel: str = AUTO,
    attention: str = "auto",
) -> nn.Module:
    """Replace the model's nn.Linear layers by `Int8Linear` (in place) and return the model.

    Weights become int8 with one symmetric scale per output channel; activations are quantized to uint8 at run
    time, one scale per tensor; biases stay in float. The task head (see `task_head_names`) stays in float.
    Projections that read the same input (query, key and value) run as one int8 product (`group_shared_inputs`),
    and a feed-forward block's GELU moves into the int8 Linear before it (`fuse_activations`).

    Args:
        model: a float model, typically a transformers `PreTrainedModel` (already pruned, if it is to be).
        skip: module-name patterns to leave in float, fnmatch-style on dotted names (`"*.attention.output.dense"`,
            `"bert.encoder.layer.0"`), or compiled regular expressions (`re.compile(r".*\\.(query|key)")`, full
            match). Naming a module covers all modules inside it.
        quantize_embeddings: also store every nn.Embedding as int8 rows with one scale per row (weight only). It
            does not speed anything up, but shrinks models whose vocabulary dominates the weights. Embeddings
            tied to an output layer stay in float.
        modules: quantize only what these patterns cover (same syntax as `skip`), the task head included if named;
            `skip` still applies.
        kernel: "auto" (the fastest for the device, see `distilkit.quantization.select_kernel`), or a kernel
            name such as "reference". Not saved: a loaded model picks its own.
        attention: what the attention products (query x key, probabilities x value) run in: "auto" (bfloat16 on
            CPUs with AMX-BF16 where the model's attention can take it, float32 elsewhere), "float32" or
            "bfloat16". What it comes to is kept with the model, so a saved model reloads exactly;
            `distilkit.quantization.set_attention` changes it. See `distilkit.quantization.attention`.

    Raises:
        ValueError: the model is already quantized, a pattern names no module or only modules of unsupported
            types, or nothing is left to quantize.
    """
    already = quantized_module_names(model)
    if already or RECORD_KEY in compression_record(getattr(model, "config", None)):
        raise ValueError(
            f"{type(model).__name__} is already quantized by distilkit ({len(already)} int8 modules, e.g. "
            f"{already[:2]}). Quantize the float model once; to change the selection, reload the float model."
        )
    if kernel != AUTO and kernel not in KERNELS:
        raise ValueError(f"Unknown int8 kernel {kernel!r}; choose one of {sorted(KERNELS)} or 'auto'.")
    check_attention(model, attention)  # before the model changes
    linear, embedding = select_modules(model, skip, quantize_embeddings, modules)
    replace_modules(model, linear, lambda old: Int8Linear.from_linear(old, kernel=kernel))
    replace_modules(model, embedding, Int8Embedding.from_embedding)
    group_shared_inputs(model)
    fuse_activations(model)
    attention = set_attention(model, attention)
    if getattr(model, "config", None) is not None:
        set_compression_record(model, RECORD_KEY, {"format": RECORD_FORMAT, "linear": linear, "embedding": embedding,
                                                   "scheme": SCHEME, "attention": attention})
    logger.info("Quantized %d Linear and %d Embedding modules to int8.", len(linear), len(embedding))
    return model


_RESTORED_TYPES = {"linear": nn.Linear, "embedding": nn.Embedding}


def restore_quantization(model: nn.Module, record: dict) -> nn.Module:
    """Give `model`, freshly built from its config, the int8 modules described by `record` (what `quantize_int8`
    keeps in `config.distilkit["quantization"]`); its restore function for `distilkit.from_pretrained`.

    The named modules become empty int8 modules of the same shapes, which `load_state_dict` then fills with the
    saved int8 weights and scales. Nothing is quantized at load time, so the reloaded model computes exactly what
    the saved one did.
    """
    if not isinstance(record, dict) or not isinstance(record.get("linear"), list):
        raise ValueError(
            "config.distilkit['quantization'] must be a dict with a 'linear' list of module names (written by "
            f"distilkit.quantization.quantize_int8); got {record!r}."
        )
    version = record.get("format", RECORD_FORMAT)
    if version > RECORD_FORMAT:
        raise ValueError(
            f"This model was quantized with a newer distilkit (record format {version}; this version reads up to "
            f"{RECORD_FORMAT}). Upgrade distilkit."
        )
    named = dict(model.named_modules(remove_duplicate=False))
    for kind, expected in _RESTORED_TYPES.items():
        for name in record.get(kind, []):
            module = named.get(name)
            if type(module) is not expected:
                found = "no such module" if module is None else f"a {type(module).__name__}"
                raise ValueError(
                    f"The quantization record names {name!r} as a {expected.__name__} to restore in int8, but the "
                    f"model built from config.json has {found} there. The folder's config.json does not match "
                    "its weights, or the model was changed after quantization."
                )
    replace_modules(model, record["linear"], Int8Linear.like)
    replace_modules(model, record.get("embedding", []), Int8Embedding.like)
    group_shared_inputs(model)
    fuse_activations(model)
    attention = record.get("attention", "float32")  # folders saved before the choice existed ran float32
    if attention == "bfloat16" and not takes_bf16_attention(model):
        logger.warning("This int8 model was saved with bfloat16 attention products, which its attention "
                       "implementation (%r) cannot run; they run in float32.",
                       getattr(model.config, "_attn_implementation", None))
        attention = "float32"
    set_attention(model, attention)
    return model

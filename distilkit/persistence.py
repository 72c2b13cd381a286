"""Loading models that distilkit compressed (pruned heads, int8 layers) from a folder or a Hub id.

A compressed model records how its structure differs from the plain architecture in `config.distilkit`, a dict
saved in config.json by `save_pretrained`. Each compression owns one key of that dict and one restore function
that re-applies the structure to a freshly built model; `from_pretrained` applies them in the order below,
then loads the saved weights strictly.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file
from transformers import AutoConfig, PreTrainedModel

CONFIG_KEY = "distilkit"

# key in config.distilkit -> "module:function" that re-applies that structure to a model built from config.
# Order matters: a model is pruned before it is quantized.
RESTORERS: dict[str, str] = {
    "pruning": "distilkit.pruning.persistence:restore_pruning",
    "quantization": "distilkit.quantization.persistence:restore_quantization",
}


def compression_record(config) -> dict:
    """The `config.distilkit` dict of a model or config (empty for an uncompressed model)."""
    config = getattr(config, "config", config)
    record = getattr(config, CONFIG_KEY, None)
    return dict(record) if record else {}


def set_compression_record(model: PreTrainedModel, key: str, value) -> None:
    record = compression_record(model.config)
    record[key] = value
    setattr(model.config, CONFIG_KEY, record)


def resolve_model_dir(name_or_path: str | os.PathLike, **hub_kwargs) -> Path:
    """A local folder as is; anything else is treated as a Hub repo id and downloaded with huggingface_hub."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"{str(path)!r} is a file; pass the folder that holds config.json and the weights.")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(name_or_path), **hub_kwargs))
    except Exception as err:  # offline, unknown repo, auth: say what was tried and what would work
        raise OSError(
            f"Could not load {str(name_or_path)!r}: it is not a local folder and downloading it from the Hub "
            f"failed ({type(err).__name__}: {err}). Pass a local folder, or check the repo id and network."
        ) from err


def _model_class(config, model_class):
    if model_class is not None:
        return model_class
    architectures = getattr(config, "architectures", None) or []
    for name in architectures:
        cls = getattr(transformers, name, None)
        if cls is not None:
            return cls
    raise ValueError(
        f"config.json names no transformers model class (architectures={architectures}); pass model_class=."
    )


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except Exception as err:  # safetensors raises its own error type for truncated or corrupted files
        raise OSError(
            f"{path} is not a readable safetensors file ({type(err).__name__}: {err}); it may be truncated by an "
            "interrupted save or a partial download. Save or download the model again."
        ) from err


def _read_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    single = model_dir / "model.safetensors"
    if single.is_file():
        return _load_safetensors(single)
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        import json

        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(_load_safetensors(model_dir / shard))
        return state
    raise FileNotFoundError(f"No safetensors weights (model.safetensors) in {model_dir}.")


def _restore_function(key: str):
    module_name, function_name = RESTORERS[key].split(":")
    return getattr(importlib.import_module(module_name), function_name)


def from_pretrained(
    name_or_path: str | os.PathLike,
    model_class: type[PreTrainedModel] | None = None,
    torch_dtype: torch.dtype | None = None,
    attn_implementation: str | None = None,
    **hub_kwargs,
) -> PreTrainedModel:
    """Load a model saved by distilkit (pruned, int8, or neither) from a folder or a Hub repo id.

    An uncompressed model is loaded with the class's own `from_pretrained`. A compressed one is built from its
    config, its recorded structure is re-applied, and the saved weights are loaded with `strict=True`, so a
    missing or unexpected tensor is an error rather than a silently random layer.
    """
    model_dir = resolve_model_dir(name_or_path, **hub_kwargs)
    config = AutoConfig.from_pretrained(model_dir)
    cls = _model_class(config, model_class)
    record = compression_record(config)
    unknown = set(record) - set(RESTORERS)
    if unknown:
        raise ValueError(
            f"{model_dir}/config.json records distilkit compressions {sorted(unknown)} that this version does not "
            f"know (known: {sorted(RESTORERS)}). Upgrade distilkit."
        )
    if not record:
        kwargs = {"dtype": torch_dtype} if torch_dtype is not None else {}
        if attn_implementation is not None:
            kwargs["attn_implementation"] = attn_implementation
        return cls.from_pretrained(model_dir, **kwargs)

    model = cls(config)
    if attn_implementation is not None:
        model.set_attn_implementation(attn_implementation)
    for key in RESTORERS:
        if key in record:
            model = _restore_function(key)(model, record[key])
    state = _read_weights(model_dir)
    expected = model.state_dict()
    wrong_shape = [f"{k}: saved {tuple(v.shape)}, structure {tuple(expected[k].shape)}"
                   for k, v in state.items() if k in expected and v.shape != expected[k].shape]
    if wrong_shape:
        raise ValueError(
            f"The weights in {model_dir} do not match the structure recorded in its config.json "
            f"(distilkit: {sorted(record)}); the folder was probably edited or mixed from two saves. "
            f"Mismatched tensors: {wrong_shape[:5]}."
        )
    result = model.load_state_dict(state, strict=False)
    # Tied weights (e.g. an lm_head sharing the embedding) are saved once; anything else missing is an error.
    tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    missing = [k for k in result.missing_keys if k not in tied]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"The weights in {model_dir} do not match the structure recorded in its config.json "
            f"(distilkit: {sorted(record)}): missing {missing[:10]}, unexpected {result.unexpected_keys[:10]}."
        )
    if tied:
        model.tie_weights()
    if torch_dtype is not None:
        model.to(torch_dtype)
    return model.eval()

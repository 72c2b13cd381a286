"""Loading models that distilkit compressed (pruned heads, int8 layers) from a folder or a Hub id.

A compressed model records how its structure differs from the plain architecture in `config.distilkit`, a dict
saved in config.json by `save_pretrained`. Each compression owns one key of that dict and one restore function
that re-applies the structure to a freshly built model; `from_pretrained` applies them in the order below,
then loads the saved weights strictly.

Plain transformers must not load such a folder as if it were the plain architecture (a pruned model would fail
with a size mismatch, an int8 one would load its int8 values as floats, silently wrong). So a compressed model's
config is written with `model_type: "distilkit"`, a type transformers does not know, and the real one under
`distilkit_base_model_type`: the Auto classes and pipelines refuse the folder instead of misreading it (a concrete
class such as BertForSequenceClassification only warns about the model type, see the README's limits), and
`distilkit.saving.save_pretrained` adds loading code (`auto_map`) that, with `trust_remote_code=True`, builds a
pruned model with transformers alone or says to use `distilkit.from_pretrained` for int8.
"""

from __future__ import annotations

import functools
import importlib
import json
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


# The model_type written for compressed models, and the key that keeps the real one.
COMPRESSED_MODEL_TYPE = "distilkit"
BASE_MODEL_TYPE_KEY = "distilkit_base_model_type"


def _rebuild_compressed_config(base_class: type, state: dict):
    config = base_class.__new__(compressed_config_class(base_class))
    config.__dict__.update(state)
    return config


@functools.cache
def compressed_config_class(base_class: type) -> type:
    """A subclass of `base_class` (e.g. BertConfig) that behaves the same in memory (same class model_type, so
    transformers' code paths are unchanged) but serialises with model_type "distilkit" and the real type under
    `distilkit_base_model_type`."""

    def to_dict(self):
        output = base_class.to_dict(self)
        output[BASE_MODEL_TYPE_KEY] = base_class.model_type
        output["model_type"] = COMPRESSED_MODEL_TYPE
        return output

    def __reduce__(self):  # pickle by rebuilding from the base class (this class is made at run time)
        return _rebuild_compressed_config, (base_class, dict(self.__dict__))

    return type(f"Distilkit{base_class.__name__}", (base_class,),
                {"to_dict": to_dict, "__reduce__": __reduce__, "__module__": base_class.__module__,
                 "_distilkit_base_class": base_class})


def base_config_class(config_class: type) -> type:
    """The transformers config class behind a compressed one (itself for a plain config class)."""
    return getattr(config_class, "_distilkit_base_class", config_class)


def compression_record(config) -> dict:
    """The `config.distilkit` dict of a model or config (empty for an uncompressed model)."""
    config = getattr(config, "config", config)
    record = getattr(config, CONFIG_KEY, None)
    return dict(record) if record else {}


def set_compression_record(model: PreTrainedModel, key: str, value) -> None:
    record = compression_record(model.config)
    record[key] = value
    setattr(model.config, CONFIG_KEY, record)
    model.config.__class__ = compressed_config_class(base_config_class(type(model.config)))


def load_config(name_or_path: str | os.PathLike, **hub_kwargs):
    """The config of a saved model (folder or Hub id), plain or compressed (model_type "distilkit" is mapped back
    to the real one)."""
    model_dir = Path(name_or_path)
    path = model_dir / "config.json"
    if model_dir.is_dir():
        check_save_complete(model_dir)
    else:  # a Hub id: fetch config.json alone
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(str(name_or_path), "config.json", **hub_kwargs))
        except Exception as err:
            raise OSError(f"Could not read config.json of {str(name_or_path)!r}: it is not a local folder and the "
                          f"Hub download failed ({type(err).__name__}: {err}).") from err
        model_dir = path.parent
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{model_dir} has no config.json; save the model with save_pretrained.") from None
    except ValueError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); it may be truncated. Save the model again.") from err
    if raw.get("model_type") != COMPRESSED_MODEL_TYPE:
        return AutoConfig.from_pretrained(model_dir)
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    base = raw.pop(BASE_MODEL_TYPE_KEY, None)
    if base not in CONFIG_MAPPING:
        raise ValueError(f"{path} has model_type {COMPRESSED_MODEL_TYPE!r} but names no known base model type "
                         f"({BASE_MODEL_TYPE_KEY}={base!r}); it was not written by distilkit or was edited.")
    for key in ("auto_map", "model_type"):
        raw.pop(key, None)
    config = CONFIG_MAPPING[base].from_dict(raw)
    if compression_record(config):
        config.__class__ = compressed_config_class(type(config))
    return config


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


# Present in a folder while distilkit.saving moves a finished save into it (a few renames): a folder that still
# holds it was interrupted at that moment and may mix files of two saves.
SAVING_MARKER = ".distilkit-save-in-progress"


def check_save_complete(model_dir: Path) -> None:
    if (model_dir / SAVING_MARKER).exists():
        raise OSError(
            f"{model_dir} holds an interrupted save ({SAVING_MARKER} is present): its files may come from two "
            "different saves. Save the model again, or load an earlier checkpoint."
        )


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
    config = load_config(model_dir)  # also refuses a folder whose save was interrupted
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

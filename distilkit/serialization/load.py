"""Loading models that distilkit saved (plain, pruned heads, int8 layers) from a folder or a Hub id.

`from_pretrained` loads an uncompressed model with its class's own `from_pretrained`. A compressed one is built
from its config, each compression recorded in `config.distilkit` re-applies its structure (its restore function,
see `compressions.py`), then the saved weights are loaded strictly. `load_config` reads a config, mapping the
model_type "distilkit" of a compressed model back to the real one (`format.py`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import transformers
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoConfig, PreTrainedModel

from .atomic import check_not_interrupted
from .compressions import known_keys, recorded
from .format import BASE_MODEL_TYPE_KEY, COMPRESSED_MODEL_TYPE, base_config_class, compressed_config_class, \
    compression_record, unmark_compressed


def load_config(name_or_path: str | os.PathLike, **hub_kwargs):
    """The config of a saved model (folder or Hub id), plain or compressed (model_type "distilkit" is mapped back
    to the real one)."""
    model_dir = Path(name_or_path)
    path = model_dir / "config.json"
    if model_dir.is_dir():
        check_not_interrupted(model_dir)
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
    base = unmark_compressed(raw)
    if base is None:
        return AutoConfig.from_pretrained(model_dir)
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if base not in CONFIG_MAPPING:
        raise ValueError(f"{path} has model_type {COMPRESSED_MODEL_TYPE!r} but names no known base model type "
                         f"({BASE_MODEL_TYPE_KEY}={base!r}); it was not written by distilkit or was edited.")
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


def _built(cls: type[PreTrainedModel], config) -> PreTrainedModel:
    """`cls(config)` for a compressed config, built as its base config class: transformers' generic task heads
    (e.g. LlamaForSequenceClassification) build their base model through AutoModel, which knows the base class
    only. The model keeps the compressed config, so it saves as compressed again."""
    compressed = type(config)
    config.__class__ = base_config_class(compressed)
    try:
        model = cls(config)
    finally:
        config.__class__ = compressed  # the model holds this same config object
    return model


def _unreadable(path: Path, err: Exception) -> OSError:
    return OSError(
        f"{path} is not a readable safetensors file ({type(err).__name__}: {err}); it may be truncated or "
        "corrupted by an interrupted save or a partial download. Save or download the model again."
    )


def _weight_files(model_dir: Path) -> list[Path]:
    """The safetensors files of `model_dir`: model.safetensors, or the shards its index names (none: [])."""
    single = model_dir / "model.safetensors"
    if single.is_file():
        return [single]
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        return [model_dir / shard for shard in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    return []


def check_weights_readable(model_dir: Path) -> None:
    """Raise a clear error for a truncated or corrupted safetensors weight file (reads only each file's header).

    safetensors' own message ("incomplete metadata, file not fully covered") names neither the file nor the
    likely cause."""
    for path in _weight_files(model_dir):
        try:
            with safe_open(path, framework="pt"):
                pass
        except Exception as err:  # safetensors raises its own error type for truncated or corrupted files
            raise _unreadable(path, err) from err


def read_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the safetensors weights in `model_dir` (one file or shards), with a clear error for a
    missing, truncated or corrupted file."""
    paths = _weight_files(model_dir)
    if not paths:
        raise FileNotFoundError(f"No safetensors weights (model.safetensors) in {model_dir}.")
    state: dict[str, torch.Tensor] = {}
    for path in paths:
        try:
            state.update(load_file(path))
        except Exception as err:  # safetensors raises its own error type for truncated or corrupted files
            raise _unreadable(path, err) from err
    return state


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
    unknown = set(record) - set(known_keys())
    if unknown:
        raise ValueError(
            f"{model_dir}/config.json records distilkit compressions {sorted(unknown)} that this version does not "
            f"know (known: {sorted(known_keys())}). Upgrade distilkit."
        )
    if not record:
        check_weights_readable(model_dir)  # before transformers, whose error would not name the file
        kwargs = {"dtype": torch_dtype} if torch_dtype is not None else {}
        if attn_implementation is not None:
            kwargs["attn_implementation"] = attn_implementation
        return cls.from_pretrained(model_dir, **kwargs)

    model = _built(cls, config)
    if attn_implementation is not None:
        model.set_attn_implementation(attn_implementation)
    for compression in recorded(record):
        model = compression.restore_function()(model, record[compression.key])
    state = read_weights(model_dir)
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

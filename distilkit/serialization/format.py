"""How a compressed model is written in config.json: the `config.distilkit` record and the model type.

A compressed model records how its structure differs from the plain architecture in `config.distilkit`, a dict
with one key per compression (see `compressions.py`). Plain transformers must not load such a folder as if it were
the plain architecture (a pruned model would fail with a size mismatch, an int8 one would load its int8 values as
floats, silently wrong). So a compressed model's config is written with `model_type: "distilkit"`, a type
transformers does not know, and the real one under `distilkit_base_model_type`: the Auto classes and pipelines
refuse the folder instead of misreading it.

This module is the one place that maps between the two: `mark_compressed` / `unmark_compressed` on config dicts,
`compressed_config_class` for configs in memory (the real model type in memory, "distilkit" on disk), and
`configuration_source`, the configuration file that does the same for loading code run by transformers alone.
"""

from __future__ import annotations

import functools
import re

from transformers import PretrainedConfig, PreTrainedModel

CONFIG_KEY = "distilkit"
# The model_type written for compressed models, and the key that keeps the real one.
COMPRESSED_MODEL_TYPE = "distilkit"
BASE_MODEL_TYPE_KEY = "distilkit_base_model_type"

# Loading code written into a saved folder: the configuration file (every compressed model) and modeling files
# (`modeling_distilkit_<name>.py`) of compressions that transformers can rebuild with trust_remote_code.
CONFIGURATION_FILE = "configuration_distilkit.py"
CONFIGURATION_CLASS = "DistilkitConfig"
LOADING_CODE_FILE = re.compile(r"^(configuration|modeling)_distilkit(_\w+)?\.py$")


def mark_compressed(raw: dict) -> dict:
    """Write `raw` (a config dict) as a compressed model's: model_type "distilkit", the real type kept aside."""
    if raw.get("model_type") != COMPRESSED_MODEL_TYPE:
        raw[BASE_MODEL_TYPE_KEY] = raw["model_type"]
        raw["model_type"] = COMPRESSED_MODEL_TYPE
    return raw


def unmark_compressed(raw: dict) -> str | None:
    """The real model type of a compressed model's config dict, after removing "distilkit"'s `model_type`, the
    kept type and the `auto_map` from `raw` (so the real config class can read it); None for a plain config, left
    as it is."""
    if raw.get("model_type") != COMPRESSED_MODEL_TYPE:
        return None
    for key in ("auto_map", "model_type"):
        raw.pop(key, None)
    return raw.pop(BASE_MODEL_TYPE_KEY, None)


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
        return mark_compressed(base_class.to_dict(self))

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
    """Record compression `key` in `model.config.distilkit`; the config now serialises as a compressed one."""
    record = compression_record(model.config)
    record[key] = value
    setattr(model.config, CONFIG_KEY, record)
    model.config.__class__ = compressed_config_class(base_config_class(type(model.config)))


class _CompressedConfigReader(PretrainedConfig):
    """What transformers' AutoConfig finds under model_type "distilkit" in a process that uses distilkit: a reader
    that returns the real config (the base config class, compression record included; `auto_map` kept so that
    trust_remote_code=True still finds the folder's loading code). It never builds a model: the Auto model classes
    do not know the config it returns and still refuse the folder (with trust_remote_code=True a pruned folder
    loads through its own code, as in plain transformers)."""

    model_type = COMPRESSED_MODEL_TYPE

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING

        raw = dict(config_dict)
        auto_map = raw.get("auto_map")
        base = unmark_compressed(raw)
        if base not in CONFIG_MAPPING:
            raise ValueError(f"config.json has model_type {COMPRESSED_MODEL_TYPE!r} but names no known base model type "
                             f"({BASE_MODEL_TYPE_KEY}={base!r}); it was not written by distilkit or was edited.")
        result = CONFIG_MAPPING[base].from_dict(raw, **kwargs)
        config = result[0] if isinstance(result, tuple) else result
        if compression_record(config):
            config.__class__ = compressed_config_class(type(config))
        if auto_map:
            config.auto_map = auto_map
        return result


# AutoConfig prefers a folder's own code (with trust_remote_code=True) over a registered class only when that class
# comes from transformers itself; this reader must yield to the folder's code like a built-in would, so that a pruned
# folder loaded with trust_remote_code=True gets its own config class (its modeling class insists on it).
_CompressedConfigReader.__module__ = "transformers.distilkit_compressed"


def register_with_auto_config() -> None:
    """Let AutoConfig (and so AutoTokenizer and pipelines, which read config.json to pick a tokenizer) read a
    compressed folder in this process without asking to run its code or warning about an unknown model type."""
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if COMPRESSED_MODEL_TYPE not in CONFIG_MAPPING:
        AutoConfig.register(COMPRESSED_MODEL_TYPE, _CompressedConfigReader)


register_with_auto_config()


_CONFIGURATION_TEMPLATE = '''"""Generated by distilkit: the {base!r} config, written to disk under model_type
{compressed!r} (a compressed model), so that transformers' Auto classes only load it through this folder's code."""

from transformers.models.auto.configuration_auto import CONFIG_MAPPING

BASE_MODEL_TYPE = {base!r}
_Base = CONFIG_MAPPING[BASE_MODEL_TYPE]


class {name}(_Base):
    _distilkit_base_class = _Base  # in memory the base model type, as for a model compressed by distilkit

    @classmethod
    def get_config_dict(cls, *args, **kwargs):
        config_dict, unused = super().get_config_dict(*args, **kwargs)
        if config_dict.get("model_type") == {compressed!r}:
            config_dict["model_type"] = BASE_MODEL_TYPE
        return config_dict, unused

    def to_dict(self):
        output = super().to_dict()
        output[{key!r}] = BASE_MODEL_TYPE
        output["model_type"] = {compressed!r}
        return output
'''


def configuration_source(base_model_type: str) -> str:
    """Source of `CONFIGURATION_FILE` for loading code that rebuilds a model with transformers alone: the base
    config class, read from and written to disk under model_type "distilkit" (a copy of what this module does,
    for a folder loaded without distilkit)."""
    return _CONFIGURATION_TEMPLATE.format(base=base_model_type, key=BASE_MODEL_TYPE_KEY,
                                          compressed=COMPRESSED_MODEL_TYPE, name=CONFIGURATION_CLASS)

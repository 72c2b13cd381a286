"""The compressions distilkit saves and loads, one registration each.

A compressed model keeps one key per compression in `config.distilkit` (see `format.py`). Each compression
registers here, by dotted name so that this package imports none of them (they import it):
  * `restore`: `function(model, record) -> model` that gives a model freshly built from config.json the
    structure its record describes, before `from_pretrained` loads the saved weights strictly;
  * `remote_code` (optional): `function(folder)` that writes loading code rebuilding the model with transformers
    alone (`AutoModel...from_pretrained(folder, trust_remote_code=True)`), for a folder whose compressions all name
    this same function (head and FFN pruning share one). Any other compressed folder gets a configuration file that
    names `distilkit.from_pretrained` instead;
  * `match` (optional): `function(model, record)` that gives a live model of the same run the structure of a
    checkpoint's record (pruning while training removes more units between checkpoints), before a resumed
    Trainer loads the checkpoint's weights.

The order is the order of restoring: a model is pruned before it is quantized. A new compression (FFN pruning,
say) is one more entry, its restore function living with the method.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Compression:
    key: str  # its key in config.distilkit
    description: str  # what it changes, for messages ("int8 layers")
    restore: str  # "module:function"
    remote_code: str | None = None  # "module:function", or None when transformers cannot rebuild it alone
    match: str | None = None  # "module:function", for compressions a training run applies as it goes

    def restore_function(self) -> Callable:
        return _resolve(self.restore)

    def remote_code_function(self) -> Callable | None:
        return _resolve(self.remote_code) if self.remote_code else None

    def match_function(self) -> Callable | None:
        return _resolve(self.match) if self.match else None


COMPRESSIONS: tuple[Compression, ...] = (
    Compression("pruning", "pruned attention heads", "distilkit.pruning.structural:restore_pruning",
                remote_code="distilkit.pruning.remote_code:add_remote_code",
                match="distilkit.pruning.structural:match_pruning"),
    Compression("ffn_pruning", "pruned FFN neurons", "distilkit.pruning.structural:restore_ffn_pruning",
                remote_code="distilkit.pruning.remote_code:add_remote_code",
                match="distilkit.pruning.structural:match_ffn_pruning"),
    Compression("quantization", "int8 layers", "distilkit.quantization.model:restore_quantization"),
)


def known_keys() -> list[str]:
    return [c.key for c in COMPRESSIONS]


def recorded(record: dict) -> list[Compression]:
    """The registered compressions that `record` (a `config.distilkit` dict) holds, in restore order."""
    return [c for c in COMPRESSIONS if c.key in record]


def _resolve(reference: str) -> Callable:
    module_name, function_name = reference.split(":")
    return getattr(importlib.import_module(module_name), function_name)

"""`ModelShape`: the shape of a compressed model, as far as its cost is concerned.

A shape says how many attention heads and FFN neurons each kept layer has, and whether the model runs in int8
(and stores its embeddings in int8). Which heads or neurons are kept does not change speed or size, so a shape
holds counts only. It is what the latency model (`latency_model`, fitted on `measurements`) predicts, and what a compression
plan will choose.
"""

from __future__ import annotations

import json
import operator
from dataclasses import asdict, dataclass

from transformers import PreTrainedModel

from ..architectures import get_architecture
from ..pruning.structural import head_group_size, kept_heads, kept_neurons
from ..quantization.model import RECORD_KEY as QUANTIZATION_RECORD_KEY
from ..serialization.format import compression_record


@dataclass(frozen=True)
class ModelShape:
    """Heads and FFN neurons kept in each kept layer (one entry per layer, in order), and the precision."""

    heads: tuple[int, ...]
    ffn: tuple[int, ...]
    int8: bool = False
    int8_embeddings: bool = False

    def __post_init__(self):
        object.__setattr__(self, "heads", _counts(self.heads, "heads"))
        object.__setattr__(self, "ffn", _counts(self.ffn, "ffn"))
        if not self.heads:
            raise ValueError("A ModelShape needs at least one layer: heads and ffn are empty.")
        if len(self.heads) != len(self.ffn):
            raise ValueError(
                f"heads and ffn must have one count per kept layer each; got {len(self.heads)} head counts "
                f"{list(self.heads)} and {len(self.ffn)} FFN widths {list(self.ffn)}."
            )
        for name in ("int8", "int8_embeddings"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"ModelShape.{name} must be True or False; got {getattr(self, name)!r}.")
        if self.int8_embeddings and not self.int8:
            raise ValueError("int8_embeddings=True needs int8=True: embeddings are quantized with the Linear layers.")

    @property
    def num_layers(self) -> int:
        return len(self.heads)

    @classmethod
    def of(cls, model: PreTrainedModel, int8: bool | None = None, int8_embeddings: bool | None = None) -> ModelShape:
        """The shape of `model` (after any pruning and layer selection). `int8` / `int8_embeddings`: the precision
        it is to run in; by default the one it has (read from its quantization record). A model that is already
        int8 cannot be asked about as a float one."""
        record = compression_record(model).get(QUANTIZATION_RECORD_KEY)
        is_int8, has_int8_embeddings = record is not None, bool(record and record.get("embedding"))
        if is_int8 and (int8 is False or (int8_embeddings is not None and int8_embeddings != has_int8_embeddings)):
            raise ValueError(
                f"The model is already int8 (int8 embeddings: {has_int8_embeddings}); its shape cannot be read with "
                f"int8={int8}, int8_embeddings={int8_embeddings}. Read it from the float model instead."
            )
        return cls(
            heads=tuple(len(kept) for kept in kept_heads(model)),
            ffn=tuple(len(kept) for kept in kept_neurons(model)),
            int8=is_int8 if int8 is None else int8,
            int8_embeddings=has_int8_embeddings if int8_embeddings is None else int8_embeddings,
        )

    def check_fits(self, config) -> None:
        """Raise ValueError unless a model with `config` can be pruned to this shape: no more layers, heads or
        neurons than the config has, and (grouped-query attention) whole key/value groups of heads."""
        spec = get_architecture(config)
        num_layers = int(config.num_hidden_layers)
        num_heads = int(getattr(config, spec.heads_attr))
        width = int(getattr(config, spec.ffn_width_attr))
        if self.num_layers > num_layers:
            raise ValueError(f"The shape keeps {self.num_layers} layers; the {config.model_type} config has "
                             f"{num_layers}.")
        too_many = [h for h in self.heads if h > num_heads]
        if too_many:
            raise ValueError(f"Head counts {too_many} exceed the {num_heads} heads per layer of the "
                             f"{config.model_type} config; choose 0..{num_heads}.")
        too_wide = [n for n in self.ffn if n > width]
        if too_wide:
            raise ValueError(f"FFN widths {too_wide} exceed the {width} neurons per layer of the "
                             f"{config.model_type} config; choose 0..{width}.")
        group = head_group_size(config)
        partial = [h for h in self.heads if h % group]
        if partial:
            raise ValueError(
                f"Head counts {partial} are not multiples of {group}: {config.model_type} shares each key/value head "
                f"between {group} query heads, so heads are kept in whole groups."
            )

    def key(self) -> str:
        """A stable string naming this shape, e.g. 'L2-h4.4-f64.32-int8' (used as a cache key)."""
        precision = "int8+emb" if self.int8_embeddings else "int8" if self.int8 else "float"
        return (f"L{self.num_layers}-h{'.'.join(map(str, self.heads))}-f{'.'.join(map(str, self.ffn))}-"
                f"{precision}")

    def to_dict(self) -> dict:
        return {**asdict(self), "heads": list(self.heads), "ffn": list(self.ffn)}

    @classmethod
    def from_dict(cls, data: dict) -> ModelShape:
        expected = {"heads", "ffn", "int8", "int8_embeddings"}
        if not isinstance(data, dict) or set(data) - expected or not {"heads", "ffn"} <= set(data):
            raise ValueError(f"A ModelShape dict has keys {sorted(expected)} (heads and ffn required); got "
                             f"{json.dumps(data, default=str)[:200]}.")
        return cls(heads=tuple(data["heads"]), ffn=tuple(data["ffn"]), int8=data.get("int8", False),
                   int8_embeddings=data.get("int8_embeddings", False))


def _counts(values, name: str) -> tuple[int, ...]:
    try:
        counts = tuple(operator.index(v) for v in values)
    except TypeError:
        raise TypeError(
            f"ModelShape.{name} must be a sequence of integers, one per kept layer; got {values!r}.") from None
    negative = [c for c in counts if c < 0]
    if negative:
        raise ValueError(f"ModelShape.{name} counts must be >= 0; got {negative} in {list(counts)}.")
    return counts

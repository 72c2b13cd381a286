"""The grid of candidate shapes a plan chooses from: uniform shapes (every kept layer alike) over fractions of the
teacher's layers, heads and FFN neurons, each in float, int8 and int8 with int8 embeddings."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from transformers import PretrainedConfig

from ..architectures import get_architecture
from ..pruning.structural import head_group_size
from .shape import ModelShape

# (int8, int8 embeddings) options measured by `candidate_shapes`: float, int8, int8 with int8 embeddings.
PRECISIONS = ((False, False), (True, False), (True, True))


def candidate_shapes(config: PretrainedConfig, layer_fractions: Sequence[float] = (1, 2 / 3, 1 / 3),
                     head_fractions: Sequence[float] = (1, 0.5, 0.25),
                     ffn_fractions: Sequence[float] = (1, 0.5, 0.25),
                     precisions: Sequence[tuple[bool, bool]] = PRECISIONS) -> list[ModelShape]:
    """A grid of uniform shapes to measure: every combination of the fractions of the config's layers, heads per
    layer and FFN width kept, and the (int8, int8 embeddings) precisions. Counts are rounded, at least one (heads:
    one key/value group), and repeats are dropped."""
    spec = get_architecture(config)
    group = head_group_size(config)
    layers = _kept_counts(layer_fractions, int(config.num_hidden_layers), 1, "layer_fractions")
    heads = _kept_counts(head_fractions, int(getattr(config, spec.heads_attr)), group, "head_fractions")
    widths = _kept_counts(ffn_fractions, int(getattr(config, spec.ffn_width_attr)), 1, "ffn_fractions")
    for option in precisions:
        if option not in PRECISIONS:
            raise ValueError(f"precisions holds (int8, int8_embeddings) pairs from {list(PRECISIONS)}; got {option!r}.")
    shapes = [ModelShape((h,) * num_layers, (w,) * num_layers, int8, int8_embeddings)
              for num_layers, h, w, (int8, int8_embeddings) in itertools.product(layers, heads, widths, precisions)]
    return list(dict.fromkeys(shapes))


def _kept_counts(fractions: Sequence[float], total: int, step: int, name: str) -> list[int]:
    """Each fraction of `total` as a count, rounded to a multiple of `step` and at least `step`."""
    bad = [f for f in fractions if not 0 < f <= 1]
    if not fractions or bad:
        raise ValueError(f"{name} must be fractions in (0, 1]; got {list(fractions)}.")
    return list(dict.fromkeys(max(step, round(f * total / step) * step) for f in fractions))

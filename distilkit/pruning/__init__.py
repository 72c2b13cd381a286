"""Attention-head and FFN-neuron pruning: score them, remove them structurally, save and reload, prune while
training."""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .arguments import PruningArguments
    from .callback import PruningCallback
    from .importance import compute_ffn_importance, compute_head_importance
    from .selection import (
        least_important_heads,
        least_important_neurons,
        prune_ffn_to_fraction,
        prune_heads_to_fraction,
    )
    from .structural import kept_heads, kept_neurons, prune_ffn, prune_heads, removed_heads

_EXPORTS = {
    "PruningArguments": "arguments",
    "PruningCallback": "callback",
    "compute_ffn_importance": "importance",
    "compute_head_importance": "importance",
    "least_important_heads": "selection",
    "least_important_neurons": "selection",
    "prune_ffn_to_fraction": "selection",
    "prune_heads_to_fraction": "selection",
    "kept_heads": "structural",
    "kept_neurons": "structural",
    "prune_ffn": "structural",
    "prune_heads": "structural",
    "removed_heads": "structural",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "PruningArguments",
    "PruningCallback",
    "compute_ffn_importance",
    "compute_head_importance",
    "kept_heads",
    "kept_neurons",
    "least_important_heads",
    "least_important_neurons",
    "prune_ffn",
    "prune_ffn_to_fraction",
    "prune_heads",
    "prune_heads_to_fraction",
    "removed_heads",
]

"""Attention-head pruning: score heads, remove them structurally, save and reload, prune while training."""

from .callback import HeadPruningCallback
from .importance import compute_head_importance
from .remote_code import add_remote_code
from .selection import least_important_heads, prune_to_fraction
from .structural import kept_heads, prune_heads, pruned_heads, restore_pruning

__all__ = [
    "HeadPruningCallback",
    "add_remote_code",
    "compute_head_importance",
    "kept_heads",
    "least_important_heads",
    "prune_heads",
    "prune_to_fraction",
    "pruned_heads",
    "restore_pruning",
]

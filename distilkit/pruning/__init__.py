"""Attention-head pruning: score heads, remove them structurally, save and reload, prune while training."""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .arguments import HeadPruningArguments
    from .callback import HeadPruningCallback
    from .importance import compute_head_importance
    from .remote_code import add_remote_code
    from .selection import least_important_heads, prune_to_fraction
    from .structural import kept_heads, prune_heads, pruned_heads, restore_pruning

_EXPORTS = {
    "HeadPruningArguments": "arguments",
    "HeadPruningCallback": "callback",
    "compute_head_importance": "importance",
    "add_remote_code": "remote_code",
    "least_important_heads": "selection",
    "prune_to_fraction": "selection",
    "kept_heads": "structural",
    "prune_heads": "structural",
    "pruned_heads": "structural",
    "restore_pruning": "structural",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "HeadPruningArguments",
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

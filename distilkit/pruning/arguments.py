"""PruningArguments: the one definition of distilkit's head-pruning settings (fields, help, validation).

distilkit prunes attention heads in two ways, both configured here:

- while training: `DistillationConfig` inherits these fields, and `DistillationTrainer` installs a
  `PruningCallback` when prune_heads_fraction > 0 or prune_ffn_fraction > 0 (FFN neurons, on the same
  schedule; prune_every_steps, prune_num_prunes set it);
- once, after training: the CLI's prune step (`distilkit prune`, and the prune section of `distill` and
  `quickstart`) removes its `prune_fraction` of the heads in one go; `distilkit prune` also removes
  prune_ffn_fraction of the FFN neurons in the same go.

Both score heads with prune_heads_method (one of `importance.METHODS`) on prune_batches batches and keep
prune_min_heads_per_layer heads in every layer; `scoring()` gives these settings to either use.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .importance import METHODS

# The defaults of prune_batches and prune_min_heads_per_layer when unset, per use: pruning while training
# scores heads again every prune_every_steps steps, so each scoring reads fewer batches.
WHILE_TRAINING_DEFAULTS = {"num_batches": 4, "min_heads_per_layer": 0}
ONE_SHOT_DEFAULTS = {"num_batches": 8, "min_heads_per_layer": 1}


def check_fraction(name: str, value: float, units: str = "attention heads") -> None:
    """A share of `units` to remove: in [0, 1), 0 meaning no pruning."""
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1) (share of {units} to remove), got {value}.")


@dataclass
class PruningArguments:
    """Head pruning: how heads are scored and chosen, and the schedule of pruning while training (which can prune
    FFN neurons too, `prune_ffn_fraction`, scored with the same method and batches)."""

    prune_heads_fraction: float = field(
        default=0.0,
        metadata={
            "help": "Prune this share of the student's attention heads while training (0 = off): every "
            "prune_every_steps steps the heads are scored and the least important removed, until the share is "
            "reached (by default halfway through training); training goes on to recover."
        },
    )
    prune_ffn_fraction: float = field(
        default=0.0,
        metadata={
            "help": "Prune this share of the student's FFN neurons (intermediate units of the feed-forward blocks) "
            "while training (0 = off), on the same schedule as prune_heads_fraction and scored with "
            "prune_heads_method. A layer may lose its whole FFN. `distilkit prune` removes this share in one go, "
            "after prune_fraction's heads."
        },
    )
    prune_every_steps: int = field(
        default=50,
        metadata={"help": "Optimizer steps between two pruning steps (with prune_heads_fraction or "
                  "prune_ffn_fraction)."},
    )
    prune_num_prunes: int | None = field(
        default=None,
        metadata={"help": "Number of pruning steps; default: as many as fit in the first half of training."},
    )
    prune_heads_method: str = field(
        default="taylor",
        metadata={
            "aliases": ["--prune_method", "--prune-method"],
            "help": "Head importance, while training and in the prune step (also --prune_method): 'taylor' "
            "(|dL/d gate| on training batches, Michel et al. 2019) or 'magnitude' (weight norms, needs no data).",
        },
    )
    prune_batches: int | None = field(
        default=None,
        metadata={
            "help": "Training batches each scoring reads with the 'taylor' method. Default: "
            f"{WHILE_TRAINING_DEFAULTS['num_batches']} per pruning step while training, "
            f"{ONE_SHOT_DEFAULTS['num_batches']} in the prune step."
        },
    )
    prune_min_heads_per_layer: int | None = field(
        default=None,
        metadata={
            "help": "Never leave a layer with fewer heads than this. Default: "
            f"{WHILE_TRAINING_DEFAULTS['min_heads_per_layer']} while training, "
            f"{ONE_SHOT_DEFAULTS['min_heads_per_layer']} in the prune step."
        },
    )

    def __post_init__(self):
        check_fraction("prune_heads_fraction", self.prune_heads_fraction)
        check_fraction("prune_ffn_fraction", self.prune_ffn_fraction, "FFN neurons")
        if (self.prune_heads_fraction > 0 or self.prune_ffn_fraction > 0) and self.prune_every_steps < 1:
            raise ValueError(f"prune_every_steps must be >= 1, got {self.prune_every_steps}.")
        if self.prune_heads_method not in METHODS:
            raise ValueError(f"prune_heads_method (--prune_method) must be one of {METHODS}, got "
                             f"{self.prune_heads_method!r}.")
        if self.prune_batches is not None and self.prune_batches < 1:
            raise ValueError(f"prune_batches must be at least 1, got {self.prune_batches}.")
        if self.prune_min_heads_per_layer is not None and self.prune_min_heads_per_layer < 0:
            raise ValueError(f"prune_min_heads_per_layer must be >= 0, got {self.prune_min_heads_per_layer}.")
        parent = getattr(super(), "__post_init__", None)  # TrainingArguments' in DistillationConfig
        if parent is not None:
            parent()

    def scoring(self, *, while_training: bool) -> dict:
        """`method`, `num_batches` and `min_heads_per_layer` for `PruningCallback` (while_training) or
        `prune_heads_to_fraction` (the prune step), each unset field taking that use's default."""
        defaults = WHILE_TRAINING_DEFAULTS if while_training else ONE_SHOT_DEFAULTS
        given = {"num_batches": self.prune_batches, "min_heads_per_layer": self.prune_min_heads_per_layer}
        return {"method": self.prune_heads_method,
                **{name: defaults[name] if value is None else value for name, value in given.items()}}

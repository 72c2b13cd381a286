"""Pruning attention heads and FFN neurons gradually while a Trainer trains (or distils) the model.

Removing many heads at once costs accuracy; removing a share every few steps and training in between lets the
remaining heads take over (the schedule used by Michel et al. for iterative pruning, here during training). FFN
neurons are pruned on the same schedule, after the heads of each pruning step.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch.utils.data import DataLoader, IterableDataset
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from .importance import METHODS, LossFn, compute_ffn_importance, compute_head_importance
from .selection import (
    groups_to_prune_for_fraction,
    least_important_heads,
    least_important_neurons,
    least_important_per_layer,
    neurons_to_prune_for_fraction,
)
from .structural import ffn_width, head_layout, kept_heads, kept_neurons, prune_ffn, prune_heads

logger = logging.getLogger(__name__)


class PruningCallback(TrainerCallback):
    """Every `prune_every_steps` optimizer steps, score the heads and prune a share until `target_fraction`.

    The schedule has `num_prunes` pruning steps at `start_step`, `start_step + prune_every_steps`, ...; give either
    `num_prunes` or `end_step` (the last step that may prune). With neither, pruning ends halfway through training,
    leaving the second half to recover. Pruning step k of n removes heads until `target_fraction * k / n` of the
    original heads are gone (whole key/value groups for grouped-query attention). With `ffn_target_fraction`, the
    same step then removes FFN neurons until `ffn_target_fraction * k / n` of the original neurons are gone (ranked
    with `compute_ffn_importance` on the same batches; `target_fraction=0` prunes neurons only). A layer may lose
    all its neurons.

    Importance is computed on `num_batches` batches of `dataloader`; by default they are drawn from the Trainer's
    training set with its collator (shuffled with `seed + step`). `method` and `loss_fn` are passed to
    `compute_head_importance`: without `loss_fn` the model's own loss is used, so batches need labels; pass a
    distillation loss `loss_fn(model, batch)` to rank heads by what the teacher's outputs need (not while the
    student is still a copy of the teacher: the distillation loss is then at its minimum and every score is 0).

    The Trainer's optimizer is kept: its state is sliced along with the pruned parameters (see `prune_heads`).
    Each pruning step is appended to `state.log_history` (and `self.history`) as
    `{"step", "pruning/removed_heads": {layer: [heads]}, "pruning/pruned_fraction", "pruning/heads_kept"}` (plus
    `"pruning/removed_neurons"`, `"pruning/ffn_pruned_fraction"`, `"pruning/neurons_kept"` when neurons were
    removed) and logged on this module's logger. The model keeps its pruning records in its config, so
    `trainer.save_model()` saves it pruned and `distilkit.from_pretrained` reloads it.

    Pruning step k only tops the model up to its share, so steps that find enough heads already gone do nothing.
    Resuming works like any run: `DistillationTrainer.train(resume_from_checkpoint=...)` removes the heads the
    checkpoint had lost before loading its weights and optimizer state; later pruning steps score heads on the
    same (step-seeded) batches, so the resumed run ends as an uninterrupted one would.

    `head_counts` / `ffn_counts` (instead of the fractions): the heads and FFN neurons each layer keeps at the end,
    one count per layer. Step k of n then brings every layer to `original - (original - count) * k / n` (rounded;
    whole key/value groups), removing its least important units, so the model ends with exactly these per-layer
    counts (a plan's shape) rather than the totals of a global ranking.

    Only single-process training is supported: each process would rank heads on different data and prune
    different heads.
    """

    def __init__(
        self,
        target_fraction: float,
        prune_every_steps: int,
        num_prunes: int | None = None,
        start_step: int | None = None,
        end_step: int | None = None,
        dataloader: Iterable[Mapping[str, torch.Tensor]] | None = None,
        num_batches: int = 4,
        method: str = "taylor",
        loss_fn: LossFn | None = None,
        min_heads_per_layer: int = 0,
        seed: int = 0,
        ffn_target_fraction: float = 0.0,
        head_counts: Sequence[int] | None = None,
        ffn_counts: Sequence[int] | None = None,
    ):
        self.head_counts = None if head_counts is None else [int(c) for c in head_counts]
        self.ffn_counts = None if ffn_counts is None else [int(c) for c in ffn_counts]
        if (self.head_counts is not None and target_fraction) or (self.ffn_counts is not None and ffn_target_fraction):
            raise ValueError("Give per-layer counts (head_counts / ffn_counts) or fractions (target_fraction / "
                             "ffn_target_fraction) for a kind of unit, not both.")
        if self.head_counts is not None or self.ffn_counts is not None:
            # The fractions only gate which kinds are pruned; the counts decide how much.
            target_fraction = 1.0 if self.head_counts is not None else target_fraction
            ffn_target_fraction = 1.0 if self.ffn_counts is not None else ffn_target_fraction
        if not 0.0 <= ffn_target_fraction <= 1.0:
            raise ValueError(f"ffn_target_fraction must be in [0, 1] (share of FFN neurons to prune), got "
                             f"{ffn_target_fraction}.")
        if not 0.0 <= target_fraction <= 1.0 or (target_fraction == 0.0 and ffn_target_fraction == 0.0):
            raise ValueError(f"target_fraction must be in (0, 1] (share of heads to prune; 0 only with "
                             f"ffn_target_fraction > 0), got {target_fraction}.")
        if prune_every_steps < 1:
            raise ValueError(f"prune_every_steps must be at least 1, got {prune_every_steps}.")
        start_step = prune_every_steps if start_step is None else start_step
        if start_step < 1:
            raise ValueError(f"start_step must be at least 1 (steps are counted from 1), got {start_step}.")
        if num_prunes is not None and num_prunes < 1:
            raise ValueError(f"num_prunes must be at least 1, got {num_prunes}.")
        if end_step is not None:
            if end_step < start_step:
                raise ValueError(f"end_step ({end_step}) must not come before start_step ({start_step}).")
            implied = (end_step - start_step) // prune_every_steps + 1
            if num_prunes is not None and num_prunes != implied:
                raise ValueError(
                    f"num_prunes={num_prunes} disagrees with start_step={start_step}, end_step={end_step}, "
                    f"prune_every_steps={prune_every_steps} (which give {implied} prunes); pass only one of them."
                )
            num_prunes = implied
        if method not in METHODS:
            raise ValueError(f"Unknown head importance method {method!r}; choose one of {METHODS}.")
        if num_batches < 1:
            raise ValueError(f"num_batches must be at least 1, got {num_batches}.")
        if min_heads_per_layer < 0:
            raise ValueError(f"min_heads_per_layer must be 0 or more, got {min_heads_per_layer}.")
        self.target_fraction = target_fraction
        self.ffn_target_fraction = ffn_target_fraction
        self.prune_every_steps = prune_every_steps
        self.num_prunes = num_prunes
        self.start_step = start_step
        self.dataloader = dataloader
        self.num_batches = num_batches
        self.method = method
        self.loss_fn = loss_fn
        self.min_heads_per_layer = min_heads_per_layer
        self.seed = seed
        self.history: list[dict] = []
        self._prune_steps: list[int] = []
        self._importance_data: Iterable | None = None
        self._sampler_generator: torch.Generator | None = None

    def prune_steps(self, max_steps: int) -> list[int]:
        """The optimizer steps at which this callback prunes, for a run of `max_steps` steps."""
        num_prunes = self.num_prunes
        if num_prunes is None:  # neither num_prunes nor end_step: prune during the first half of training
            num_prunes = max(0, max_steps // 2 - self.start_step) // self.prune_every_steps + 1
        return [self.start_step + k * self.prune_every_steps for k in range(num_prunes)]

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, train_dataloader=None, **kwargs
    ):
        if args.world_size > 1:
            raise ValueError(
                f"PruningCallback supports single-process training only (world_size is {args.world_size}): "
                "each process would rank heads on its own data and prune different heads. Prune in a single "
                "process, or prune first with distilkit.pruning.prune_heads_to_fraction and then train distributed."
            )
        self._prune_steps = self.prune_steps(state.max_steps)
        late = [s for s in self._prune_steps if s > state.max_steps]
        if late:
            logger.warning(
                "Training stops at step %d, before the pruning steps %s: the model will end with fewer heads "
                "pruned than target_fraction=%s.", state.max_steps, late, self.target_fraction,
            )
        self._importance_data = self.dataloader
        if self._importance_data is None:
            if train_dataloader is None:
                raise ValueError("PruningCallback needs a dataloader= when the Trainer has no training dataloader.")
            self._importance_data = self._sample_loader(train_dataloader, args)

    def _sample_loader(self, train_dataloader: DataLoader, args: TrainingArguments) -> DataLoader:
        """A separate loader over the training set, so scoring heads does not consume the training iterator."""
        dataset = train_dataloader.dataset
        shuffle = not isinstance(dataset, IterableDataset)
        self._sampler_generator = torch.Generator() if shuffle else None
        return DataLoader(
            dataset,
            batch_size=args.per_device_train_batch_size,
            shuffle=shuffle,
            generator=self._sampler_generator,
            collate_fn=train_dataloader.collate_fn,
        )

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model=None, optimizer=None,
        **kwargs,
    ):
        if state.global_step not in self._prune_steps:
            return
        share = (self._prune_steps.index(state.global_step) + 1) / len(self._prune_steps)
        entry = {"step": state.global_step}
        if self.target_fraction > 0:
            entry.update(self._prune_heads(model, optimizer, state.global_step, self.target_fraction * share))
        if self.ffn_target_fraction > 0:
            entry.update(self._prune_neurons(model, optimizer, state.global_step, self.ffn_target_fraction * share))
        if len(entry) > 1:
            state.log_history.append(entry)
            self.history.append(entry)

    def _scoring_data(self, step: int) -> Iterable:
        if self._sampler_generator is not None:
            # Seeded by step, so a run resumed from a checkpoint scores on the same batches.
            self._sampler_generator.manual_seed(self.seed + step)
        return self._importance_data

    def _prune_heads(self, model, optimizer, step: int, fraction: float) -> dict:
        layout = head_layout(model)
        if self.head_counts is not None:
            keep = _scheduled(layout.num_heads, self.head_counts, fraction, layout.group_size)
            if all(len(kept) <= k for kept, k in zip(kept_heads(model), keep)):
                return {}
        elif groups_to_prune_for_fraction(model, fraction) == 0:
            return {}
        importance = compute_head_importance(
            model, self._scoring_data(step), self.method, loss_fn=self.loss_fn, num_batches=self.num_batches
        )
        if self.head_counts is not None:
            heads = least_important_per_layer(importance, keep, layout.group_size)
        else:
            count = groups_to_prune_for_fraction(model, fraction)
            heads = least_important_heads(importance, count, layout.group_size, self.min_heads_per_layer)
        prune_heads(model, heads, optimizer=optimizer)

        remaining = sum(len(kept) for kept in kept_heads(model))
        total = layout.num_layers * layout.num_heads
        logger.info(
            "Step %d: pruned heads %s (layer: heads, original numbering); %d of %d heads left.",
            step, heads, remaining, total,
        )
        return {
            "pruning/removed_heads": {str(layer): removed for layer, removed in heads.items()},
            "pruning/pruned_fraction": round(1 - remaining / total, 4),
            "pruning/heads_kept": remaining,
        }

    def _prune_neurons(self, model, optimizer, step: int, fraction: float) -> dict:
        if self.ffn_counts is not None:
            keep = _scheduled(ffn_width(model), self.ffn_counts, fraction, 1)
            if all(len(kept) <= k for kept, k in zip(kept_neurons(model), keep)):
                return {}
        elif neurons_to_prune_for_fraction(model, fraction) == 0:
            return {}
        importance = compute_ffn_importance(
            model, self._scoring_data(step), self.method, loss_fn=self.loss_fn, num_batches=self.num_batches
        )
        if self.ffn_counts is not None:
            neurons = least_important_per_layer(importance, keep)
        else:
            neurons = least_important_neurons(importance, neurons_to_prune_for_fraction(model, fraction))
        count = sum(map(len, neurons.values()))
        prune_ffn(model, neurons, optimizer=optimizer)

        kept = kept_neurons(model)
        remaining, total = sum(map(len, kept)), len(kept) * ffn_width(model)
        logger.info(
            "Step %d: pruned %d FFN neurons (per layer: %s); %d of %d neurons left.",
            step, count, {layer: len(removed) for layer, removed in neurons.items()}, remaining, total,
        )
        return {
            "pruning/removed_neurons": {str(layer): removed for layer, removed in neurons.items()},
            "pruning/ffn_pruned_fraction": round(1 - remaining / total, 4),
            "pruning/neurons_kept": remaining,
        }

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model=None, **kwargs):
        if model is None:
            return
        if self.head_counts is not None or self.ffn_counts is not None:
            short = [f"{name} {counts} per layer" for name, counts, kept in (
                ("head_counts", self.head_counts, kept_heads(model)),
                ("ffn_counts", self.ffn_counts, kept_neurons(model)))
                if counts is not None and [len(k) for k in kept] != counts]
        else:
            short = [f"target_fraction={self.target_fraction} of heads"] if groups_to_prune_for_fraction(
                model, self.target_fraction) > 0 else []
            if neurons_to_prune_for_fraction(model, self.ffn_target_fraction) > 0:
                short.append(f"ffn_target_fraction={self.ffn_target_fraction} of FFN neurons")
        if short:
            logger.warning(
                "Training ended before reaching %s pruned (%d steps were run; pruning steps: %s).",
                " and ".join(short), state.global_step, self._prune_steps,
            )


def _scheduled(original: int, final: Sequence[int], share: float, group: int) -> list[int]:
    """Per layer, what it keeps after `share` of the schedule: `original - (original - final) * share`, rounded
    to whole groups of `group` (never below `final`)."""
    return [max(count, round((original - (original - count) * share) / group) * group) for count in final]

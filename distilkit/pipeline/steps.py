"""The library steps a stage is made of: train (with or without a teacher), prune heads and FFN neurons (the same
units on every process), quantize to int8, save."""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import DistillationConfig
from .recipe import QuantizeArguments, RecipeError
from .task_data import TaskData


def train(model, args: DistillationConfig, data: TaskData, tokenizer, folder: Path, *, teacher=None,
          compute_metrics=None, resume_from: str | None = None):
    """Train `model` with `args` (checkpoints, logs and state in args.output_dir), distilling from `teacher` with
    the transfer data when given (without one, exactly transformers.Trainer on the labelled data), resuming from
    the checkpoint `resume_from` if any; save the model and tokenizer to `folder` (atomically, on the main
    process). Returns the trainer."""
    from ..trainer import DistillationTrainer

    if args.eval_strategy != "no" and data.validation is None:
        raise RecipeError(f"eval_strategy={args.eval_strategy!r} needs validation data (data.validation_file or "
                          "data.validation_split).")
    trainer = DistillationTrainer(model=model, args=args, teacher_model=teacher, train_dataset=data.train,
                                  eval_dataset=data.validation, data_collator=data.collator, processing_class=tokenizer,
                                  compute_metrics=compute_metrics,
                                  transfer_dataset=data.transfer if teacher is not None else None)
    trainer.train(resume_from_checkpoint=resume_from)
    trainer.save_state()
    trainer.save_model(str(folder))
    return trainer


def remove_heads(model, data: TaskData, fraction: float, training: DistillationConfig) -> dict[int, list[int]]:
    """Remove `fraction` of the heads (in place), scored as `training` says; returns {layer: [removed heads]}.

    In a distributed run the main process chooses the heads and every process removes the same ones.
    """
    try:
        from ..pruning import prune_heads, prune_heads_to_fraction
    except ImportError as err:
        raise RecipeError(f"Head pruning is not available in this installation ({err}).") from err
    scoring = training.scoring(while_training=False)
    return _prune_on_main(model, data, training, prune_heads_to_fraction, prune_heads, fraction=fraction, **scoring)


def remove_neurons(model, data: TaskData, fraction: float, training: DistillationConfig) -> dict[int, list[int]]:
    """Remove `fraction` of the FFN neurons (in place), scored with the heads' method and batches (`training`);
    returns {layer: [removed neurons]}. A layer may lose its whole FFN (as when pruning while training)."""
    try:
        from ..pruning import prune_ffn, prune_ffn_to_fraction
    except ImportError as err:
        raise RecipeError(f"FFN pruning is not available in this installation ({err}).") from err
    scoring = training.scoring(while_training=False)
    return _prune_on_main(model, data, training, prune_ffn_to_fraction, prune_ffn, fraction=fraction,
                          method=scoring["method"], num_batches=scoring["num_batches"])


def _prune_on_main(model, data: TaskData, training: DistillationConfig, to_fraction, remove, **kwargs
                   ) -> dict[int, list[int]]:
    """`to_fraction(model, loader, **kwargs)` (score, choose, remove) on the main process, with shuffled training
    batches for 'taylor' (None for 'magnitude'); in a distributed run the other processes then `remove(model,
    chosen)` the same units. Returns {layer: [removed units]}."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    removed: dict[int, list[int]] = {}
    if not distributed or torch.distributed.get_rank() == 0:
        loader = None
        if training.prune_heads_method == "taylor":
            loader = torch.utils.data.DataLoader(
                data.train, batch_size=training.per_device_train_batch_size, shuffle=True,
                collate_fn=data.collator, generator=torch.Generator().manual_seed(training.seed),
            )
        try:
            _, removed = to_fraction(model, loader, **kwargs)
        except ValueError as err:
            raise RecipeError(f"prune: {err}") from err
    if distributed:
        box = [removed]
        torch.distributed.broadcast_object_list(box, src=0)
        if torch.distributed.get_rank() != 0:
            removed = box[0]
            remove(model, removed)
    return removed


def quantize(model, quantize_args: QuantizeArguments):
    try:
        from ..quantization import quantize_int8
    except ImportError as err:
        raise RecipeError(f"Int8 quantization is not available in this installation ({err}).") from err
    try:
        return quantize_int8(model, skip=quantize_args.quantize_skip,
                                quantize_embeddings=quantize_args.quantize_embeddings)
    except ValueError as err:
        raise RecipeError(f"quantize: {err}") from err


def save(model, tokenizer, folder: Path) -> Path:
    from ..serialization import save_pretrained

    return save_pretrained(model, folder, tokenizer)

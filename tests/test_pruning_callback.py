"""PruningCallback: pruning attention heads during a few Trainer steps on tiny random models."""

from __future__ import annotations

import logging
import types

import pytest
import torch
from helpers.tiny_models import pad_collator, tiny_dataset, tiny_model
from transformers import Trainer, TrainingArguments

import distilkit
from distilkit.pruning import PruningCallback, kept_heads


def train(model, callback, tmp_path, task="seq", max_steps=6, save_steps=None, resume_from_checkpoint=None):
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"),
        max_steps=max_steps,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=tiny_dataset(task, n=24),
        data_collator=pad_collator,
        callbacks=[callback],
    )
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    return trainer


@pytest.mark.parametrize("family,task", [("bert", "seq"), ("llama", "causal")])
def test_callback_prunes_during_training_and_the_saved_model_reloads(family, task, tmp_path, caplog):
    model = tiny_model(task, family)
    callback = PruningCallback(target_fraction=0.5, prune_every_steps=2, num_prunes=2, num_batches=2)
    with caplog.at_level(logging.INFO, logger="distilkit.pruning.callback"):
        trainer = train(model, callback, tmp_path, task)

    # Steps 2 and 4 each remove a quarter of the 8 heads (one KV group of 2 for Llama).
    assert [entry["step"] for entry in callback.history] == [2, 4]
    assert [entry["pruning/pruned_fraction"] for entry in callback.history] == [0.25, 0.5]
    assert [entry["pruning/heads_kept"] for entry in callback.history] == [6, 4]
    assert all(sum(map(len, e["pruning/removed_heads"].values())) == 2 for e in callback.history)
    assert all(e in trainer.state.log_history for e in callback.history)
    assert "Step 2: pruned heads" in caplog.text and "Step 4: pruned heads" in caplog.text
    assert sum(map(len, kept_heads(trainer.model))) == 4
    if family == "llama":
        assert all(len(kept) % 2 == 0 for kept in kept_heads(trainer.model))

    # The optimizer trains exactly the model's current parameters and kept its state across pruning.
    optimizer_params = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimizer_params == {id(p) for p in trainer.model.parameters()}
    assert all(int(trainer.optimizer.state[p]["step"]) == 6 for p in trainer.model.parameters())
    # Training went on after the last pruning step (loss logged at steps 5 and 6).
    assert {e["step"] for e in trainer.state.log_history if "loss" in e} >= {5, 6}

    trainer.save_model(str(tmp_path / "final"))
    reloaded = distilkit.from_pretrained(tmp_path / "final")
    reloaded.set_attn_implementation(trainer.model.config._attn_implementation)
    assert kept_heads(reloaded) == kept_heads(trainer.model)
    batch = pad_collator([tiny_dataset(task, n=3, seed=1)[i] for i in range(3)])
    trainer.model.eval()
    with torch.no_grad():
        assert torch.equal(reloaded(**batch).logits, trainer.model(**batch).logits)


def test_callback_uses_the_given_dataloader_and_method(tmp_path):
    model = tiny_model("seq", "bert")
    with torch.no_grad():  # make head 1 of layer 0 useless: magnitude ranking must remove it first
        model.bert.encoder.layer[0].attention.self.query.weight[8:16] = 0
        model.bert.encoder.layer[0].attention.self.key.weight[8:16] = 0
        model.bert.encoder.layer[0].attention.self.value.weight[8:16] = 0
        model.bert.encoder.layer[0].attention.output.dense.weight[:, 8:16] = 0
    callback = PruningCallback(0.125, prune_every_steps=3, method="magnitude", dataloader=[])
    train(model, callback, tmp_path, max_steps=4)
    assert [(e["step"], e["pruning/removed_heads"]) for e in callback.history] == [(3, {"0": [1]})]


def test_training_resumed_from_a_pruned_checkpoint_ends_like_an_uninterrupted_run(tmp_path):
    schedule = dict(target_fraction=0.5, prune_every_steps=2, num_prunes=2, num_batches=1)
    straight = train(tiny_model("seq", "bert"), PruningCallback(**schedule), tmp_path, save_steps=3)
    checkpoint = tmp_path / "run" / "checkpoint-3"
    assert kept_heads(distilkit.from_pretrained(checkpoint)) != kept_heads(straight.model)  # pruned once of twice

    # The checkpoint's model has the pruned shapes, so the Trainer's resume (weights, optimizer, data order) fits.
    resumed = train(distilkit.from_pretrained(checkpoint), PruningCallback(**schedule), tmp_path / "again",
                    resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == 6
    assert kept_heads(resumed.model) == kept_heads(straight.model)
    for a, b in zip(resumed.model.parameters(), straight.model.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_schedule():
    every_two = PruningCallback(0.5, prune_every_steps=2, num_prunes=3)
    assert every_two.prune_steps(max_steps=100) == [2, 4, 6]
    windowed = PruningCallback(0.5, prune_every_steps=3, start_step=1, end_step=8)
    assert windowed.prune_steps(max_steps=100) == [1, 4, 7]
    # With neither num_prunes nor end_step, pruning stops halfway through training.
    assert PruningCallback(0.5, prune_every_steps=2).prune_steps(max_steps=20) == [2, 4, 6, 8, 10]
    assert PruningCallback(0.5, prune_every_steps=5).prune_steps(max_steps=4) == [5]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"target_fraction": 0.0}, r"target_fraction must be in \(0, 1\]"),
        ({"target_fraction": 1.5}, r"target_fraction must be in \(0, 1\]"),
        ({"prune_every_steps": 0}, "prune_every_steps must be at least 1"),
        ({"num_prunes": 2, "end_step": 10}, r"num_prunes=2 disagrees with .* \(which give 5 prunes\)"),
        ({"start_step": 5, "end_step": 3}, r"end_step \(3\) must not come before start_step \(5\)"),
        ({"method": "random"}, "Unknown head importance method 'random'"),
        ({"num_batches": 0}, "num_batches must be at least 1"),
    ],
)
def test_invalid_settings_fail_at_construction(kwargs, message):
    settings = {"target_fraction": 0.5, "prune_every_steps": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        PruningCallback(**settings)


def test_multi_process_training_is_refused():
    callback = PruningCallback(0.5, prune_every_steps=2, num_prunes=1)
    state = types.SimpleNamespace(max_steps=10)
    with pytest.raises(ValueError, match="single-process training only \\(world_size is 2\\)"):
        callback.on_train_begin(types.SimpleNamespace(world_size=2), state, None, train_dataloader=None)


def test_distillation_trainer_builds_the_callback_from_the_shared_pruning_settings(tmp_path):
    def callback_of(**pruning):
        args = distilkit.DistillationConfig(output_dir=str(tmp_path / "run"), report_to="none", use_cpu=True,
                                            alpha=0.0, prune_heads_fraction=0.5, prune_every_steps=2, **pruning)
        trainer = distilkit.DistillationTrainer(model=tiny_model("seq", "bert"), args=args,
                                                train_dataset=tiny_dataset("seq", n=8), data_collator=pad_collator)
        return next(c for c in trainer.callback_handler.callbacks if isinstance(c, PruningCallback))

    default = callback_of()  # unset scoring fields keep the callback's own defaults while training
    assert (default.method, default.num_batches, default.min_heads_per_layer) == ("taylor", 4, 0)
    given = callback_of(prune_heads_method="magnitude", prune_batches=2, prune_min_heads_per_layer=1)
    assert (given.method, given.num_batches, given.min_heads_per_layer) == ("magnitude", 2, 1)

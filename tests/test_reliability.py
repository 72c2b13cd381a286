"""Crash, resume and bad-loss behaviour of DistillationTrainer."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.tiny_models import StopAt, pad_collator, tiny_dataset, tiny_model

from distilkit import DistillationConfig, DistillationTrainer
from distilkit.loss_terms import DEFAULT_ALPHA, soft_label_weight
from distilkit.serialization.checkpoints import COMPLETE_MARKER, last_complete_checkpoint

CHILD = Path(__file__).parent / "helpers" / "resume_child.py"
ROOT = Path(__file__).resolve().parents[1]


def run_child(out, *flags):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(CHILD), str(out), *flags], env=env, capture_output=True, text=True,
                          timeout=300)


def final_state(out):
    return torch.load(Path(out) / "final_state.pt")


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_gives_the_uninterrupted_weights(tmp_path):
    full = run_child(tmp_path / "full")
    assert full.returncode == 0, full.stderr[-2000:]

    killed = run_child(tmp_path / "crash", "--kill-at-step", "5")
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "crash" / "final_state.pt").exists()
    assert last_complete_checkpoint(str(tmp_path / "crash")).endswith("checkpoint-4")

    resumed = run_child(tmp_path / "crash", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    expected, got = final_state(tmp_path / "full"), final_state(tmp_path / "crash")
    assert set(expected) == set(got) and any(k.startswith("projection.") for k in got)
    for key in expected:
        assert torch.allclose(expected[key], got[key], atol=1e-6), key


@pytest.mark.slow
@pytest.mark.parametrize("feature", ["--prune", "--cache", "--transfer"])
def test_resume_keeps_the_pruning_schedule_and_the_teacher_cache(tmp_path, feature):
    """Killed at step 3 (after the first pruning step, before the second), resumed from checkpoint-2: the same
    heads are removed and the same weights come out as in an uninterrupted run; with the cache, the resumed
    run reuses the cache built before the crash."""
    full = run_child(tmp_path / "full", feature)
    assert full.returncode == 0, full.stderr[-2000:]
    killed = run_child(tmp_path / "crash", feature, "--kill-at-step", "3")
    assert killed.returncode == -signal.SIGKILL
    assert last_complete_checkpoint(str(tmp_path / "crash")).endswith("checkpoint-2")
    resumed = run_child(tmp_path / "crash", feature, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    expected, got = final_state(tmp_path / "full"), final_state(tmp_path / "crash")
    assert set(expected) == set(got)
    for key in expected:
        assert expected[key].shape == got[key].shape, key
        assert torch.allclose(expected[key].float(), got[key].float(), atol=1e-6), key
    if feature == "--prune":
        assert int(got["kept_heads"].sum()) == 4  # half of 2 layers x 4 heads
    elif feature == "--cache":
        assert len(list((tmp_path / "crash" / "teacher-cache").iterdir())) == 1  # built once, reused


@pytest.mark.slow
def test_kill_during_a_save_leaves_the_previous_checkpoint_to_resume_from(tmp_path):
    killed = run_child(tmp_path / "run", "--kill-during-save-at-step", "6")
    assert killed.returncode == -signal.SIGKILL
    partial = tmp_path / "run" / "checkpoint-6"
    assert partial.is_dir() and not (partial / COMPLETE_MARKER).exists()
    assert last_complete_checkpoint(str(tmp_path / "run")).endswith("checkpoint-4")
    resumed = run_child(tmp_path / "run", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "checkpoint-6" in resumed.stderr and "did not finish" in resumed.stderr
    full = run_child(tmp_path / "full")
    assert full.returncode == 0, full.stderr[-2000:]
    expected, got = final_state(tmp_path / "full"), final_state(tmp_path / "run")
    for key in expected:
        assert torch.allclose(expected[key], got[key], atol=1e-6), key


def test_resuming_an_incomplete_checkpoint_by_path_is_refused(tmp_path):
    (tmp_path / "out" / "checkpoint-2").mkdir(parents=True)
    trainer = DistillationTrainer(model=tiny_model("seq"), args=DistillationConfig(
        output_dir=str(tmp_path / "out"), alpha=0.0, report_to="none", use_cpu=True, max_steps=1),
        train_dataset=tiny_dataset("seq", 4), data_collator=pad_collator)
    with pytest.raises(ValueError, match="checkpoint-2 is incomplete"):
        trainer.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-2"))
    # No finished checkpoint: transformers.Trainer's own words (scripts match on them).
    with pytest.raises(ValueError, match=r"No valid checkpoint found in output directory \("):
        trainer.train(resume_from_checkpoint=True)


def test_no_checkpoint_to_resume_is_worded_as_trainer_words_it(tmp_path):
    from transformers import Trainer, TrainingArguments

    messages = []
    for trainer_class, args_class, extra in ((Trainer, TrainingArguments, {}),
                                             (DistillationTrainer, DistillationConfig, {"alpha": 0.0})):
        trainer = trainer_class(model=tiny_model("seq"), args=args_class(
            output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True, max_steps=1, **extra),
            train_dataset=tiny_dataset("seq", 4), data_collator=pad_collator)
        with pytest.raises(ValueError) as raised:
            trainer.train(resume_from_checkpoint=True)
        messages.append(str(raised.value))
    assert messages[0] == messages[1]


@pytest.mark.parametrize("teacher", [False, True])
def test_checkpoints_written_by_plain_trainer_resume_in_distilkit(tmp_path, teacher):
    """A project switches from Trainer to DistillationTrainer mid-run: resume_from_checkpoint=True picks up the
    Trainer's checkpoint (which has no distilkit marker). Without a teacher the result is Trainer's own resume."""
    from transformers import Trainer, TrainingArguments

    common = dict(per_device_train_batch_size=4, max_steps=4, save_steps=2, learning_rate=1e-3, report_to="none",
                  use_cpu=True, seed=3, logging_steps=1)
    no_dropout = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)

    def run(trainer_class, args_class, out, resume=None, callbacks=(), **extra):
        kwargs = {"teacher_model": tiny_model("seq", seed=1)} if extra.get("alpha") else {}
        trainer = trainer_class(model=tiny_model("seq", seed=2, **no_dropout),
                                args=args_class(output_dir=str(out), **common, **extra),
                                train_dataset=tiny_dataset("seq", 16), data_collator=pad_collator,
                                callbacks=list(callbacks), **kwargs)
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    run(Trainer, TrainingArguments, tmp_path / "run", callbacks=[StopAt(3)])  # checkpoint-2, then stopped
    assert not (tmp_path / "run" / "checkpoint-2" / COMPLETE_MARKER).exists()
    extra = {"alpha": 0.5} if teacher else {"alpha": 0.0}
    resumed = run(DistillationTrainer, DistillationConfig, tmp_path / "run", resume=True, **extra)
    assert resumed.state.global_step == 4
    steps = [e["step"] for e in resumed.state.log_history if "loss" in e]
    assert steps == [1, 2, 3, 4]  # steps 1-2 from the Trainer's checkpoint, 3-4 after the resume
    if not teacher:
        plain = run(Trainer, TrainingArguments, tmp_path / "plain")
        for (name, a), b in zip(plain.model.state_dict().items(), resumed.model.state_dict().values()):
            assert torch.allclose(a, b, atol=1e-6), name


class PoisonOnce:
    """Collator that makes one batch's loss infinite by giving it a huge embedding input."""

    def __init__(self, poison_call):
        self.calls, self.poison_call = 0, poison_call

    def __call__(self, features):
        batch = pad_collator(features)
        self.calls += 1
        if self.calls == self.poison_call:
            batch["inputs_embeds"] = torch.full((*batch["input_ids"].shape, 32), float("nan"))
            del batch["input_ids"]
        return batch


def nonfinite_trainer(tmp_path, policy):
    return DistillationTrainer(
        model=tiny_model("seq", seed=2), teacher_model=tiny_model("seq", seed=1),
        args=DistillationConfig(output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=4,
                                report_to="none", use_cpu=True, logging_steps=1, save_strategy="no",
                                nonfinite_loss=policy, remove_unused_columns=False),
        train_dataset=tiny_dataset("seq", 16), data_collator=PoisonOnce(poison_call=3))


def test_nonfinite_loss_stops_with_the_step_number(tmp_path):
    trainer = nonfinite_trainer(tmp_path, "error")
    with pytest.raises(FloatingPointError, match="at step 3"):
        trainer.train()


def test_nonfinite_loss_skip_drops_the_batch_and_counts_it(tmp_path):
    trainer = nonfinite_trainer(tmp_path, "skip")
    trainer.train()
    assert trainer.nonfinite_batches_skipped == 1
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    logs = [e for e in trainer.state.log_history if "loss" in e]
    assert logs[-1]["nonfinite_batches_skipped"] == 1


def test_nonfinite_loss_without_a_teacher_is_what_trainer_does(tmp_path):
    """alpha=0 is plain Trainer: a NaN batch is logged (and filtered) as Trainer does, not an error or a skip."""
    import math

    from transformers import Trainer, TrainingArguments

    common = dict(max_steps=4, per_device_train_batch_size=4, report_to="none", use_cpu=True, logging_steps=1,
                  save_strategy="no", remove_unused_columns=False, seed=3)
    runs = {}
    for name, trainer_class, args_class, extra in (
        ("trainer", Trainer, TrainingArguments, {}),
        ("distilkit", DistillationTrainer, DistillationConfig, {"alpha": 0.0}),  # nonfinite_loss="error" default
    ):
        trainer = trainer_class(model=tiny_model("seq", seed=2),
                                args=args_class(output_dir=str(tmp_path / name), **common, **extra),
                                train_dataset=tiny_dataset("seq", 16), data_collator=PoisonOnce(poison_call=3))
        trainer.train()
        runs[name] = ([e["loss"] for e in trainer.state.log_history if "loss" in e],
                      [p.detach().clone() for p in trainer.model.parameters()])
    (losses_t, params_t), (losses_d, params_d) = runs["trainer"], runs["distilkit"]
    assert len(losses_t) == len(losses_d) == 4
    for a, b in zip(losses_t, losses_d):
        assert (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-6)
    assert all(torch.allclose(a, b, equal_nan=True) for a, b in zip(params_t, params_d))


def test_distillation_trainer_without_args_is_trainer_without_args(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trainer = DistillationTrainer(tiny_model("seq"))
    assert trainer.args.output_dir == "trainer_output" and trainer.args.alpha is None  # as given: no teacher term
    assert trainer.teacher is None
    # With a teacher and no args, the default distillation settings apply.
    distilling = DistillationTrainer(tiny_model("seq"), teacher_model=tiny_model("seq", seed=1))
    assert soft_label_weight(distilling.args) == DEFAULT_ALPHA and distilling.teacher is not None


def test_a_distilkit_checkpoint_interrupted_after_trainer_state_is_not_resumed(tmp_path):
    """trainer_state.json alone makes a plain Trainer checkpoint complete, not a DistillationTrainer one that was
    killed before its projections and completion marker were written."""
    from distilkit.serialization.checkpoints import SAVING_MARKER

    out = tmp_path / "out"
    for step, files in ((2, [SAVING_MARKER, "trainer_state.json", COMPLETE_MARKER]),
                        (4, [SAVING_MARKER, "trainer_state.json"])):
        (out / f"checkpoint-{step}").mkdir(parents=True)
        for name in files:
            (out / f"checkpoint-{step}" / name).write_text("{}")
    assert last_complete_checkpoint(str(out)).endswith("checkpoint-2")
    (out / "checkpoint-6").mkdir()
    (out / "checkpoint-6" / "trainer_state.json").write_text("{}")  # written by plain Trainer
    assert last_complete_checkpoint(str(out)).endswith("checkpoint-6")

"""TinyBERT's staged schedule (intermediate_epochs): layer terms alone first, then the prediction terms alone."""

import pytest
import torch
from helpers.tiny_models import StopAt, pad_collator, tiny_dataset, tiny_model

from distilkit import DistillationConfig, DistillationTrainer


def config(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, learning_rate=1e-3, logging_steps=1,
                report_to="none", save_strategy="no", use_cpu=True, seed=7, num_train_epochs=3,
                hidden_weight=1.0, attention_weight=1.0, alpha=0.5, intermediate_epochs=1)
    base.update(kw)
    return DistillationConfig(**base)


def test_stages_train_their_own_terms_and_switch_after_the_intermediate_epochs(tmp_path):
    t = DistillationTrainer(model=tiny_model("seq", seed=2), teacher_model=tiny_model("seq", seed=1),
                            args=config(tmp_path), train_dataset=tiny_dataset("seq", 8), data_collator=pad_collator)
    t.train()
    logs = [e for e in t.state.log_history if "loss" in e]
    assert len(logs) == 6  # 2 steps per epoch, 3 epochs
    for entry in logs[:2]:  # epoch 1: intermediate stage
        assert {"loss_hidden", "loss_attn"} <= entry.keys() and not {"loss_ce", "loss_kd"} & entry.keys()
        assert entry["loss"] == pytest.approx(entry["loss_hidden"] + entry["loss_attn"], rel=1e-4)
    for entry in logs[2:]:  # epochs 2-3: prediction stage
        assert {"loss_ce", "loss_kd"} <= entry.keys() and not {"loss_hidden", "loss_attn"} & entry.keys()
        assert entry["loss"] == pytest.approx(0.5 * entry["loss_ce"] + 0.5 * entry["loss_kd"], rel=1e-4)


def test_resumed_run_continues_in_its_stage(tmp_path):
    """Stopped at step 3 (checkpoint at step 2, the last step of the intermediate stage), resumed: same weights."""
    def run(out, callbacks=(), resume=None):
        student = tiny_model("seq", seed=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        t = DistillationTrainer(model=student, teacher_model=tiny_model("seq", seed=1),
                                args=config(tmp_path, output_dir=str(out), save_strategy="steps", save_steps=2),
                                train_dataset=tiny_dataset("seq", 8), data_collator=pad_collator,
                                callbacks=list(callbacks))
        t.train(resume_from_checkpoint=resume)
        return t

    full = run(tmp_path / "full")
    run(tmp_path / "part", callbacks=[StopAt(3)])
    resumed = run(tmp_path / "part", resume=str(tmp_path / "part" / "checkpoint-2"))
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name
    stages = [set(e) & {"loss_hidden", "loss_kd"} for e in resumed.state.log_history if "loss" in e]
    assert stages[-4:] == [{"loss_kd"}] * 4  # steps 3-6 after the resume: prediction stage


@pytest.mark.parametrize("kw, message", [
    ({"hidden_weight": 0.0, "attention_weight": 0.0}, "none is weighted"),
    ({"intermediate_epochs": 3}, "leaves no prediction-layer stage"),
    ({"intermediate_epochs": -1}, "intermediate_epochs must be >= 0"),
])
def test_bad_schedules_are_refused(tmp_path, kw, message):
    with pytest.raises(ValueError, match=message):
        config(tmp_path, **kw)


def test_prediction_stage_reads_the_teacher_cache_and_matches_a_live_teacher(tmp_path):
    """With teacher_cache_dir the teacher runs once over the data (the cache) and in the intermediate stage only;
    the losses equal those of the same run with a live teacher."""
    no_dropout = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)

    def run(name, **kw):
        teacher = tiny_model("seq", seed=1, **no_dropout)
        calls = []
        teacher.register_forward_hook(lambda *a: calls.append(1))
        t = DistillationTrainer(model=tiny_model("seq", seed=2, **no_dropout), teacher_model=teacher,
                                args=config(tmp_path, output_dir=str(tmp_path / name), **kw),
                                train_dataset=tiny_dataset("seq", 8), data_collator=pad_collator)
        t.train()
        return [e["loss"] for e in t.state.log_history if "loss" in e], len(calls)

    live, live_calls = run("live")
    cached, cached_calls = run("cached", teacher_cache_dir=str(tmp_path / "cache"))
    assert live_calls == 1 + 6  # the set-up probe of the layer outputs + 2 steps per epoch, 3 epochs
    # the probe + the cache pass (8 examples, one eval batch) + the 2 steps of the intermediate stage
    assert cached_calls == 1 + 1 + 2
    assert cached == pytest.approx(live, abs=1e-6) and len(cached) == 6


def test_a_cache_without_a_staged_schedule_still_refuses_layer_terms(tmp_path):
    with pytest.raises(ValueError, match="staged schedule"):
        config(tmp_path, intermediate_epochs=0, teacher_cache_dir=str(tmp_path / "cache"))

"""DistillationTrainer end to end on tiny random models: exactness, gradients, tasks, errors, checkpoints."""

import copy

import pytest
import torch
from safetensors.torch import load_file
from helpers.tiny_models import pad_collator, tiny_dataset, tiny_model
from transformers import Trainer, TrainingArguments

from distilkit import DistillationConfig, DistillationTrainer, losses
from distilkit.serialization.checkpoints import PROJECTIONS_FILE

NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def config(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, max_steps=3, learning_rate=1e-3,
                logging_steps=1, report_to="none", save_strategy="no", use_cpu=True, seed=7, data_seed=7)
    base.update(kw)
    return DistillationConfig(**base)


def trainer(tmp_path, student, teacher, task="seq", n=16, **kw):
    return DistillationTrainer(model=student, teacher_model=teacher, args=config(tmp_path, **kw),
                               train_dataset=tiny_dataset(task, n), data_collator=pad_collator)


def step_losses(t):
    return [entry["loss"] for entry in t.state.log_history if "loss" in entry]


@pytest.mark.parametrize("accumulation", [1, 2])
def test_alpha_zero_is_exactly_trainer_and_never_runs_teacher(tmp_path, accumulation):
    teacher = tiny_model("seq", seed=1)
    calls = []
    teacher.register_forward_hook(lambda *a: calls.append(1))
    base = tiny_model("seq", seed=2)
    plain_student, distil_student = copy.deepcopy(base), copy.deepcopy(base)
    common = dict(output_dir=str(tmp_path / "p"), per_device_train_batch_size=2, max_steps=4, learning_rate=1e-3,
                  logging_steps=1, report_to="none", save_strategy="no", use_cpu=True, seed=3,
                  gradient_accumulation_steps=accumulation)
    plain = Trainer(model=plain_student, args=TrainingArguments(**common), train_dataset=tiny_dataset("seq", 24),
                    data_collator=pad_collator)
    plain.train()
    common["output_dir"] = str(tmp_path / "d")
    distil = DistillationTrainer(model=distil_student, teacher_model=teacher,
                                 args=DistillationConfig(alpha=0.0, **common),
                                 train_dataset=tiny_dataset("seq", 24), data_collator=pad_collator)
    distil.train()
    assert not calls, "alpha == 0 with no hidden/attention loss must not run the teacher"
    assert len(step_losses(plain)) == 4
    for a, b in zip(step_losses(plain), step_losses(distil)):
        assert abs(a - b) < 1e-6
    for (name, p), q in zip(plain_student.named_parameters(), distil_student.parameters()):
        assert torch.equal(p, q), name


def test_gradients_reach_student_and_projections_never_teacher(tmp_path):
    teacher, student = tiny_model("seq", seed=1, hidden=48), tiny_model("seq", seed=2)
    t = trainer(tmp_path, student, teacher, hidden_weight=1.0)
    assert set(t.projections) == {"0", "1", "2"}  # widths differ: 32 -> 48 for each matched hidden state
    batch = pad_collator([tiny_dataset("seq", 4)[i] for i in range(4)])
    student.train()
    loss = t.compute_loss(student, batch)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert not any(p.requires_grad for p in teacher.parameters())
    projections = list(t.projections.parameters())
    assert projections and all(p.grad is not None and p.grad.abs().sum() > 0 for p in projections)
    assert student.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0


def test_training_leaves_teacher_untouched_and_in_eval_mode(tmp_path):
    teacher, student = tiny_model("seq", seed=1), tiny_model("seq", seed=2)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in student.state_dict().items()}
    teacher.train()  # a user hands over a teacher in train mode: the trainer must switch it
    t = trainer(tmp_path, student, teacher, hidden_weight=1.0, attention_weight=1.0)
    assert not teacher.training
    t.train()
    assert not teacher.training
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert any(not torch.equal(student_before[k], v) for k, v in student.state_dict().items())


def test_loss_is_the_weighted_sum_of_independently_computed_parts(tmp_path):
    teacher, student = tiny_model("seq", seed=1, **NO_DROPOUT), tiny_model("seq", seed=2, **NO_DROPOUT)
    t = trainer(tmp_path, student, teacher, alpha=0.3, temperature=3.0, hidden_weight=0.5, attention_weight=2.0,
                layer_map={0: 0, 2: 1}, hidden_loss="cosine")
    batch = pad_collator([tiny_dataset("seq", 4)[i] for i in range(4)])
    student.train()
    total = t.compute_loss(student, batch)
    with torch.no_grad():
        s = student(**batch, output_hidden_states=True, output_attentions=True)
        te = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     output_hidden_states=True, output_attentions=True)
    mask = batch["attention_mask"].bool()
    ce = torch.nn.functional.cross_entropy(s.logits, batch["labels"])
    kd = losses.soft_label_loss(s.logits, te.logits, 3.0)
    hidden = losses.hidden_state_loss(s.hidden_states[0], te.hidden_states[0], mask, "cosine") + \
        losses.hidden_state_loss(s.hidden_states[2], te.hidden_states[1], mask, "cosine")
    attn = losses.attention_loss(s.attentions[1], te.attentions[0], mask, "kl")
    expected = 0.7 * ce + 0.3 * kd + 0.5 * hidden + 2.0 * attn
    assert torch.allclose(total, expected, atol=1e-5)
    assert set(t._metrics) == {"loss_ce", "loss_kd", "loss_hidden", "loss_attn"}


@pytest.mark.parametrize("task, family, pairs", [
    ("seq", "bert", False), ("seq", "bert", True), ("token", "bert", False),
    ("causal", "llama", False), ("masked", "bert", False), ("seq", "distilbert", False), ("seq", "mpnet", False),
])
def test_a_few_real_training_steps_per_task(tmp_path, task, family, pairs):
    teacher = tiny_model(task, family=family, seed=1, layers=4)
    student = tiny_model(task, family=family, seed=2)
    before = copy.deepcopy(student.state_dict())
    dataset = tiny_dataset(task, 16, pairs=pairs)
    if family == "distilbert":
        dataset = dataset.remove_columns([c for c in ["token_type_ids"] if c in dataset.column_names])
    t = DistillationTrainer(model=student, teacher_model=teacher,
                            args=config(tmp_path, alpha=0.5, hidden_weight=1.0, attention_weight=1.0, max_steps=4),
                            train_dataset=dataset, data_collator=pad_collator)
    t.train()
    logs = [e for e in t.state.log_history if "loss" in e]
    assert len(logs) == 4
    for entry in logs:
        for key in ("loss_ce", "loss_kd", "loss_hidden", "loss_attn"):
            assert key in entry and entry[key] == entry[key]  # logged and not NaN
        assert entry["loss_kd"] >= 0 and entry["loss_hidden"] > 0
    assert any(not torch.equal(before[k], v) for k, v in student.state_dict().items())


def test_causal_lm_kd_uses_shifted_logits_and_ignores_masked_labels(tmp_path):
    teacher, student = tiny_model("causal", family="llama", seed=1), tiny_model("causal", family="llama", seed=2)
    t = trainer(tmp_path, student, teacher, task="causal", alpha=1.0)
    batch = pad_collator([tiny_dataset("causal", 3)[i] for i in range(3)])
    batch["labels"][:, :3] = -100  # e.g. a prompt that carries no loss
    student.eval()
    with torch.no_grad():
        s, te = student(**batch).logits, teacher(**batch).logits
    expected_mask = batch["labels"][:, 1:] != -100
    expected = losses.soft_label_loss(s[:, :-1], te[:, :-1], 2.0, expected_mask)
    student.train()
    for module in student.modules():  # the tiny llama has no dropout, but be explicit
        module.training = True
    assert torch.allclose(t.compute_loss(student, batch), expected, atol=1e-5)


def test_token_level_gradient_accumulation_matches_the_full_batch(tmp_path):
    """Batch 4 in one step == batch 2 with 2 accumulation steps (plain SGD, no dropout): num_items_in_batch."""
    teacher = tiny_model("token", seed=1, **NO_DROPOUT)
    base = tiny_model("token", seed=2, **NO_DROPOUT)
    results = []
    for batch_size, accumulation in ((4, 1), (2, 2)):
        student = copy.deepcopy(base)
        t = trainer(tmp_path, student, teacher, task="token", n=4, alpha=0.5, max_steps=1, optim="sgd",
                    learning_rate=0.5, per_device_train_batch_size=batch_size,
                    gradient_accumulation_steps=accumulation, lr_scheduler_type="constant")
        t.train()
        results.append(student.state_dict())
    for key in results[0]:
        assert torch.allclose(results[0][key], results[1][key], atol=1e-5), key


def test_teacher_dtype_casts_the_teacher(tmp_path):
    teacher, student = tiny_model("seq", seed=1), tiny_model("seq", seed=2)
    t = trainer(tmp_path, student, teacher, teacher_dtype="bfloat16")
    assert next(teacher.parameters()).dtype == torch.bfloat16
    t.train()
    assert next(student.parameters()).dtype == torch.float32
    losses = [e["loss"] for e in t.state.log_history if "loss" in e]
    assert len(losses) == 3 and all(loss == loss for loss in losses)  # one per step, none NaN


def test_checkpoints_hold_student_and_projections_but_never_the_teacher(tmp_path):
    teacher, student = tiny_model("seq", seed=1, hidden=48), tiny_model("seq", seed=2)
    t = trainer(tmp_path, student, teacher, hidden_weight=1.0, save_strategy="steps", save_steps=2, max_steps=2)
    t.train()
    checkpoint = tmp_path / "out" / "checkpoint-2"
    weights = load_file(checkpoint / "model.safetensors")
    assert set(weights) == set(student.state_dict())
    assert weights["bert.embeddings.word_embeddings.weight"].shape[1] == 32  # the student's width, not 48
    projections = load_file(checkpoint / PROJECTIONS_FILE)
    assert set(projections) == {f"{i}.{p}" for i in range(3) for p in ("weight", "bias")}
    t.save_model(str(tmp_path / "export"))
    exported = load_file(tmp_path / "export" / "model.safetensors")
    assert set(exported) == set(student.state_dict())
    assert not (tmp_path / "export" / PROJECTIONS_FILE).exists()


def test_resume_from_checkpoint_restores_projections_and_matches_uninterrupted_run(tmp_path):
    teacher = tiny_model("seq", seed=1, hidden=48, **NO_DROPOUT)
    base = tiny_model("seq", seed=2, **NO_DROPOUT)

    def run(out, max_steps, resume=None, student=None):
        student = student or copy.deepcopy(base)
        t = DistillationTrainer(model=student, teacher_model=teacher,
                                args=config(tmp_path, output_dir=str(out), hidden_weight=1.0, max_steps=max_steps,
                                            save_strategy="steps", save_steps=2),
                                train_dataset=tiny_dataset("seq", 32), data_collator=pad_collator)
        t.train(resume_from_checkpoint=resume)
        return t

    full = run(tmp_path / "full", 4)
    # Same schedule, stopped after the checkpoint at step 2, then resumed in a new trainer with a fresh student.
    interrupted = run(tmp_path / "part", 4)
    resumed = run(tmp_path / "part", 4, resume=str(tmp_path / "part" / "checkpoint-2"), student=copy.deepcopy(base))
    for k, v in full.model.state_dict().items():
        assert torch.allclose(v, resumed.model.state_dict()[k], atol=1e-6), k
    for k, v in full.projections.state_dict().items():
        assert torch.allclose(v, resumed.projections.state_dict()[k], atol=1e-6), k
    assert step_losses(full)[-1] == pytest.approx(step_losses(resumed)[-1], abs=1e-6)
    del interrupted


# ---- clear errors, raised when the trainer is built ----

@pytest.mark.parametrize("setting", [{"alpha": 0.5}, {"hidden_weight": 1.0}, {"alpha": 1.0, "attention_weight": 0.5}])
def test_error_explicit_distillation_setting_without_teacher(tmp_path, setting):
    given = ", ".join(f"{k}={v}" for k, v in setting.items())
    with pytest.raises(ValueError, match=f"setting.* {given} need.* a teacher: pass teacher_model="):
        trainer(tmp_path, tiny_model("seq"), None, **setting)


def test_error_plain_training_arguments(tmp_path):
    with pytest.raises(TypeError, match="DistillationConfig"):
        DistillationTrainer(model=tiny_model("seq"), teacher_model=tiny_model("seq"),
                            args=TrainingArguments(output_dir=str(tmp_path), report_to="none"))


def test_error_num_labels_mismatch_names_both(tmp_path):
    with pytest.raises(ValueError, match="num_labels: student has 3, teacher has 5"):
        trainer(tmp_path, tiny_model("seq", num_labels=3), tiny_model("seq", num_labels=5))


def test_error_vocabulary_mismatch_names_both(tmp_path):
    student = tiny_model("causal", family="llama")
    teacher = tiny_model("causal", family="llama", vocab_size=120)
    with pytest.raises(ValueError, match="vocabulary size: student has 100, teacher has 120"):
        trainer(tmp_path, student, teacher, task="causal")


def test_error_task_mismatch(tmp_path):
    with pytest.raises(ValueError, match="same kind of head"):
        trainer(tmp_path, tiny_model("seq"), tiny_model("token"))


def test_error_layer_map_out_of_range(tmp_path):
    with pytest.raises(ValueError, match=r"out of range.*student hidden states are 0..2, teacher hidden states 0..4"):
        trainer(tmp_path, tiny_model("seq"), tiny_model("seq", layers=4), hidden_weight=1.0, layer_map={2: 5})


def test_error_attention_matching_under_sdpa_says_how_to_switch(tmp_path):
    with pytest.raises(ValueError, match=r"student uses 'sdpa'.*set_attn_implementation\('eager'\)"):
        trainer(tmp_path, tiny_model("seq", attn="sdpa"), tiny_model("seq"), attention_weight=1.0)


def test_error_hidden_matching_on_a_model_without_hidden_states(tmp_path):
    student = tiny_model("seq")
    original = student.forward

    def forward_without_hidden_states(*args, **kwargs):
        out = original(*args, **kwargs)
        out.hidden_states = None
        return out

    student.forward = forward_without_hidden_states
    with pytest.raises(ValueError, match="hidden_weight=1.0 needs hidden states, but the student"):
        trainer(tmp_path, student, tiny_model("seq"), hidden_weight=1.0)


def test_error_missing_labels_with_hard_loss(tmp_path):
    t = trainer(tmp_path, tiny_model("seq", seed=2), tiny_model("seq", seed=1), alpha=0.5)
    batch = pad_collator([tiny_dataset("seq", 2)[i] for i in range(2)])
    del batch["labels"]
    t.model.train()
    with pytest.raises(ValueError, match="no 'labels'"):
        t.compute_loss(t.model, batch)


def test_alpha_one_trains_without_labels(tmp_path):
    student, teacher = tiny_model("seq", seed=2), tiny_model("seq", seed=1)
    dataset = tiny_dataset("seq", 8).remove_columns(["labels"])
    t = DistillationTrainer(model=student, teacher_model=teacher,
                            args=config(tmp_path, alpha=1.0, max_steps=2, remove_unused_columns=False),
                            train_dataset=dataset, data_collator=pad_collator)
    t.train()
    logs = [e for e in t.state.log_history if "loss" in e]
    assert len(logs) == 2 and all("loss_kd" in e and "loss_ce" not in e for e in logs)


def test_evaluation_reports_the_students_own_loss(tmp_path):
    student, teacher = tiny_model("seq", seed=2), tiny_model("seq", seed=1)
    t = DistillationTrainer(model=student, teacher_model=teacher, args=config(tmp_path),
                            train_dataset=tiny_dataset("seq", 8), eval_dataset=tiny_dataset("seq", 8, seed=5),
                            data_collator=pad_collator)
    plain = Trainer(model=student, args=TrainingArguments(output_dir=str(tmp_path / "p"), report_to="none",
                                                          use_cpu=True),
                    eval_dataset=tiny_dataset("seq", 8, seed=5), data_collator=pad_collator)
    assert t.evaluate()["eval_loss"] == pytest.approx(plain.evaluate()["eval_loss"], abs=1e-6)


def test_positional_arguments_keep_trainers_order(tmp_path):
    student = tiny_model("seq", seed=2)
    t = DistillationTrainer(student, config(tmp_path, alpha=0.0), pad_collator, tiny_dataset("seq", 8))
    assert t.data_collator is pad_collator and len(t.train_dataset) == 8 and t.teacher is None


def test_error_empty_dataset(tmp_path):
    with pytest.raises(ValueError, match="train_dataset is empty"):
        DistillationTrainer(model=tiny_model("seq"), args=config(tmp_path, alpha=0.0),
                            train_dataset=tiny_dataset("seq", 4).select([]), data_collator=pad_collator)


@pytest.mark.parametrize("task", ["seq", "token"])
def test_error_labels_outside_num_labels(tmp_path, task):
    dataset = tiny_dataset(task, 8, num_labels=5)  # labels up to 4, model has 3 labels
    with pytest.raises(ValueError, match=r"labels \[3, 4\] outside 0..2, but the model has num_labels=3"):
        DistillationTrainer(model=tiny_model(task), teacher_model=tiny_model(task), args=config(tmp_path),
                            train_dataset=dataset, data_collator=pad_collator)


def test_same_seed_gives_identical_results(tmp_path):
    def run(out):
        student = tiny_model("seq", seed=2)  # dropout on: the seed must fix it too
        t = DistillationTrainer(model=student, teacher_model=tiny_model("seq", seed=1),
                                args=config(tmp_path, output_dir=str(tmp_path / out), hidden_weight=1.0,
                                            attention_weight=1.0),
                                train_dataset=tiny_dataset("seq", 16), data_collator=pad_collator)
        t.train()
        return student.state_dict(), step_losses(t)

    (a, la), (b, lb) = run("a"), run("b")
    assert la == lb
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_pruning_while_distilling_from_config_saves_a_pruned_student(tmp_path):
    import distilkit
    from distilkit.pruning import kept_heads

    teacher, student = tiny_model("seq", seed=1), tiny_model("seq", seed=2)
    t = trainer(tmp_path, student, teacher, max_steps=6, prune_heads_fraction=0.5, prune_every_steps=2,
                prune_num_prunes=2, attention_weight=1.0, hidden_weight=1.0)
    t.train()
    assert sum(len(h) for h in kept_heads(student)) == 4  # 8 heads -> half pruned in two steps
    events = [e for e in t.state.log_history if "pruning/removed_heads" in e]
    assert [e["step"] for e in events] == [2, 4]
    t.save_model(str(tmp_path / "pruned"))
    reloaded = distilkit.from_pretrained(tmp_path / "pruned", attn_implementation="eager").eval()
    batch = pad_collator([tiny_dataset("seq", 3)[i] for i in range(3)])
    batch.pop("labels")
    student.eval()
    with torch.no_grad():
        assert torch.equal(student(**batch).logits, reloaded(**batch).logits)


def test_pruning_fraction_is_validated():
    with pytest.raises(ValueError, match=r"prune_heads_fraction must be in \[0, 1\).*1.5"):
        DistillationConfig(output_dir="x", report_to="none", prune_heads_fraction=1.5)

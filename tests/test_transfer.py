"""Transfer data (unlabelled examples the teacher labels) in DistillationTrainer: the per-example loss, gradient
accumulation, the teacher cache, and every bad input."""

import copy

import pytest
import torch
from helpers.tiny_models import pad_collator, tiny_dataset, tiny_model

from distilkit import DistillationConfig, DistillationTrainer, losses

NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def config(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, max_steps=2, learning_rate=1e-3,
                logging_steps=1, report_to="none", save_strategy="no", use_cpu=True, seed=7, data_seed=7,
                remove_unused_columns=False)
    base.update(kw)
    return DistillationConfig(**base)


def unlabelled(n, seed=5):
    return tiny_dataset("seq", n, seed=seed).remove_columns("labels")


def make_trainer(tmp_path, student, teacher, n_labelled=4, n_transfer=4, **kw):
    return DistillationTrainer(model=student, teacher_model=teacher, args=config(tmp_path, **kw),
                               train_dataset=tiny_dataset("seq", n_labelled), transfer_dataset=unlabelled(n_transfer),
                               data_collator=pad_collator)


def test_transfer_examples_join_the_training_set_without_labels(tmp_path):
    t = make_trainer(tmp_path, tiny_model("seq", seed=2), tiny_model("seq", seed=1), n_labelled=6, n_transfer=10)
    labels = t.train_dataset["labels"]
    assert len(t.train_dataset) == 16 and labels[6:] == [-100] * 10 and all(0 <= v < 3 for v in labels[:6])


@pytest.mark.parametrize("alpha", [0.3, 1.0])
def test_mixed_batch_loss_is_the_per_example_mean(tmp_path, alpha):
    """Labelled example: (1 - alpha) CE + alpha KD; transfer example: alpha KD; the batch loss is their mean."""
    teacher, student = tiny_model("seq", seed=1, **NO_DROPOUT), tiny_model("seq", seed=2, **NO_DROPOUT)
    t = make_trainer(tmp_path, student, teacher, alpha=alpha, temperature=2.0)
    rows = [t.train_dataset[i] for i in (0, 1, 5, 6, 7)]  # 2 labelled, then 3 transfer
    batch = pad_collator(rows)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        s, te = student(**inputs).logits, teacher(**inputs).logits
    ce = torch.nn.functional.cross_entropy(s[:2], batch["labels"][:2], reduction="none")
    kd = torch.stack([losses.soft_label_loss(s[i:i + 1], te[i:i + 1], 2.0) for i in range(5)])
    per_example = alpha * kd
    per_example[:2] += (1 - alpha) * ce
    student.train()
    assert torch.allclose(t.compute_loss(student, batch), per_example.mean(), atol=1e-5)


def test_batch_of_only_transfer_examples_is_the_teacher_terms(tmp_path):
    teacher, student = tiny_model("seq", seed=1, **NO_DROPOUT), tiny_model("seq", seed=2, **NO_DROPOUT)
    t = make_trainer(tmp_path, student, teacher, alpha=0.5, hidden_weight=2.0)
    batch = pad_collator([t.train_dataset[i] for i in (4, 5, 6)])
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        s = student(**inputs, output_hidden_states=True)
        te = teacher(**inputs, output_hidden_states=True)
    mask = inputs["attention_mask"].bool()
    hidden = sum(losses.hidden_state_loss(s.hidden_states[i], te.hidden_states[i], mask) for i in range(3))
    expected = 0.5 * losses.soft_label_loss(s.logits, te.logits, 2.0) + 2.0 * hidden
    student.train()
    assert torch.allclose(t.compute_loss(student, batch), expected, atol=1e-5)
    assert "loss_ce" not in t._metrics and "loss_kd" in t._metrics


def test_gradient_accumulation_counts_every_example_once(tmp_path):
    """Batch 4 (2 labelled + 2 transfer) in one step == batch 2 with 2 accumulation steps (SGD, no dropout)."""
    teacher, base = tiny_model("seq", seed=1, **NO_DROPOUT), tiny_model("seq", seed=2, **NO_DROPOUT)
    results = []
    for batch_size, accumulation in ((4, 1), (2, 2)):
        student = copy.deepcopy(base)
        t = make_trainer(tmp_path, student, teacher, n_labelled=2, n_transfer=2, alpha=0.5, max_steps=1,
                         optim="sgd", learning_rate=0.5, per_device_train_batch_size=batch_size,
                         gradient_accumulation_steps=accumulation, lr_scheduler_type="constant")
        t.train()
        results.append(student.state_dict())
    for key in results[0]:
        assert torch.allclose(results[0][key], results[1][key], atol=1e-5), key


def test_teacher_cache_covers_the_transfer_set_and_trains_as_the_live_teacher(tmp_path):
    teacher, base = tiny_model("seq", seed=1, **NO_DROPOUT), tiny_model("seq", seed=2, **NO_DROPOUT)
    weights = []
    for cache in (None, str(tmp_path / "cache")):
        student = copy.deepcopy(base)
        t = make_trainer(tmp_path, student, teacher, n_labelled=8, n_transfer=8, alpha=0.7, max_steps=3,
                         teacher_cache_dir=cache)
        t.train()
        if cache:
            assert len(t.train_dataset["teacher_logits"]) == 16
        weights.append(student.state_dict())
    for key in weights[0]:
        assert torch.allclose(weights[0][key], weights[1][key], atol=1e-5), key


def test_training_with_transfer_data_moves_the_student(tmp_path):
    student = tiny_model("seq", seed=2)
    before = copy.deepcopy(student.state_dict())
    t = make_trainer(tmp_path, student, tiny_model("seq", seed=1), n_labelled=1, n_transfer=11, max_steps=3)
    t.train()
    assert any(not torch.equal(before[k], v) for k, v in student.state_dict().items())
    losses = [e["loss"] for e in t.state.log_history if "loss" in e]
    assert len(losses) == 3 and all(loss == loss for loss in losses)  # one per step, none NaN


@pytest.mark.parametrize(
    "change, message",
    [
        ({"transfer_dataset": tiny_dataset("seq", 4)}, "transfer_dataset has a 'labels' column"),
        ({"transfer_dataset": unlabelled(4).select([])}, "transfer_dataset is empty"),
        ({"transfer_dataset": unlabelled(4).remove_columns("attention_mask")},
         r"lacks the columns \['attention_mask'\]"),
        ({"alpha": 0.0}, "no teacher term is weighted"),
        ({"transfer_dataset": [{"input_ids": [1, 2]}]}, "must be a datasets.Dataset"),
    ],
)
def test_bad_transfer_data_is_refused_before_training(tmp_path, change, message):
    kwargs = dict(model=tiny_model("seq", seed=2), teacher_model=tiny_model("seq", seed=1),
                  args=config(tmp_path, alpha=change.pop("alpha", 0.5)), train_dataset=tiny_dataset("seq", 4),
                  transfer_dataset=unlabelled(4), data_collator=pad_collator)
    kwargs.update(change)
    with pytest.raises((ValueError, TypeError), match=message):
        DistillationTrainer(**kwargs)


@pytest.mark.parametrize("task, message", [("token", "sequence classification only, not token-classification"),
                                           ("causal", "add the text to train_dataset instead")])
def test_transfer_data_is_refused_where_it_is_not_defined(tmp_path, task, message):
    transfer = tiny_dataset(task, 4).remove_columns("labels")
    with pytest.raises(ValueError, match=message):
        DistillationTrainer(model=tiny_model(task, seed=2), teacher_model=tiny_model(task, seed=1),
                            args=config(tmp_path), train_dataset=tiny_dataset(task, 4), transfer_dataset=transfer,
                            data_collator=pad_collator)


def test_a_cache_too_large_for_its_disk_is_refused_before_the_teacher_pass(tmp_path, monkeypatch):
    from collections import namedtuple

    from distilkit import teacher_cache

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(teacher_cache.shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 100, 100))
    monkeypatch.setattr(teacher_cache, "compute_teacher_outputs",
                        lambda *a, **k: pytest.fail("the teacher pass ran before the disk check"))
    cache = tmp_path / "cache"
    t = make_trainer(tmp_path, tiny_model("seq", seed=2), tiny_model("seq", seed=1), n_transfer=40,
                     teacher_cache_dir=str(cache))
    with pytest.raises(ValueError, match=r"needs about .* MiB in teacher_cache_dir=.*has 0 MiB free.*max_transfer"):
        t.train()
    assert t.state.global_step == 0
    assert not cache.exists() or not any(cache.iterdir())


def test_cache_size_estimate_follows_the_stored_values():
    from distilkit.teacher_cache import estimated_bytes
    from distilkit.tasks import Task

    rows = tiny_dataset("seq", 10)
    assert estimated_bytes(rows, Task.SEQUENCE_CLASSIFICATION, 3, None) == int(10 * 3 * 8 * 1.1)
    tokens = sum(sum(m) for m in rows["attention_mask"])
    assert estimated_bytes(rows, Task.CAUSAL_LM, 100, 4) == int(tokens * (4 * 16 + 8) * 1.1)


def test_staged_schedule_with_transfer_data_needs_a_soft_label_term(tmp_path):
    """With alpha=0 the prediction stage gives transfer examples nothing to learn: refused before training."""
    with pytest.raises(ValueError, match="prediction-layer stage the transfer examples would have nothing"):
        make_trainer(tmp_path, tiny_model("seq", seed=2), tiny_model("seq", seed=1), alpha=0.0, hidden_weight=1.0,
                     intermediate_epochs=1, num_train_epochs=2, max_steps=-1)


def test_card_names_the_transfer_data_and_the_schedule(tmp_path):
    from distilkit.model_card import recipe_from_config

    args = config(tmp_path, alpha=0.5, hidden_weight=1.0, intermediate_epochs=1, num_train_epochs=3, max_steps=-1)
    group = recipe_from_config(args, transfer_examples=20000)["Distillation"]
    assert group["transfer data"].startswith("20,000 unlabelled examples")
    assert group["schedule"] == ("staged (TinyBERT): the first 1 epochs train 1 × hidden-state mse, summed over "
                                 "matched layers alone, then 0.5 × cross-entropy on the labels + 0.5 × T²·KL(teacher "
                                 "‖ student) on temperature-T soft labels alone")

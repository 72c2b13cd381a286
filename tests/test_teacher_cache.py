"""The teacher-output cache: same losses as the live teacher, reuse across runs, invalidation."""

import copy

import pytest
import torch
from helpers.tiny_models import pad_collator, tiny_dataset, tiny_model

from distilkit import DistillationConfig, DistillationTrainer, losses

NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def run(tmp_path, name, teacher, student, task="seq", dataset=None, cache=True, **kw):
    args = DistillationConfig(output_dir=str(tmp_path / name), per_device_train_batch_size=4, max_steps=4,
                              num_train_epochs=2, learning_rate=1e-3, logging_steps=1, report_to="none",
                              save_strategy="no", use_cpu=True, seed=3, alpha=0.7, temperature=2.0,
                              teacher_cache_dir=str(tmp_path / "cache") if cache else None, **kw)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args,
                                  train_dataset=dataset if dataset is not None else tiny_dataset(task, 12),
                                  data_collator=pad_collator)
    trainer.train()
    return trainer, [e["loss"] for e in trainer.state.log_history if "loss" in e]


def count_forwards(model):
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    return calls


@pytest.mark.parametrize("task, family", [("seq", "bert"), ("token", "bert")])
def test_cached_and_live_teacher_give_the_same_losses(tmp_path, task, family):
    teacher = tiny_model(task, family=family, seed=1, **NO_DROPOUT)
    base = tiny_model(task, family=family, seed=2, **NO_DROPOUT)
    _, live = run(tmp_path, "live", teacher, copy.deepcopy(base), task, cache=False)
    calls = count_forwards(teacher)
    trainer, cached = run(tmp_path, "cached", teacher, copy.deepcopy(base), task)
    # Only the one caching pass runs the teacher: 12 examples in eval batches of 8 -> 2 forwards.
    assert len(calls) == 2
    assert live == pytest.approx(cached, abs=1e-6) and len(cached) == 4


def test_second_run_reuses_the_cache_without_any_teacher_forward(tmp_path):
    teacher = tiny_model("seq", seed=1)
    run(tmp_path, "first", teacher, tiny_model("seq", seed=2))
    calls = count_forwards(teacher)
    run(tmp_path, "second", teacher, tiny_model("seq", seed=2))
    assert calls == []
    assert len([p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]) == 1


def test_changed_teacher_or_dataset_invalidates_the_cache(tmp_path):
    teacher = tiny_model("seq", seed=1)
    run(tmp_path, "a", teacher, tiny_model("seq", seed=2))
    with torch.no_grad():
        teacher.classifier.bias += 1.0
    calls = count_forwards(teacher)
    run(tmp_path, "b", teacher, tiny_model("seq", seed=2))
    assert calls, "a changed teacher must be run again"
    run(tmp_path, "c", teacher, tiny_model("seq", seed=2), dataset=tiny_dataset("seq", 12, seed=9))
    assert len([p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]) == 3


def test_evaluating_the_teacher_keeps_its_fingerprint_and_its_cache(tmp_path):
    """transformers sets config.problem_type at the first forward with labels, and a Trainer turns use_cache off:
    neither changes the teacher, so the next run (compress evaluates its teacher, then may run again in the same
    process) still reads the cache; a field that does change the model still invalidates it."""
    from transformers import Trainer, TrainingArguments

    from distilkit.teacher_cache import teacher_fingerprint

    teacher = tiny_model("seq", seed=1)
    before = teacher_fingerprint(teacher)
    run(tmp_path, "a", teacher, tiny_model("seq", seed=2))
    Trainer(model=teacher, args=TrainingArguments(output_dir=str(tmp_path / "eval"), report_to="none", use_cpu=True),
            eval_dataset=tiny_dataset("seq", 8), data_collator=pad_collator).evaluate()
    assert teacher.config.problem_type == "single_label_classification"  # what transformers changed
    assert teacher_fingerprint(teacher) == before
    calls = count_forwards(teacher)
    run(tmp_path, "b", teacher, tiny_model("seq", seed=2))
    assert calls == []
    teacher.config.hidden_act = "relu"
    assert teacher_fingerprint(teacher) != before


def test_causal_lm_top_k_cache(tmp_path):
    teacher = tiny_model("causal", family="llama", seed=1)
    base = tiny_model("causal", family="llama", seed=2)
    _, live = run(tmp_path, "live", teacher, copy.deepcopy(base), "causal", cache=False)
    # k = the whole vocabulary: exactly the live loss.
    _, full = run(tmp_path, "full", teacher, copy.deepcopy(base), "causal", teacher_cache_top_k=100)
    assert live == pytest.approx(full, abs=1e-5)
    # The default k = 32 of 100 tokens keeps most of the mass of a peaked teacher: close, not equal.
    _, top32 = run(tmp_path, "top", teacher, copy.deepcopy(base), "causal")
    assert all(t == t for t in top32) and top32 != full


def test_cache_refuses_hidden_or_attention_losses():
    with pytest.raises(ValueError, match="caches teacher logits only.*hidden_weight=1.0"):
        DistillationConfig(output_dir="x", teacher_cache_dir="c", hidden_weight=1.0, report_to="none")
    with pytest.raises(ValueError, match="teacher_cache_top_k must be >= 1"):
        DistillationConfig(output_dir="x", teacher_cache_dir="c", teacher_cache_top_k=0, report_to="none")


def test_top_k_loss_with_whole_vocabulary_equals_full_loss():
    torch.manual_seed(0)
    s, t = torch.randn(2, 5, 7), torch.randn(2, 5, 7)
    mask = torch.rand(2, 5) > 0.3
    values, indices = t.topk(7, dim=-1)
    lse = torch.logsumexp(t / 3.0, dim=-1)
    assert torch.allclose(losses.soft_label_loss_topk(s, values, indices, lse, 3.0, mask),
                          losses.soft_label_loss(s, t, 3.0, mask), atol=1e-6)
    # With k < V only the kept tokens count: compare with an explicit sum over them.
    values, indices = t.topk(3, dim=-1)
    p_t = torch.softmax(t / 3.0, -1).gather(-1, indices)
    log_p_s = torch.log_softmax(s / 3.0, -1).gather(-1, indices)
    expected = 9.0 * (p_t * (p_t.log() - log_p_s)).sum(-1)[mask].mean()
    assert torch.allclose(losses.soft_label_loss_topk(s, values, indices, lse, 3.0, mask), expected, atol=1e-6)


@pytest.mark.parametrize("task", ["seq", "token"])
def test_teacher_pass_batches_shortest_first_and_keeps_the_dataset_order(task):
    from distilkit.tasks import Task
    from distilkit.teacher_cache import compute_teacher_outputs

    teacher = tiny_model(task, seed=1, **NO_DROPOUT).eval()
    dataset = tiny_dataset(task, 11, seed=5)
    widths = []
    teacher.register_forward_hook(lambda module, args, kwargs, out: widths.append(kwargs["input_ids"].shape[1]),
                                  with_kwargs=True)
    kind = Task.SEQUENCE_CLASSIFICATION if task == "seq" else Task.TOKEN_CLASSIFICATION
    cached = compute_teacher_outputs(dataset, teacher, pad_collator, kind, top_k=None, temperature=1.0,
                                     batch_size=4, device="cpu")
    assert widths == sorted(widths) and len(widths) == 3  # padded widths grow: batches go shortest first
    lengths = [len(ids) for ids in dataset["input_ids"]]
    assert lengths != sorted(lengths)  # otherwise the order would not be tested
    with torch.no_grad():
        for i in range(len(dataset)):  # reference: each example alone, unpadded
            expected = teacher(input_ids=torch.tensor([dataset[i]["input_ids"]])).logits[0]
            torch.testing.assert_close(torch.tensor(cached[i]["teacher_logits"]), expected, atol=1e-5, rtol=1e-5)

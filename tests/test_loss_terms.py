"""The loss-term table: each entry against the loss functions it stands for, and what it asks the models for."""

from dataclasses import fields
from types import SimpleNamespace

import pytest
import torch

from distilkit import DistillationConfig, losses
from distilkit.loss_terms import LOSS_TERMS, Batch, TeacherOutputs, compute_terms, describe, outputs_needed, \
    weighted_total
from distilkit.tasks import Task


def make(**kwargs):
    return DistillationConfig(output_dir="unused", report_to="none", **kwargs)


def test_every_term_is_weighted_by_a_config_field_and_logged_under_its_own_name():
    config_fields = {f.name for f in fields(DistillationConfig)}
    assert all(term.weight_field in config_fields for term in LOSS_TERMS)
    assert len({term.name for term in LOSS_TERMS}) == len(LOSS_TERMS)


def test_outputs_needed_follow_the_weighted_terms():
    assert outputs_needed(make(alpha=0.5), "student") == frozenset()
    assert outputs_needed(make(hidden_weight=1.0), "teacher") == {"hidden_states"}
    assert outputs_needed(make(hidden_weight=1.0, attention_weight=0.5), "student") == {"hidden_states",
                                                                                          "attentions"}


def _batch(args, labels=True):
    torch.manual_seed(0)
    student = SimpleNamespace(loss=torch.tensor(0.7), logits=torch.randn(4, 3),
                              hidden_states=tuple(torch.randn(4, 5, 8) for _ in range(3)),
                              attentions=tuple(torch.rand(4, 2, 5, 5).softmax(-1) for _ in range(2)))
    teacher = TeacherOutputs(logits=torch.randn(4, 3), hidden_states=tuple(torch.randn(4, 5, 8) for _ in range(3)),
                             attentions=tuple(torch.rand(4, 2, 5, 5).softmax(-1) for _ in range(2)))
    return Batch(args=args, task=Task.SEQUENCE_CLASSIFICATION, student=student, teacher=teacher,
                 labels=torch.tensor([0, 1, 2, 0]) if labels else None, attention_mask=torch.ones(4, 5),
                 layer_map={0: 0, 2: 2})


def test_terms_equal_the_loss_functions_and_the_total_is_their_weighted_sum():
    args = make(alpha=0.25, temperature=3.0, hidden_weight=2.0, attention_weight=0.5, attention_loss="mse")
    batch = _batch(args)
    parts = compute_terms(batch)
    s, t, mask = batch.student, batch.teacher, batch.token_mask
    expected = {
        "loss_ce": s.loss,
        "loss_kd": losses.soft_label_loss(s.logits, t.logits, 3.0),
        "loss_hidden": sum(losses.hidden_state_loss(s.hidden_states[i], t.hidden_states[i], mask) for i in (0, 2)),
        "loss_attn": losses.attention_loss(s.attentions[1], t.attentions[1], mask, "mse"),  # layer 0: no map
    }
    assert parts.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.allclose(parts[name], value), name
    total = 0.75 * expected["loss_ce"] + 0.25 * expected["loss_kd"] + 2.0 * expected["loss_hidden"] \
        + 0.5 * expected["loss_attn"]
    assert torch.allclose(weighted_total(args, parts), total)


def test_a_term_at_weight_zero_is_not_logged_and_the_hard_label_term_needs_labels():
    args = make(alpha=1.0)
    assert set(compute_terms(_batch(args))) == {"loss_kd"}  # the CE is not trained on, so it is not logged
    assert set(compute_terms(_batch(make(alpha=0.5)))) == {"loss_ce", "loss_kd"}
    assert set(compute_terms(_batch(make(alpha=0.5), labels=False))) == {"loss_kd"}
    parts = compute_terms(_batch(args, labels=False))
    assert set(parts) == {"loss_kd"}
    assert torch.equal(weighted_total(args, parts), parts["loss_kd"])


def test_topk_teacher_outputs_use_the_topk_loss():
    args = make(alpha=1.0)
    batch = _batch(args)
    full = torch.randn(4, 3)
    values, indices = full.topk(3, dim=-1)
    batch.teacher = TeacherOutputs.from_cache({"teacher_topk_values": values, "teacher_topk_indices": indices,
                                               "teacher_lse": torch.logsumexp(full / 2.0, -1)})
    # k = all classes: identical to the full-logit loss.
    assert torch.allclose(compute_terms(batch)["loss_kd"], losses.soft_label_loss(batch.student.logits, full, 2.0),
                          atol=1e-6)


def test_description_lists_the_weighted_terms():
    text = describe(make(alpha=0.5, hidden_weight=1.0, hidden_loss="cosine"))
    assert text == ("0.5 × cross-entropy on the labels + 0.5 × T²·KL(teacher ‖ student) on temperature-T soft labels"
                    " + 1.0 × hidden-state cosine, summed over matched layers")


@pytest.mark.parametrize("weights, named", [({"hidden_weight": 1.0}, "hidden_weight=1.0"),
                                            ({"attention_weight": 0.5}, "attention_weight=0.5")])
def test_cache_refuses_terms_it_cannot_serve(weights, named):
    with pytest.raises(ValueError, match=f"caches teacher logits only, but {named}"):
        make(teacher_cache_dir="cache", **weights)

"""Every loss against an independent reference computation."""

import pytest
import torch
import torch.nn.functional as F

from distilkit import losses


def reference_kd(student, teacher, T):
    # torch's kl_div with explicit softmaxes, one row at a time: KL(p_teacher || p_student) * T^2.
    rows_s, rows_t = student.reshape(-1, student.shape[-1]), teacher.reshape(-1, teacher.shape[-1])
    values = [
        F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1), reduction="sum") * T * T
        for s, t in zip(rows_s, rows_t)
    ]
    return torch.stack(values)


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0])
def test_soft_label_loss_matches_kl_div_per_example(T):
    torch.manual_seed(0)
    s, t = torch.randn(8, 5), torch.randn(8, 5) * 3
    expected = reference_kd(s, t, T).mean()
    assert torch.allclose(losses.soft_label_loss(s, t, T), expected, atol=1e-6)


def test_soft_label_loss_token_level_mask_averages_selected_positions():
    torch.manual_seed(1)
    s, t = torch.randn(2, 6, 11), torch.randn(2, 6, 11)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [0, 1, 1, 1, 1, 1]], dtype=torch.bool)
    per_position = reference_kd(s, t, 2.0).view(2, 6)
    expected = per_position[mask].mean()
    assert torch.allclose(losses.soft_label_loss(s, t, 2.0, mask), expected, atol=1e-6)
    # Changing the logits of a masked-out position changes nothing.
    s2 = s.clone()
    s2[0, 4] += 100
    assert torch.allclose(losses.soft_label_loss(s2, t, 2.0, mask), expected, atol=1e-6)


def test_soft_label_loss_is_zero_for_identical_logits_and_positive_otherwise():
    x = torch.randn(4, 3)
    assert losses.soft_label_loss(x, x.clone(), 3.0).abs() < 1e-6
    assert losses.soft_label_loss(x, x.flip(0), 3.0) > 0


def test_soft_label_loss_empty_mask_is_zero_not_nan():
    s, t = torch.randn(1, 3, 4), torch.randn(1, 3, 4)
    value = losses.soft_label_loss(s, t, 2.0, torch.zeros(1, 3, dtype=torch.bool))
    assert value.item() == 0.0


def test_soft_label_loss_rejects_mismatched_shapes_and_bad_temperature():
    with pytest.raises(ValueError, match="vocabulary"):
        losses.soft_label_loss(torch.randn(2, 3), torch.randn(2, 4), 2.0)
    with pytest.raises(ValueError, match="temperature"):
        losses.soft_label_loss(torch.randn(2, 3), torch.randn(2, 3), 0.0)


def test_soft_label_gradient_matches_analytic_form():
    # d/ds of T^2 KL(softmax(t/T) || softmax(s/T)) = T * (softmax(s/T) - softmax(t/T)), per example (mean over 1).
    s, t, T = torch.randn(1, 6, requires_grad=True), torch.randn(1, 6), 3.0
    losses.soft_label_loss(s, t, T).backward()
    expected = T * (F.softmax(s.detach() / T, -1) - F.softmax(t / T, -1))
    assert torch.allclose(s.grad, expected, atol=1e-6)


def test_hidden_state_mse_and_cosine_against_loops():
    torch.manual_seed(2)
    s, t = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    mse_terms, cos_terms = [], []
    for b in range(2):
        for i in range(5):
            if mask[b, i]:
                mse_terms.append(F.mse_loss(s[b, i], t[b, i]))
                cos_terms.append(1 - F.cosine_similarity(s[b, i], t[b, i], dim=0))
    assert torch.allclose(losses.hidden_state_loss(s, t, mask, "mse"), torch.stack(mse_terms).mean(), atol=1e-6)
    assert torch.allclose(losses.hidden_state_loss(s, t, mask, "cosine"), torch.stack(cos_terms).mean(), atol=1e-6)
    assert torch.allclose(losses.hidden_state_loss(s, t, None, "mse"), F.mse_loss(s, t), atol=1e-6)
    with pytest.raises(ValueError, match="project"):
        losses.hidden_state_loss(s, torch.randn(2, 5, 16))
    with pytest.raises(ValueError, match="cosine"):
        losses.hidden_state_loss(s, t, loss="l1")


def attention_probs(*shape):
    return torch.softmax(torch.randn(*shape), dim=-1)


def test_attention_kl_against_kl_div_loop():
    torch.manual_seed(3)
    s, t = attention_probs(2, 3, 4, 4), attention_probs(2, 3, 4, 4)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    per_query = torch.zeros(2, 4)
    for b in range(2):
        for q in range(4):
            per_query[b, q] = torch.stack(
                [F.kl_div(s[b, h, q].log(), t[b, h, q], reduction="sum") for h in range(3)]
            ).mean()
    expected = per_query[mask].mean()
    assert torch.allclose(losses.attention_loss(s, t, mask, "kl"), expected, atol=1e-6)


def test_attention_mse_and_head_averaging_for_different_head_counts():
    torch.manual_seed(4)
    s, t = attention_probs(2, 2, 5, 5), attention_probs(2, 4, 5, 5)
    s_mean, t_mean = s.mean(1), t.mean(1)
    expected = (s_mean - t_mean).pow(2).sum(-1).mean()
    assert torch.allclose(losses.attention_loss(s, t, None, "mse"), expected, atol=1e-6)


def test_attention_kl_handles_zero_probabilities():
    # Causal / padded maps hold exact zeros: 0 * log 0 must count as 0, not NaN.
    t = torch.tensor([[[[1.0, 0.0], [0.5, 0.5]]]])
    s = torch.tensor([[[[1.0, 0.0], [0.25, 0.75]]]])
    value = losses.attention_loss(s, t, None, "kl")
    expected = (0.5 * torch.log(torch.tensor(0.5 / 0.25)) + 0.5 * torch.log(torch.tensor(0.5 / 0.75))) / 2
    assert torch.isfinite(value) and torch.allclose(value, expected, atol=1e-6)


def _teacher_gets_no_gradient(call, shape):
    """Both sides require grad (a teacher forward outside no_grad); after backward only the student has a gradient."""
    torch.manual_seed(7)
    student, teacher = torch.randn(*shape, requires_grad=True), torch.randn(*shape, requires_grad=True)
    call(student, teacher).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_soft_label_loss_does_not_train_the_teacher():
    _teacher_gets_no_gradient(lambda s, t: losses.soft_label_loss(s, t, 2.0), (4, 5))


def test_soft_label_loss_topk_does_not_train_the_teacher():
    torch.manual_seed(3)
    student = torch.randn(2, 3, 10, requires_grad=True)
    full = torch.randn(2, 3, 10, requires_grad=True)  # a teacher forward outside no_grad
    values, indices = full.topk(4, dim=-1)
    lse = torch.logsumexp(full / 2.0, dim=-1)
    losses.soft_label_loss_topk(student, values, indices, lse, 2.0).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert full.grad is None


def test_hidden_state_loss_does_not_train_the_teacher():
    for kind in ("mse", "cosine"):
        _teacher_gets_no_gradient(lambda s, t: losses.hidden_state_loss(s, t, loss=kind), (2, 3, 8))


def test_attention_loss_does_not_train_the_teacher():
    for kind in ("kl", "mse"):
        def call(s, t):
            return losses.attention_loss(s.softmax(-1), t.softmax(-1), loss=kind)

        _teacher_gets_no_gradient(call, (2, 4, 5, 5))

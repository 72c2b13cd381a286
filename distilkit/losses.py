"""Distillation losses as pure functions of tensors.

Each returns the mean over the items that count: examples for sequence-level logits, positions where `mask` is
true for token-level tensors. The trainer only weights and sums them.

The teacher's tensors are targets: every function detaches them, so a teacher forward run outside `no_grad` in a
user's own loop receives no gradient (and is never trained by these losses).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of `values` (one per item) over the items where `mask` is true (all items without a mask)."""
    if mask is None:
        return values.mean()
    mask = mask.to(dtype=torch.bool, device=values.device)
    if mask.shape != values.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match the per-item loss shape {tuple(values.shape)}.")
    # Sum / count, and 0 (not NaN) when nothing is selected: a batch of only padding contributes no loss.
    return values.masked_fill(~mask, 0.0).sum() / mask.sum().clamp_min(1)


def soft_label_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)) (Hinton et al., 2015).

    Logits are [..., num_classes]; the KL is summed over classes and averaged over the remaining positions (or
    over positions where `mask` is true, for token-level tasks). The T^2 factor keeps the gradient scale of the
    soft term independent of T.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} differ "
            "in shape; logit distillation needs the same label set / vocabulary and the same positions."
        )
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    student_log_probs = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher_log_probs = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    kl = (teacher_log_probs.exp() * (teacher_log_probs - student_log_probs)).sum(dim=-1)
    return temperature**2 * _masked_mean(kl, mask)


def soft_label_loss_topk(
    student_logits: torch.Tensor,
    teacher_topk_values: torch.Tensor,
    teacher_topk_indices: torch.Tensor,
    teacher_lse: torch.Tensor,
    temperature: float,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """`soft_label_loss` when only the teacher's top-k logits (and its log-normaliser at T) were kept.

    With `teacher_lse = logsumexp(z_t / T)` over the full vocabulary, the teacher's probabilities of the kept
    tokens are exact, and the KL is summed over them: T^2 * sum_k p_t,k (log p_t,k - log p_s,k). The mass outside
    the top k is dropped; with k = vocabulary size this equals `soft_label_loss`.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    student_log_probs = F.log_softmax(student_logits.float() / temperature, dim=-1)
    student_at_k = student_log_probs.gather(-1, teacher_topk_indices.long().clamp_min(0))
    teacher_log_probs = teacher_topk_values.detach().float() / temperature - teacher_lse.detach().float().unsqueeze(-1)
    kl = (teacher_log_probs.exp() * (teacher_log_probs - student_at_k)).sum(dim=-1)
    return temperature**2 * _masked_mean(kl, mask)


def hidden_state_loss(
    student_hidden: torch.Tensor,
    teacher_hidden: torch.Tensor,
    mask: torch.Tensor | None = None,
    loss: str = "mse",
) -> torch.Tensor:
    """Distance between hidden states [batch, seq, hidden] of equal width (project the student's first).

    "mse": mean squared error over the hidden dimension, averaged over token positions (TinyBERT).
    "cosine": 1 - cosine similarity per token, averaged (DistilBERT's cosine embedding loss).
    `mask` [batch, seq] selects the real (non-padding) tokens.
    """
    if student_hidden.shape != teacher_hidden.shape:
        raise ValueError(
            f"hidden states differ in shape: student {tuple(student_hidden.shape)} vs teacher "
            f"{tuple(teacher_hidden.shape)}; project the student's to the teacher's width first."
        )
    student_hidden, teacher_hidden = student_hidden.float(), teacher_hidden.detach().float()
    if loss == "mse":
        per_token = (student_hidden - teacher_hidden).pow(2).mean(dim=-1)
    elif loss == "cosine":
        per_token = 1.0 - F.cosine_similarity(student_hidden, teacher_hidden, dim=-1)
    else:
        raise ValueError(f"loss must be 'mse' or 'cosine', got {loss!r}.")
    return _masked_mean(per_token, mask)


def attention_loss(
    student_attention: torch.Tensor,
    teacher_attention: torch.Tensor,
    mask: torch.Tensor | None = None,
    loss: str = "kl",
) -> torch.Tensor:
    """Distance between attention probabilities [batch, heads, query, key].

    "kl": KL(teacher || student) of each query's distribution over keys (MiniLM), summed over keys.
    "mse": squared error summed over keys (TinyBERT matches attention maps with MSE).
    Both are averaged over heads and over the query positions where `mask` [batch, seq] is true. When the two
    models have different head counts (a pruned or narrower student) the maps are first averaged over heads.
    """
    if student_attention.shape[-2:] != teacher_attention.shape[-2:] or (
        student_attention.shape[0] != teacher_attention.shape[0]
    ):
        raise ValueError(
            f"attention maps differ in batch or sequence shape: student {tuple(student_attention.shape)} vs "
            f"teacher {tuple(teacher_attention.shape)}."
        )
    student_attention, teacher_attention = student_attention.float(), teacher_attention.detach().float()
    if student_attention.shape[1] != teacher_attention.shape[1]:
        student_attention = student_attention.mean(dim=1, keepdim=True)
        teacher_attention = teacher_attention.mean(dim=1, keepdim=True)
    if loss == "kl":
        # xlogy gives 0 * log 0 = 0 for keys the teacher ignores (padding, future tokens).
        per_query = (
            torch.xlogy(teacher_attention, teacher_attention)
            - teacher_attention * student_attention.clamp_min(1e-12).log()
        ).sum(dim=-1)
    elif loss == "mse":
        per_query = (student_attention - teacher_attention).pow(2).sum(dim=-1)
    else:
        raise ValueError(f"loss must be 'kl' or 'mse', got {loss!r}.")
    per_query = per_query.mean(dim=1)  # over heads -> [batch, query]
    return _masked_mean(per_query, mask)

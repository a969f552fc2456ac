"""Losses of the semi-supervised commands, as pure functions (shapes in the docstrings)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                 temperature: float = 1.0) -> torch.Tensor:
    """SimCLR v2's distillation loss -sum_y P_T(y|x; t) log P_S(y|x; t), averaged over the
    batch: (B, C), (B, C) -> (). Its gradient in the student logits is
    (P_S - P_T) / (t * B), zero when the student equals the teacher; no gradient reaches the
    teacher."""
    p_t = F.softmax(teacher_logits.detach().float() / temperature, dim=1)
    return -(p_t * F.log_softmax(student_logits.float() / temperature, dim=1)).sum(1).mean()


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` (B,) where ``mask`` (B,) holds; 0 when it holds nowhere."""
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp(min=1)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample -sum_y q(y) log p(y): (B, C) logits, (B, C) target distributions -> (B,)."""
    return -(targets * F.log_softmax(logits.float(), dim=1)).sum(1)


def running_mean(mean: torch.Tensor, value: torch.Tensor, seen: torch.Tensor,
                 momentum: float) -> torch.Tensor:
    """Exponential moving average that starts at the first value: ``value`` when nothing was
    ``seen`` yet, else ``momentum * mean + (1 - momentum) * value`` (no gradient)."""
    value = value.detach()
    return torch.where(seen, momentum * mean + (1 - momentum) * value, value)


def normalised_loss(loss_h: torch.Tensor, loss_p: torch.Tensor, mean_h: torch.Tensor,
                    mean_p: torch.Tensor, alpha: float) -> torch.Tensor:
    """Zoph et al. 2020's self-training loss (L_h + alpha (mean_h / mean_p) L_p) / (1 + alpha):
    the pseudo-label term is rescaled to the size of the human-label term, so alpha weighs the
    two and not their units; the ratio of running means carries no gradient. Scaling L_p (and
    so its running mean) by a constant leaves the loss unchanged."""
    ratio = (mean_h / mean_p.clamp(min=1e-12)).detach()
    return (loss_h + alpha * ratio * loss_p) / (1 + alpha)

"""Effective rank of frozen features (RankMe, Garrido et al. 2023): how many dimensions an
encoder uses, a label-free sign of dimensional collapse."""

from __future__ import annotations

import torch


@torch.no_grad()
def effective_rank(feats: torch.Tensor, eps: float = 1e-7) -> float:
    """``exp(entropy(p))`` with ``p`` the singular values of ``feats`` (N, D) divided by their sum:
    from 1 (every sample on one line) to ``min(N, D)`` (all directions used alike)."""
    if feats.ndim != 2 or min(feats.shape) == 0:
        raise ValueError(f"feats must be a non-empty (N, D) matrix, got shape {tuple(feats.shape)}")
    s = torch.linalg.svdvals(feats.double())
    p = s / s.sum() + eps
    return float(torch.exp(-(p * p.log()).sum()))

"""Weighted kNN classifier on cosine similarity (Wu et al. 2018), the standard SSL monitor."""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_top1(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
             test_labels: torch.Tensor, *, k: int = 200, temperature: float = 0.07,
             chunk: int = 1024) -> float:
    """Top-1 accuracy (%) of a k-nearest-neighbour vote weighted by exp(cos / temperature).

    ``k`` is capped at the bank size (small sets).
    """
    bank = F.normalize(train_feats.float(), dim=1)
    n_classes = int(max(train_labels.max(), test_labels.max())) + 1
    k = min(k, bank.shape[0])
    correct = 0
    for start in range(0, test_feats.shape[0], chunk):
        q = F.normalize(test_feats[start:start + chunk].float(), dim=1)
        sim, idx = (q @ bank.T).topk(k, dim=1)
        weights = (sim / temperature).exp()
        votes = torch.zeros(q.shape[0], n_classes, device=q.device)
        votes.scatter_add_(1, train_labels[idx], weights)
        correct += int((votes.argmax(1) == test_labels[start:start + chunk]).sum())
    return 100.0 * correct / test_feats.shape[0]

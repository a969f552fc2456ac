"""Linear probe: a linear classifier trained on frozen, standardised features."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def linear_top1(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
                test_labels: torch.Tensor, *, epochs: int = 100, lr: float = 0.1,
                weight_decay: float = 1e-4, batch_size: int = 256, seed: int = 0) -> float:
    """Top-1 accuracy (%) of a linear classifier trained with SGD + cosine schedule."""
    g = torch.Generator().manual_seed(seed)
    mean, std = train_feats.mean(0), train_feats.std(0) + 1e-6
    x_train, x_test = (train_feats - mean) / std, (test_feats - mean) / std
    n_classes = int(max(train_labels.max(), test_labels.max())) + 1
    clf = torch.nn.Linear(x_train.shape[1], n_classes)
    opt = torch.optim.SGD(clf.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    for _ in range(epochs):
        order = torch.randperm(x_train.shape[0], generator=g)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            loss = F.cross_entropy(clf(x_train[idx]), train_labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    with torch.no_grad():
        return 100.0 * (clf(x_test).argmax(1) == test_labels).float().mean().item()

"""Epoch order shared by every loader: a seeded permutation, split into full global batches, each
process taking its contiguous slice of every global batch."""

from __future__ import annotations

import torch

from fastssl.seeding import generator


def epoch_batches(n: int, batch_size: int, *, seed: int, epoch: int, rank: int = 0,
                  world: int = 1) -> list[list[int]]:
    """Per-process index lists for one epoch; the incomplete last global batch is dropped so that
    every step sees the same batch shape (and every process the same number of steps)."""
    if batch_size * world > n:
        raise ValueError(f"global batch {batch_size * world} is larger than the dataset ({n} "
                         "images): lower batch_size")
    order = torch.randperm(n, generator=generator(seed, epoch)).tolist()
    per_global = batch_size * world
    out = []
    for b in range(n // per_global):
        start = b * per_global + rank * batch_size
        out.append(order[start:start + batch_size])
    return out

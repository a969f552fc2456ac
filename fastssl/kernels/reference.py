"""Plain PyTorch references of the SSL losses: the semantics every backend must match.

All functions are pure, differentiable where the loss is, and accept any float dtype; they are
what ``backend="torch"`` runs and what the Triton kernels are tested against.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from fastssl import distributed as fdist


def _wide(x: torch.Tensor) -> torch.Tensor:
    """Half-precision values promoted to float32; float32/float64 unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def info_nce(
    query: torch.Tensor,
    key: torch.Tensor,
    queue: torch.Tensor | None = None,
    temperature: float = 0.2,
    *,
    queue_normalized: bool = False,
) -> torch.Tensor:
    """InfoNCE (MoCo). query, key: B×D (positive pairs row by row); queue: N×D negatives.

    Inputs are L2-normalised here (the queue only when ``queue_normalized`` is False). Without a
    queue the logits are q·kᵀ/τ (B×B) with target i for row i (MoCo v3); with a queue they are
    [q_i·k_i, q_i·queueᵀ]/τ (B×(1+N)) with target 0 (MoCo v2). The queue never takes a gradient.
    Returns the mean over the B rows.
    """
    q = F.normalize(query, dim=1)
    k = F.normalize(key, dim=1).to(q.dtype)
    if queue is None:
        logits = q @ k.T / temperature
        target = torch.arange(q.shape[0], device=q.device)
    else:
        negatives = queue.detach() if queue_normalized else F.normalize(queue.detach(), dim=1)
        negatives = negatives.to(q.dtype)
        pos = (q * k).sum(dim=1, keepdim=True)
        logits = torch.cat([pos, q @ negatives.T], dim=1) / temperature
        target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(_wide(logits), target)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """SimCLR NT-Xent. z1, z2: N×D, two views of the same N images.

    The 2N normalised embeddings form a 2N×2N similarity matrix; row i's positive is its other
    view, its negatives the remaining 2N-2 rows (self-similarity excluded). Mean over 2N rows.
    """
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    logits = _wide(z @ z.T / temperature)
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(logits, target)


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 0.0051) -> torch.Tensor:
    """Barlow Twins. z1, z2: N×D.

    Each is standardised over the batch (BatchNorm without affine: biased variance, eps 1e-5),
    C = z1nᵀ z2n / N (D×D), loss = Σ_i (1 - C_ii)² + λ Σ_{i≠j} C_ij². Half-precision inputs are
    computed in float32.
    """
    n = z1.shape[0]
    z1n = F.batch_norm(_wide(z1), None, None, training=True, eps=1e-5)
    z2n = F.batch_norm(_wide(z2), None, None, training=True, eps=1e-5)
    c = z1n.T @ z2n / n
    diag = torch.diagonal(c)
    on_diag = (1 - diag).pow(2).sum()
    off_diag = c.pow(2).sum() - diag.pow(2).sum()
    return on_diag + lambd * off_diag


@torch.no_grad()
def sinkhorn_knopp(
    scores: torch.Tensor, eps: float = 0.05, iters: int = 3, *, distributed: bool = False
) -> torch.Tensor:
    """SwAV's Sinkhorn-Knopp (official ``distributed_sinkhorn``). scores: B×K → B×K assignments.

    Q = exp(scores/eps)ᵀ normalised by its total, then ``iters`` times: rows (prototypes) to sum
    1/K, columns (samples) to sum 1/B; finally ×B so each sample's row sums to 1. With
    ``distributed=True`` under an initialised process group the sums over samples and the total
    are all-reduced and B is the global batch, as in the official code. One deviation, exact in
    exact arithmetic: scores are shifted by their (global) maximum before ``exp``, which the first
    normalisation cancels, so moderate ``scores/eps`` do not overflow. Computed in float32 (float64
    for float64 input); returns that dtype, no gradient.
    """
    dist_on = distributed and fdist.is_distributed()
    s = scores.double() if scores.dtype == torch.float64 else scores.float()
    s = s / eps
    shift = s.max()
    if dist_on:
        dist.all_reduce(shift, op=dist.ReduceOp.MAX)
    q = torch.exp(s - shift).T  # K×B
    b = q.shape[1] * (fdist.world_size() if dist_on else 1)
    k = q.shape[0]
    total = q.sum()
    if dist_on:
        dist.all_reduce(total)
    q = q / total
    for _ in range(iters):
        row_sums = q.sum(dim=1, keepdim=True)
        if dist_on:
            dist.all_reduce(row_sums)
        q = q / row_sums / k
        q = q / q.sum(dim=0, keepdim=True) / b
    return (q * b).T


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """SimSiam / BYOL term: −cos(p, stopgrad(z)), mean over rows. p, z: B×D."""
    return -F.cosine_similarity(p, z.detach(), dim=-1).mean()

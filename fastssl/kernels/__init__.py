"""SSL losses: PyTorch references and fused Triton kernels behind one API.

    from fastssl.kernels import info_nce, nt_xent, barlow_twins_loss, sinkhorn_knopp

Every function takes ``backend="auto"|"torch"|"triton"`` (see ``dispatch.py``) and checks its
arguments up front on every backend (``checks.py``: a ``ValueError`` naming the argument, what it
got and what it needs). Importing this package needs only torch; without triton only the torch
backend is available.
"""

from __future__ import annotations

import torch

from fastssl.kernels import checks, reference
from fastssl.kernels.dispatch import BACKENDS, HAS_TRITON, resolve_backend

# The kernel modules share their names with the public functions below; importing them first and
# defining the functions afterwards keeps `fastssl.kernels.info_nce` the function.
if HAS_TRITON:
    from fastssl.kernels import barlow_twins as _barlow_twins_kernel
    from fastssl.kernels import info_nce as _info_nce_kernel
    from fastssl.kernels import nt_xent as _nt_xent_kernel
    from fastssl.kernels import sinkhorn as _sinkhorn_kernel

__all__ = [
    "barlow_twins_loss",
    "info_nce",
    "negative_cosine",
    "nt_xent",
    "reference",
    "sinkhorn_knopp",
]


def _pair(fn: str, names: tuple[str, str], a: object, b: object, min_rows: int = 1) -> None:
    """Two embedding matrices of one shape on one device."""
    x = checks.matrix(fn, names[0], a, min_rows)
    y = checks.matrix(fn, names[1], b, min_rows)
    checks.same_shape(fn, names, x, y)
    checks.same_device(fn, {names[0]: x, names[1]: y})


def info_nce(
    query: torch.Tensor,
    key: torch.Tensor,
    queue: torch.Tensor | None = None,
    temperature: float = 0.2,
    *,
    queue_normalized: bool = False,
    backend: str = "auto",
) -> torch.Tensor:
    """InfoNCE. query, key: B×D positive pairs; queue: optional N×D negatives (no gradient).

    Without a queue: logits q·kᵀ/τ, target i for row i (MoCo v3). With a queue: logits
    [q_i·k_i, q_i·queueᵀ]/τ, target 0 (MoCo v2). Inputs L2-normalised inside; mean over rows.
    ``queue_normalized=True`` promises that the queue rows are already L2-normalised (or zero):
    they are then used as stored, in their own dtype, with no per-call norm pass or conversion
    (MoCo v2 normalises keys once at enqueue and keeps the queue in the compute dtype).
    """
    fn = "info_nce"
    _pair(fn, ("query", "key"), query, key)
    checks.positive(fn, "temperature", temperature)
    checks.flag(fn, "queue_normalized", queue_normalized)
    if queue is not None:
        checks.matrix(fn, "queue", queue)
        if queue.shape[1] != query.shape[1]:
            raise ValueError(f"{fn}: queue must have the query's {query.shape[1]} features, got "
                             f"shape {tuple(queue.shape)}")
        checks.same_device(fn, {"query": query, "queue": queue})
    ok = HAS_TRITON and _info_nce_kernel.supports(query)
    if resolve_backend(backend, query, ok) == "triton":
        return _info_nce_kernel.info_nce(query, key, queue, temperature=temperature,
                                         queue_normalized=queue_normalized)
    return reference.info_nce(query, key, queue, temperature, queue_normalized=queue_normalized)


def nt_xent(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5, *, backend: str = "auto"
) -> torch.Tensor:
    """SimCLR NT-Xent over the 2N embeddings (z1, z2: N×D), self-similarity excluded."""
    _pair("nt_xent", ("z1", "z2"), z1, z2)
    checks.positive("nt_xent", "temperature", temperature)
    ok = HAS_TRITON and _info_nce_kernel.supports(z1)
    if resolve_backend(backend, z1, ok) == "triton":
        return _nt_xent_kernel.nt_xent(z1, z2, temperature=temperature)
    return reference.nt_xent(z1, z2, temperature)


def barlow_twins_loss(
    z1: torch.Tensor, z2: torch.Tensor, lambd: float = 0.0051, *, backend: str = "auto"
) -> torch.Tensor:
    """Barlow Twins on batch-standardised z1, z2 (N×D, N >= 2): Σ(1-c_ii)² + λ Σ_{i≠j} c_ij²."""
    _pair("barlow_twins_loss", ("z1", "z2"), z1, z2, min_rows=2)  # a batch statistic needs 2
    checks.non_negative("barlow_twins_loss", "lambd", lambd)
    if resolve_backend(backend, z1, HAS_TRITON) == "triton":
        return _barlow_twins_kernel.barlow_twins_loss(z1, z2, lambd=lambd)
    return reference.barlow_twins_loss(z1, z2, lambd)


def sinkhorn_knopp(
    scores: torch.Tensor,
    eps: float = 0.05,
    iters: int = 3,
    *,
    distributed: bool = False,
    backend: str = "auto",
) -> torch.Tensor:
    """SwAV Sinkhorn-Knopp: B×K scores → B×K assignments (rows sum to 1), no gradient.

    ``eps`` > 0, ``iters`` >= 1. ``distributed=True`` all-reduces the sample-axis sums when a
    process group is initialised (B is then the global batch), as the official SwAV code does.
    Returns float32 (float64 for float64 input).
    """
    fn = "sinkhorn_knopp"
    checks.matrix(fn, "scores", scores)
    checks.positive(fn, "eps", eps)
    checks.count(fn, "iters", iters, 1)
    checks.flag(fn, "distributed", distributed)
    if resolve_backend(backend, scores, HAS_TRITON) == "triton":
        return _sinkhorn_kernel.sinkhorn_knopp(
            scores, eps=eps, iters=iters, distributed=distributed
        )
    return reference.sinkhorn_knopp(scores, eps, iters, distributed=distributed)


def negative_cosine(p: torch.Tensor, z: torch.Tensor, *, backend: str = "auto") -> torch.Tensor:
    """−cos(p, stopgrad(z)), mean over rows (SimSiam/BYOL; p, z: B×D). PyTorch only; ``backend``
    is accepted for uniformity (elementwise work that torch.compile already fuses)."""
    _pair("negative_cosine", ("p", "z"), p, z)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return reference.negative_cosine(p, z)

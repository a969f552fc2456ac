"""Fused Sinkhorn-Knopp (Triton interpreter) against the reference; stability; 2 processes
(Sinkhorn all-reduce, and Barlow Twins on gathered embeddings)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from kernel_testing import assert_close, needs_interpreter

import fastssl.kernels as K
from fastssl.distributed import gather_with_grad
from fastssl.kernels import reference as R


def _log_domain_sinkhorn(scores, eps, iters):
    """Independent float64 log-domain form (valid where exp(scores/eps) would overflow)."""
    s = scores.double() / eps
    f = torch.zeros(s.shape[0], dtype=torch.float64)
    for _ in range(iters):
        g = -torch.logsumexp(s + f[:, None], dim=0)
        f = -torch.logsumexp(s + g[None, :], dim=1)
    return torch.exp(s + g[None, :] + f[:, None])


@needs_interpreter
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("b,k,iters", [(37, 101, 3), (200, 45, 1), (70, 300, 5)])
def test_sinkhorn(b, k, iters, dtype):
    torch.manual_seed(b)
    scores = torch.randn(b, k).to(dtype)
    out = K.sinkhorn_knopp(scores, eps=0.05, iters=iters, backend="triton")
    want = R.sinkhorn_knopp(scores.double(), 0.05, iters)
    assert out.dtype == torch.float32 and out.shape == (b, k)
    assert_close(out, want, 1e-5, 1e-4, "Q")
    assert_close(out.sum(1), torch.ones(b, dtype=torch.float64), 1e-5, 0, "row sums")


@needs_interpreter
def test_sinkhorn_stable_at_extreme_scores():
    """scores/eps up to 1e4: the reference's exp underflows to NaN rows, the kernel does not."""
    torch.manual_seed(0)
    scores = torch.randn(64, 50).clamp(-1, 1) * 500  # |scores/eps| <= 1e4
    out = K.sinkhorn_knopp(scores, eps=0.05, iters=3, backend="triton")
    assert torch.isfinite(out).all()
    assert_close(out, _log_domain_sinkhorn(scores, 0.05, 3), 1e-4, 1e-3, "Q")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, scores, z, backend, results):
    os.environ["OMP_NUM_THREADS"] = "1"
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        part = scores.chunk(world)[rank]
        out = K.sinkhorn_knopp(part, eps=0.05, iters=3, distributed=True, backend=backend)
        # Barlow Twins the way the methods call it: gather Z with gradient, loss on the global batch
        z1, z2 = (t.chunk(world)[rank].clone().requires_grad_() for t in z)
        loss = K.barlow_twins_loss(gather_with_grad(z1), gather_with_grad(z2), lambd=0.02,
                                   backend=backend)
        loss.backward()
        results[rank] = (out.clone(), loss.detach(), z1.grad / world, z2.grad / world)
    finally:
        dist.destroy_process_group()


backends = ["torch"] + (["triton"] if K.dispatch.INTERPRET else [])


def test_distributed_equals_single_process():
    """2 gloo processes with half the batch each give the single-process Sinkhorn assignments,
    and the single-process Barlow Twins loss and gradients (Z gathered with gradient; DDP divides
    the summed gradient by the world size)."""
    torch.manual_seed(3)
    scores = torch.randn(38, 21)
    want = R.sinkhorn_knopp(scores.double(), 0.05, 3)
    z = (torch.randn(38, 50), torch.randn(38, 50))
    z64 = [t.double().requires_grad_() for t in z]
    want_loss = R.barlow_twins_loss(*z64, 0.02)
    want_loss.backward()
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        for backend in backends:
            results = manager.dict()
            mp.start_processes(_worker, args=(2, _free_port(), scores, z, backend, results),
                               nprocs=2, start_method="spawn")
            got = [torch.cat([results[0][i], results[1][i]]) for i in (0, 2, 3)]
            assert_close(got[0], want, 1e-5, 1e-4, f"sinkhorn {backend}")
            for rank in (0, 1):
                assert_close(results[rank][1], want_loss, 1e-5, 1e-5, f"barlow loss {backend}")
            assert_close(got[1], z64[0].grad, 1e-5, 1e-4, f"barlow dz1 {backend}")
            assert_close(got[2], z64[1].grad, 1e-5, 1e-4, f"barlow dz2 {backend}")
    # and not merely the per-half answer
    half = R.sinkhorn_knopp(scores[:19].double(), 0.05, 3)
    assert (half - want[:19]).abs().max() > 1e-3

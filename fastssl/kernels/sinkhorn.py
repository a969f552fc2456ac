"""Fused Sinkhorn-Knopp (SwAV) in the log domain: two launches per iteration, no overflow.

With s = scores/eps (B×K), the official algorithm (normalise Q = exp(s)ᵀ by its total, then per
iteration rows over prototypes to 1/K and columns over samples to 1/B, finally ×B) equals, up to
constants that cancel in the normalisations:
    f = 0
    repeat iters:  g_k = -LSE_b(s_bk + f_b)     (sum over samples: all-reduced when distributed)
                   f_b = -LSE_k(s_bk + g_k)
    Q_bk = exp(s_bk + g_k + f_b) = softmax_k(s_b + g)_k
Each iteration is one column kernel (partial logsumexps over sample ranges, merged in a K-vector)
and one row kernel (the last one writes the softmax). Every exponent is shifted by a running max,
so scores/eps up to 1e4 neither overflow nor underflow to NaN. No gradient (SwAV uses Q as a
target). Distributed: each process holds its samples; the K-vector of local logsumexps is
all-gathered and merged, which gives the official algorithm on the global batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import triton
import triton.language as tl

from fastssl import distributed as fdist
from fastssl.kernels.dispatch import INTERPRET, new_output, num_programs_target

BLOCK_B = 32 if INTERPRET else 64
BLOCK_K = 32 if INTERPRET else 64


@triton.jit
def _sinkhorn_fwd_col(S, F, PART, B, K, stride_s, inv_eps, rows_per_split,
                      BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr):
    """PART[split, k] = LSE over this split's samples b of (s_bk + f_b)."""
    pid_k = tl.program_id(0)
    pid_s = tl.program_id(1)
    cols = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    col_ok = cols < K
    m = tl.full((BLOCK_K,), float("-inf"), tl.float32)
    acc = tl.zeros((BLOCK_K,), tl.float32)
    start = pid_s * rows_per_split
    end = tl.minimum(start + rows_per_split, B)
    for b0 in range(start, end, BLOCK_B):
        rows = b0 + tl.arange(0, BLOCK_B)
        row_ok = rows < end
        ok = row_ok[:, None] & col_ok[None, :]
        s = tl.load(S + rows[:, None].to(tl.int64) * stride_s + cols[None, :], mask=ok, other=0.0)
        f = tl.load(F + rows, mask=row_ok, other=0.0)
        x = tl.where(ok, s.to(tl.float32) * inv_eps + f[:, None], float("-inf"))
        m_new = tl.maximum(m, tl.max(x, 0))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        acc = acc * tl.exp(m - m_safe) + tl.sum(tl.exp(x - m_safe[None, :]), 0)
        m = m_new
    tl.store(PART + pid_s * K + cols, m + tl.log(acc), mask=col_ok)


@triton.jit
def _sinkhorn_fwd_row(S, G, F, OUT, B, K, stride_s, inv_eps,
                      WRITE_OUT: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr):
    """F[b] = -LSE_k(s_bk + g_k); with WRITE_OUT, OUT[b, k] = exp(s_bk + g_k + F[b])."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = rows < B
    row_off = rows[:, None].to(tl.int64) * stride_s
    m = tl.full((BLOCK_B,), float("-inf"), tl.float32)
    acc = tl.zeros((BLOCK_B,), tl.float32)
    for k0 in range(0, K, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        ok = row_ok[:, None] & (cols < K)[None, :]
        s = tl.load(S + row_off + cols[None, :], mask=ok, other=0.0)
        g = tl.load(G + cols, mask=cols < K, other=0.0)
        x = tl.where(ok, s.to(tl.float32) * inv_eps + g[None, :], float("-inf"))
        m_new = tl.maximum(m, tl.max(x, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        acc = acc * tl.exp(m - m_safe) + tl.sum(tl.exp(x - m_safe[:, None]), 1)
        m = m_new
    lse = m + tl.log(acc)
    if WRITE_OUT:
        out_off = rows[:, None].to(tl.int64) * K
        for k0 in range(0, K, BLOCK_K):
            cols = k0 + tl.arange(0, BLOCK_K)
            ok = row_ok[:, None] & (cols < K)[None, :]
            s = tl.load(S + row_off + cols[None, :], mask=ok, other=0.0)
            g = tl.load(G + cols, mask=cols < K, other=0.0)
            x = tl.where(ok, s.to(tl.float32) * inv_eps + g[None, :], float("-inf"))
            q = tl.exp(x - lse[:, None])
            tl.store(OUT + out_off + cols[None, :], q, mask=ok)
    else:
        tl.store(F + rows, -lse, mask=row_ok)


def _column_potential(s, f, inv_eps, distributed):
    """g = -LSE over all samples (all processes when distributed) of s + f: a K-vector."""
    b, k = s.shape
    want = max(1, num_programs_target(s.device) // triton.cdiv(k, BLOCK_K))
    per = triton.cdiv(triton.cdiv(b, want), BLOCK_B) * BLOCK_B
    n_split = triton.cdiv(b, per)
    part = new_output(n_split, k, device=s.device)
    _sinkhorn_fwd_col[(triton.cdiv(k, BLOCK_K), n_split)](
        s, f, part, b, k, s.stride(0), inv_eps, per, BLOCK_B=BLOCK_B, BLOCK_K=BLOCK_K)
    lse = part[0] if n_split == 1 else torch.logsumexp(part, dim=0)
    if distributed:
        parts = [torch.empty_like(lse) for _ in range(fdist.world_size())]
        dist.all_gather(parts, lse.contiguous())
        lse = torch.logsumexp(torch.stack(parts), dim=0)
    return -lse


def _sinkhorn_forward(scores, eps, iters, distributed):
    s = scores.contiguous()
    b, k = s.shape
    inv_eps = 1.0 / eps
    f = torch.zeros(b, device=s.device, dtype=torch.float32)
    out = new_output(b, k, device=s.device)
    grid = (triton.cdiv(b, BLOCK_B),)
    for it in range(iters):
        g = _column_potential(s, f, inv_eps, distributed)
        last = it == iters - 1
        if not last:
            f = new_output(b, device=s.device)
        _sinkhorn_fwd_row[grid](s, g, f, out, b, k, s.stride(0), inv_eps, WRITE_OUT=last,
                                BLOCK_B=BLOCK_B, BLOCK_K=BLOCK_K)
    return out


@torch.library.custom_op("fastssl::sinkhorn_knopp", mutates_args=())
def _sinkhorn_op(scores: torch.Tensor, eps: float, iters: int, distributed: bool) -> torch.Tensor:
    return _sinkhorn_forward(scores, eps, iters, distributed)


@_sinkhorn_op.register_fake
def _(scores, eps, iters, distributed):
    return scores.new_empty(scores.shape, dtype=torch.float32)


# No register_autograd: the assignments are a target; callers pass detached scores (as SwAV does
# under torch.no_grad) and the public function detaches them.


def sinkhorn_knopp(
    scores: torch.Tensor, *, eps: float = 0.05, iters: int = 3, distributed: bool = False
) -> torch.Tensor:
    """Fused Sinkhorn-Knopp, same semantics as ``reference.sinkhorn_knopp`` (float32 output);
    iters >= 1 (checked by the public function)."""
    return _sinkhorn_op(scores.detach(), eps, iters, distributed and fdist.is_distributed())

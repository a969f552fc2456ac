"""Fused Sinkhorn-Knopp (SwAV) in the log domain: iters + 1 launches, no overflow.

With s = scores/eps (B×K), the official algorithm (normalise Q = exp(s)ᵀ by its total, then per
iteration rows over prototypes to 1/K and columns over samples to 1/B, finally ×B) equals, up to
constants that cancel in the normalisations:
    f = 0
    repeat iters:  g_k = -LSE_b(s_bk + f_b)     (sum over samples: all processes when distributed)
                   f_b = -LSE_k(s_bk + g_k)
    Q_bk = exp(s_bk + g_k + f_b) = softmax_k(s_b + g)_k
The sample axis is cut into row strips, one program each. ``_sinkhorn_col_part`` writes each
strip's column logsumexps PART[r, k] for f = 0. Each ``_sinkhorn_step`` program then merges
g = -LSE_r PART[r, :] (every program merges all strips: redundant, L2-resident work that saves a
launch and a grid-wide barrier), computes f for its strip and writes either the next PART (its
strip's column logsumexps with the new f) or, in the last iteration, the softmax. 3 iterations =
4 launches; the scores are read 2·iters + 1 times. Every exponent is shifted by a running max,
so scores/eps up to 1e4 neither overflow nor underflow to NaN. No gradient (SwAV uses Q as a
target). Distributed: each process holds its samples; the strips' partials are all-gathered
before each step, which gives the official algorithm on the global batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import triton
import triton.language as tl

from fastssl import distributed as fdist
from fastssl.kernels.dispatch import INTERPRET, new_output

BLOCK_B = 32 if INTERPRET else 64
BLOCK_K = 32 if INTERPRET else 64


@triton.jit
def _column_lse(x):
    """LSE over axis 0 of a tile with -inf where masked (a column of -inf stays -inf)."""
    m = tl.max(x, 0)
    m_safe = tl.where(m == float("-inf"), 0.0, m)
    return m_safe + tl.log(tl.sum(tl.exp(x - m_safe[None, :]), 0))


@triton.jit
def _sinkhorn_col_part(S, PART, B, K, stride_s, inv_eps,
                       BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr):
    """PART[r, k] = LSE over the samples b of strip r of s_bk (f = 0)."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    ok = (rows < B)[:, None] & (cols < K)[None, :]
    s = tl.load(S + rows[:, None].to(tl.int64) * stride_s + cols[None, :], mask=ok, other=0.0)
    x = tl.where(ok, s.to(tl.float32) * inv_eps, float("-inf"))
    tl.store(PART + tl.program_id(0) * K + cols, _column_lse(x), mask=cols < K)


@triton.jit
def _merged_potential(PART, cols, col_ok, K, n_parts, BLOCK_K: tl.constexpr):
    """g_k = -LSE over the strips' partials PART[r, k]."""
    m = tl.full((BLOCK_K,), float("-inf"), tl.float32)
    for r in range(0, n_parts):
        m = tl.maximum(m, tl.load(PART + r * K + cols, mask=col_ok, other=float("-inf")))
    m = tl.where(m == float("-inf"), 0.0, m)
    total = tl.zeros((BLOCK_K,), tl.float32)
    for r in range(0, n_parts):
        total += tl.exp(tl.load(PART + r * K + cols, mask=col_ok, other=float("-inf")) - m)
    return -(m + tl.log(total))


@triton.jit
def _sinkhorn_step(S, PART_IN, PART_OUT, OUT, B, K, stride_s, inv_eps, n_parts,
                   LAST: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr):
    """One iteration for strip r: f_b = -LSE_k(s_bk + g_k), then PART_OUT[r, k] =
    LSE_b(s_bk + f_b) or, with LAST, OUT[b, k] = exp(s_bk + g_k + f_b)."""
    r = tl.program_id(0)
    rows = r * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = rows < B
    row_off = rows[:, None].to(tl.int64) * stride_s
    m = tl.full((BLOCK_B,), float("-inf"), tl.float32)
    acc = tl.zeros((BLOCK_B,), tl.float32)
    for k0 in range(0, K, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        col_ok = cols < K
        ok = row_ok[:, None] & col_ok[None, :]
        g = _merged_potential(PART_IN, cols, col_ok, K, n_parts, BLOCK_K)
        s = tl.load(S + row_off + cols[None, :], mask=ok, other=0.0)
        x = tl.where(ok, s.to(tl.float32) * inv_eps + g[None, :], float("-inf"))
        m_new = tl.maximum(m, tl.max(x, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        acc = acc * tl.exp(m - m_safe) + tl.sum(tl.exp(x - m_safe[:, None]), 1)
        m = m_new
    lse = m + tl.log(acc)  # = -f_b
    for k0 in range(0, K, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        col_ok = cols < K
        ok = row_ok[:, None] & col_ok[None, :]
        s = tl.load(S + row_off + cols[None, :], mask=ok, other=0.0).to(tl.float32) * inv_eps
        if LAST:
            g = _merged_potential(PART_IN, cols, col_ok, K, n_parts, BLOCK_K)
            q = tl.exp(s + g[None, :] - lse[:, None])
            tl.store(OUT + rows[:, None].to(tl.int64) * K + cols[None, :], q, mask=ok)
        else:
            x = tl.where(ok, s - lse[:, None], float("-inf"))
            tl.store(PART_OUT + r * K + cols, _column_lse(x), mask=col_ok)


def _gathered(part: torch.Tensor, distributed: bool) -> torch.Tensor:
    """The strips' partials of every process (all-gathered when distributed)."""
    if not distributed:
        return part
    parts = [torch.empty_like(part) for _ in range(fdist.world_size())]
    dist.all_gather(parts, part)
    return torch.cat(parts)


def _sinkhorn_forward(scores, eps, iters, distributed):
    s = scores.contiguous()
    b, k = s.shape
    inv_eps = 1.0 / eps
    strips = triton.cdiv(b, BLOCK_B)
    part = new_output(strips, k, device=s.device)
    _sinkhorn_col_part[(strips, triton.cdiv(k, BLOCK_K))](
        s, part, b, k, s.stride(0), inv_eps, BLOCK_B=BLOCK_B, BLOCK_K=BLOCK_K)
    out = new_output(b, k, device=s.device)
    for it in range(iters):
        part_in = _gathered(part, distributed)
        last = it == iters - 1
        part = new_output(strips, k, device=s.device) if not last else part
        _sinkhorn_step[(strips,)](s, part_in, part, out, b, k, s.stride(0), inv_eps,
                                  part_in.shape[0], LAST=last, BLOCK_B=BLOCK_B, BLOCK_K=BLOCK_K,
                                  num_warps=8)  # 4 warps spill in the last step
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

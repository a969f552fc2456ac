"""Fused InfoNCE: per-row logsumexp of q·kᵀ over key tiles, the logits are never materialised.

The core is one op, ``contrastive_lse(q, k, col_scale, scale, exclude_diag)`` →
``lse_i = log Σ_j exp(scale · c_j · q_i·k_j)`` (j ≠ i when ``exclude_diag``), shared by InfoNCE
(MoCo v2 with a queue, MoCo v3 in-batch) and NT-Xent (``nt_xent.py``). The positive logit is an
O(B·D) row-wise dot product done in PyTorch; the loss is ``mean(lse - pos)``.

Forward: FlashAttention-style online logsumexp over key tiles, in base 2 (``exp2`` with log2(e)
folded into the scale). Because q and k are unit vectors, every logit is at most ``scale``
(=1/τ), so for τ ≥ 0.025 the running maximum is replaced by the constant ``scale`` (no
max/rescale per tile, and exp(-2·scale) cannot underflow). Small batches (MoCo v2: B=256 gives
2-4 row tiles) split the key axis over programs so the grid fills the device; partial logsumexps
are merged afterwards. Embeddings wider than one tile (up to ``MAX_D``) are tiled over D: the
logits sum the chunks' products and the gradient kernels write one D chunk per program (grid
axis 2), recomputing the logits from all chunks. Backward recomputes each logit tile from the
saved per-row lse; the key gradient kernel is skipped when keys take no gradient (the queue).
Tiles come from a static table (``config``) keyed on (D, dtype, M, N), not run-time autotuning.
float32 operands multiply in 3xTF32 (``tf32x3``: float32 accuracy on tensor cores).

Gradient math, with s_ij = scale·c_j·q_i·k_j, p_ij = exp(s_ij - lse_i), g_i = ∂L/∂lse_i:
    ∂L/∂q_i = scale · Σ_j g_i p_ij c_j k_j        (row-parallel kernel, loops over key tiles)
    ∂L/∂k_j = scale · c_j Σ_i g_i p_ij q_i        (column-parallel kernel, loops over row tiles)
c_j (the queue's inverse norms) takes no gradient.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from fastssl.kernels.dispatch import INTERPRET, KERNEL_DTYPES, new_output, num_programs_target

MAX_D = 2048  # widest embedding the kernels take, in every dtype (tiled over D)
FIXED_MAX_LIMIT = 40.0  # exp(-2·scale) stays a normal fp32 number up to scale = 40
LOG2E = 1.4426950408889634


def supports(x: torch.Tensor) -> bool:
    return x.dim() == 2 and x.dtype in KERNEL_DTYPES and 1 <= x.shape[1] <= MAX_D


class Config(NamedTuple):
    BLOCK_M: int
    BLOCK_N: int
    BLOCK_D: int  # D chunk: the whole row when D <= BLOCK_D
    num_warps: int
    num_stages: int


def config(d: int, dtype: torch.dtype, m: int, n: int) -> Config:
    """Static tile table keyed on (D, dtype, rows M, keys N). The chunk limits keep a q tile and a
    pipelined k tile within Hopper's shared memory and registers (the sm_90 AOT test checks
    every variant `supports` admits for spills and shared memory). Not tuned on a GPU yet."""
    if INTERPRET:  # few, small tiles: the interpreter pays per tile step
        return Config(32, 32, min(max(16, triton.next_power_of_2(d)), 128), 4, 1)
    block_d = min(max(16, triton.next_power_of_2(d)), 64 if dtype == torch.float32 else 128)
    if d > block_d:  # tiled over D: small tiles, no software pipelining (else ptxas spills)
        return Config(32 if dtype == torch.float32 else 64, 32, 64, 4, 1)
    block_n = 32 if n <= 32 else 64
    if m >= 2048 and dtype != torch.float32:  # large batches: bigger row tiles (fp32 spills)
        return Config(128, block_n, block_d, 8, 2)
    return Config(64, block_n, block_d, 4, 2)


@triton.jit
def _tile_dot(A, B, a_rows, b_rows, a_ok, b_ok, D, stride_a, stride_b, a_tile,
              ONE_CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, DOT: tl.constexpr):
    """(A[a_rows] · B[b_rows]ᵀ over all D in fp32, the last B chunk in A's dtype). With
    ONE_CHUNK the caller's ``a_tile`` (the whole rows, loaded once) is used."""
    dims = tl.arange(0, BLOCK_D)
    if ONE_CHUNK:
        b = tl.load(B + b_rows[:, None].to(tl.int64) * stride_b + dims[None, :],
                    mask=b_ok[:, None] & (dims < D)[None, :], other=0.0).to(a_tile.dtype)
        acc = tl.dot(a_tile, tl.trans(b), input_precision=DOT)
    else:
        acc = tl.zeros((a_rows.shape[0], b_rows.shape[0]), tl.float32)
        for d0 in range(0, D, BLOCK_D):
            cur = d0 + dims
            a = tl.load(A + a_rows[:, None].to(tl.int64) * stride_a + cur[None, :],
                        mask=a_ok[:, None] & (cur < D)[None, :], other=0.0)
            b = tl.load(B + b_rows[:, None].to(tl.int64) * stride_b + cur[None, :],
                        mask=b_ok[:, None] & (cur < D)[None, :], other=0.0).to(a.dtype)
            acc += tl.dot(a, tl.trans(b), input_precision=DOT)
        b = a_tile  # unused by the callers: they load their chunks (compiled mode needs a value)
    return acc, b


@triton.jit
def _load_rows(X, rows, ok, d0, D, stride, BLOCK_D: tl.constexpr):
    dims = d0 + tl.arange(0, BLOCK_D)
    return tl.load(X + rows[:, None].to(tl.int64) * stride + dims[None, :],
                   mask=ok[:, None] & (dims < D)[None, :], other=0.0)


@triton.jit
def _logits2(Q, K, COL_SCALE, rows, cols, row_ok, col_ok, D, stride_q, stride_k, scale2, q,
             HAS_COL_SCALE: tl.constexpr, EXCLUDE_DIAG: tl.constexpr, ONE_CHUNK: tl.constexpr,
             BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, DOT: tl.constexpr):
    """Logits of a tile in log2 units, scale2·c_j·q_i·k_j (-inf where masked); the key chunk
    (whole rows with ONE_CHUNK) and c_j."""
    s, k = _tile_dot(Q, K, rows, cols, row_ok, col_ok, D, stride_q, stride_k, q,
                     ONE_CHUNK, BLOCK_D, DOT)
    s = s * scale2
    c = tl.full((BLOCK_N,), 1.0, tl.float32)
    if HAS_COL_SCALE:
        c = tl.load(COL_SCALE + cols, mask=col_ok, other=0.0)
        s = s * c[None, :]
    valid = col_ok[None, :]
    if EXCLUDE_DIAG:
        valid = valid & (cols[None, :] != rows[:, None])
    return tl.where(valid, s, float("-inf")), k, c


@triton.jit
def _info_nce_fwd(Q, K, COL_SCALE, LSE_PART, M, N, D, stride_q, stride_k, scale2, cols_per_split,
                  HAS_COL_SCALE: tl.constexpr, EXCLUDE_DIAG: tl.constexpr,
                  FIXED_MAX: tl.constexpr, ONE_CHUNK: tl.constexpr, DOT: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """LSE_PART[split, i] = log2 Σ_j 2^(s2_ij) over this split's keys."""
    pid_m = tl.program_id(0)
    pid_s = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    q = _load_rows(Q, rows, row_ok, 0, D, stride_q, BLOCK_D)
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    if FIXED_MAX:
        m_i = tl.full((BLOCK_M,), 1.0, tl.float32) * scale2
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    start = pid_s * cols_per_split
    end = tl.minimum(start + cols_per_split, N)
    for n0 in range(start, end, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        s, k, c = _logits2(Q, K, COL_SCALE, rows, cols, row_ok, cols < end, D, stride_q,
                           stride_k, scale2, q, HAS_COL_SCALE, EXCLUDE_DIAG, ONE_CHUNK,
                           BLOCK_N, BLOCK_D, DOT)
        if FIXED_MAX:
            l_i += tl.sum(tl.exp2(s - m_i[:, None]), 1)
        else:
            m_new = tl.maximum(m_i, tl.max(s, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            l_i = l_i * tl.exp2(m_i - m_safe) + tl.sum(tl.exp2(s - m_safe[:, None]), 1)
            m_i = m_new
    tl.store(LSE_PART + pid_s * M + rows, m_i + tl.log2(l_i), mask=row_ok)


@triton.jit
def _info_nce_bwd_dq(Q, K, COL_SCALE, LSE2, DLSE, DQ_PART, M, N, D, stride_q, stride_k, scale2,
                     scale, cols_per_split, HAS_COL_SCALE: tl.constexpr,
                     EXCLUDE_DIAG: tl.constexpr, ONE_CHUNK: tl.constexpr, DOT: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """DQ_PART[split, i, chunk] = scale Σ_j g_i p_ij c_j k_j over this split's keys."""
    pid_m = tl.program_id(0)
    pid_s = tl.program_id(1)
    d_out = tl.program_id(2) * BLOCK_D
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    q = _load_rows(Q, rows, row_ok, 0, D, stride_q, BLOCK_D)
    lse2 = tl.load(LSE2 + rows, mask=row_ok, other=0.0)
    g = tl.load(DLSE + rows, mask=row_ok, other=0.0) * scale
    acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    start = pid_s * cols_per_split
    end = tl.minimum(start + cols_per_split, N)
    for n0 in range(start, end, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        col_ok = cols < end
        s, k, c = _logits2(Q, K, COL_SCALE, rows, cols, row_ok, col_ok, D, stride_q, stride_k,
                           scale2, q, HAS_COL_SCALE, EXCLUDE_DIAG, ONE_CHUNK, BLOCK_N, BLOCK_D,
                           DOT)
        ds = tl.exp2(s - lse2[:, None]) * g[:, None]
        if not ONE_CHUNK:
            k = _load_rows(K, cols, col_ok, d_out, D, stride_k, BLOCK_D).to(q.dtype)
        if HAS_COL_SCALE:  # c_j into the keys (unit rows), not ds: c_j of a zero row is 1e12
            k = (k.to(tl.float32) * c[:, None]).to(q.dtype)
        acc += tl.dot(ds.to(k.dtype), k, input_precision=DOT)
    dims = d_out + tl.arange(0, BLOCK_D)
    out = DQ_PART + (pid_s * M + rows[:, None]).to(tl.int64) * D + dims[None, :]
    tl.store(out, acc, mask=row_ok[:, None] & (dims < D)[None, :])


@triton.jit
def _info_nce_bwd_dk(Q, K, COL_SCALE, LSE2, DLSE, DK_PART, M, N, D, stride_q, stride_k, scale2,
                     scale, rows_per_split, HAS_COL_SCALE: tl.constexpr,
                     EXCLUDE_DIAG: tl.constexpr, ONE_CHUNK: tl.constexpr, DOT: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """DK_PART[split, j, chunk] = scale c_j Σ_i g_i p_ij q_i over this split's rows."""
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    d_out = tl.program_id(2) * BLOCK_D
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < N
    k = _load_rows(K, cols, col_ok, 0, D, stride_k, BLOCK_D)
    c = tl.full((BLOCK_N,), 1.0, tl.float32)
    if HAS_COL_SCALE:
        c = tl.load(COL_SCALE + cols, mask=col_ok, other=0.0)
    acc = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    start = pid_s * rows_per_split
    end = tl.minimum(start + rows_per_split, M)
    for m0 in range(start, end, BLOCK_M):
        rows = m0 + tl.arange(0, BLOCK_M)
        row_ok = rows < end
        s_t, q = _tile_dot(K, Q, cols, rows, col_ok, row_ok, D, stride_k, stride_q, k,
                           ONE_CHUNK, BLOCK_D, DOT)  # logits, transposed: BLOCK_N×BLOCK_M
        s_t = s_t * (scale2 * c[:, None])
        lse2 = tl.load(LSE2 + rows, mask=row_ok, other=0.0)
        g = tl.load(DLSE + rows, mask=row_ok, other=0.0)
        valid = row_ok[None, :] & col_ok[:, None]
        if EXCLUDE_DIAG:
            valid = valid & (cols[:, None] != rows[None, :])
        p_t = tl.where(valid, tl.exp2(s_t - lse2[None, :]), 0.0)
        if not ONE_CHUNK:
            q = _load_rows(Q, rows, row_ok, d_out, D, stride_q, BLOCK_D).to(k.dtype)
        acc += tl.dot((p_t * g[None, :] * (scale * c[:, None])).to(q.dtype), q,
                      input_precision=DOT)
    dims = d_out + tl.arange(0, BLOCK_D)
    out = DK_PART + (pid_s * N + cols[:, None]).to(tl.int64) * D + dims[None, :]
    tl.store(out, acc, mask=col_ok[:, None] & (dims < D)[None, :])


def _splits(own_tiles: int, other_len: int, unit: int, device: torch.device) -> tuple[int, int]:
    """Split the reduction axis (length other_len) when own_tiles programs cannot fill the device.

    Returns (number of splits, elements per split, a multiple of the tile ``unit``)."""
    want = max(1, num_programs_target(device) // max(own_tiles, 1))
    per = triton.cdiv(triton.cdiv(other_len, want), unit) * unit
    return triton.cdiv(other_len, per), per


def _launch_args(q, k, col_scale, scale, exclude_diag):
    """(config, keyword arguments shared by the three kernels)."""
    m, d = q.shape
    cfg = config(d, q.dtype, m, k.shape[0])
    kw = dict(
        M=m, N=k.shape[0], D=d, stride_q=q.stride(0), stride_k=k.stride(0),
        scale2=scale * LOG2E, HAS_COL_SCALE=col_scale is not None, EXCLUDE_DIAG=exclude_diag,
        ONE_CHUNK=d <= cfg.BLOCK_D, DOT="tf32x3" if q.dtype == torch.float32 else "tf32",
        BLOCK_M=cfg.BLOCK_M, BLOCK_N=cfg.BLOCK_N, BLOCK_D=cfg.BLOCK_D,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return cfg, kw


def _lse_forward(q, k, col_scale, scale, exclude_diag):
    cfg, kw = _launch_args(q, k, col_scale, scale, exclude_diag)
    m, n = kw["M"], kw["N"]
    n_split, per = _splits(triton.cdiv(m, cfg.BLOCK_M), n, cfg.BLOCK_N, q.device)
    part = new_output(n_split, m, device=q.device)
    cs = col_scale if col_scale is not None else q
    _info_nce_fwd[(triton.cdiv(m, cfg.BLOCK_M), n_split)](
        q, k, cs, part, cols_per_split=per, FIXED_MAX=scale <= FIXED_MAX_LIMIT, **kw)
    lse = part * math.log(2)  # base 2 → natural
    return lse[0] if n_split == 1 else torch.logsumexp(lse, dim=0)


def _lse_backward(grad, q, k, col_scale, lse, scale, exclude_diag, need_dq, need_dk):
    cfg, kw = _launch_args(q, k, col_scale, scale, exclude_diag)
    m, n, d = kw["M"], kw["N"], kw["D"]
    chunks = triton.cdiv(d, cfg.BLOCK_D)
    cs = col_scale if col_scale is not None else q
    grad = grad.float().contiguous()
    lse2 = lse * LOG2E
    dq = dk = q.new_empty(0)
    if need_dq:
        n_split, per = _splits(triton.cdiv(m, cfg.BLOCK_M) * chunks, n, cfg.BLOCK_N, q.device)
        part = new_output(n_split, m, d, device=q.device)
        _info_nce_bwd_dq[(triton.cdiv(m, cfg.BLOCK_M), n_split, chunks)](
            q, k, cs, lse2, grad, part, scale=scale, cols_per_split=per, **kw)
        dq = part.sum(0).to(q.dtype)
    if need_dk:
        n_split, per = _splits(triton.cdiv(n, cfg.BLOCK_N) * chunks, m, cfg.BLOCK_M, q.device)
        part = new_output(n_split, n, d, device=q.device)
        _info_nce_bwd_dk[(triton.cdiv(n, cfg.BLOCK_N), n_split, chunks)](
            q, k, cs, lse2, grad, part, scale=scale, rows_per_split=per, **kw)
        dk = part.sum(0).to(k.dtype)
    return dq, dk


@torch.library.custom_op("fastssl::contrastive_lse", mutates_args=())
def contrastive_lse(
    q: torch.Tensor,
    k: torch.Tensor,
    col_scale: torch.Tensor | None,
    scale: float,
    exclude_diag: bool,
) -> torch.Tensor:
    """lse_i = log Σ_j exp(scale·c_j·q_i·k_j) (j ≠ i if exclude_diag), float32, shape [M]."""
    return _lse_forward(q.contiguous(), k.contiguous(), col_scale, scale, exclude_diag)


@contrastive_lse.register_fake
def _(q, k, col_scale, scale, exclude_diag):
    return q.new_empty(q.shape[0], dtype=torch.float32)


@torch.library.custom_op("fastssl::contrastive_lse_backward", mutates_args=())
def contrastive_lse_backward(
    grad: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    col_scale: torch.Tensor | None,
    lse: torch.Tensor,
    scale: float,
    exclude_diag: bool,
    need_dq: bool,
    need_dk: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(∂L/∂q, ∂L/∂k); an empty tensor stands for a gradient that was not asked for."""
    return _lse_backward(grad, q.contiguous(), k.contiguous(), col_scale, lse, scale,
                         exclude_diag, need_dq, need_dk)


@contrastive_lse_backward.register_fake
def _(grad, q, k, col_scale, lse, scale, exclude_diag, need_dq, need_dk):
    return (torch.empty_like(q) if need_dq else q.new_empty(0),
            torch.empty_like(k) if need_dk else k.new_empty(0))


def _setup_context(ctx, inputs, output):
    q, k, col_scale, scale, exclude_diag = inputs
    ctx.save_for_backward(q, k, col_scale, output)
    ctx.scale, ctx.exclude_diag = scale, exclude_diag


def _backward(ctx, grad):
    q, k, col_scale, lse = ctx.saved_tensors
    need_dq, need_dk = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    dq, dk = contrastive_lse_backward(grad, q, k, col_scale, lse, ctx.scale, ctx.exclude_diag,
                                      need_dq, need_dk)
    return (dq if need_dq else None), (dk if need_dk else None), None, None, None


contrastive_lse.register_autograd(_backward, setup_context=_setup_context)


def info_nce(
    query: torch.Tensor,
    key: torch.Tensor,
    queue: torch.Tensor | None = None,
    *,
    temperature: float = 0.2,
    queue_normalized: bool = False,
) -> torch.Tensor:
    """Fused InfoNCE, same semantics as ``reference.info_nce``. A normalised queue is read as
    stored (the kernels convert each key tile to the query dtype as they load it)."""
    scale = 1.0 / temperature
    q = F.normalize(query, dim=1)
    k = F.normalize(key, dim=1).to(q.dtype)  # tl.dot wants one dtype (no-op when they agree)
    pos = (q.float() * k.float()).sum(dim=1) * scale
    if queue is None:
        return (contrastive_lse(q, k, None, scale, False) - pos).mean()
    negatives = queue.detach()
    inv_norm = None
    if not queue_normalized:
        inv_norm = 1.0 / torch.linalg.vector_norm(negatives, dim=1, dtype=torch.float32)
        inv_norm = inv_norm.clamp_max(1e12)  # F.normalize's eps: a zero row stays zero
    # logaddexp(pos, lse_neg) - pos written as softplus(lse_neg - pos): the same value, and a
    # gradient σ(lse_neg - pos) without the cancellation σ(pos - lse_neg) - 1 at low τ
    return F.softplus(contrastive_lse(q, negatives, inv_norm, scale, False) - pos).mean()

"""Fused InfoNCE / NT-Xent: one autograd path, the logits are never materialised.

One op, ``contrastive_loss``, covers MoCo v2 (queries against a queue, the positive key apart),
MoCo v3 (in-batch keys, target i for row i) and NT-Xent (``nt_xent.py``: z = [z1; z2] against
itself, the diagonal excluded, row i's positive i ± N). L2 normalisation, the positive logit,
MoCo v2's logaddexp and the mean happen inside the kernels; raw operands (bf16 stays bf16) feed
the tensor cores and fp32 inverse norms scale the scores.

Launches per forward + backward (the queue: <= 4; NT-Xent adds torch.cat of the views, <= 4):
  1. ``_contrastive_fwd``: per row tile and key range (the key axis split so the grid fills the
     device, flash-decoding style), an online logsumexp in base 2 (``exp2``, log2(e) folded into
     the scale; fixed max 1/τ when τ >= 0.025 since unit vectors bound the logits, a running max
     otherwise) and, when a gradient is wanted, Σ_j 2^(s_ij - m) k̂_j: partials per range.
  2. ``_contrastive_finalize``: row programs merge the ranges and write the loss terms and the
     query gradient; in-batch / NT-Xent, key programs (same launch) recompute their column of
     probabilities from the merged logsumexps and write the key gradient; the last row program
     to finish (an atomic ticket, reset after use) sums the per-tile losses in a fixed order.
  3./4. ``_contrastive_bwd`` (backward, per input): ∂L/∂x from the stored gradient with respect
     to the normalised rows, through the normalisation, times ``grad_output``.
The gradients are computed in the forward (the loss is a mean, one backward is needed); the
backward only scales them. Memory O((B + splits·B)·D), never B×N.

Gradient math, s_ij = scale·q̂_i·k̂_j, p_ij = softmax_j, w_i = 1 (in-batch) or σ(lse_neg - pos)
(queue: 1 - p_positive), R rows in the mean:
    ∂L/∂q̂_i = scale·w_i·(Σ_j p̃_ij k̂_j - k̂⁺_i)/R      (p̃ over the keys of pass 1)
    ∂L/∂k̂_j = scale·(Σ_i p_ij q̂_i - q̂⁺_j)/R          (in-batch; queue: -scale·w_j·q̂_j/R)
    ∂L/∂x = g·r·(G - x̂ (x̂·G)), r = 1/max(‖x‖, 1e-12)   (through F.normalize)
Tiles come from a static table (``config``) keyed on (D, dtype, M, N); D up to ``MAX_D`` is
tiled (programs per D chunk recompute the logits). float32 operands multiply in 3xTF32.

(Over 400 lines on purpose: the three kernels of one autograd path and the derivation above
stay in one file; the tile table and shared helpers are in ``contrastive_tiles.py``.)
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastssl.kernels.contrastive_tiles import (
    FIXED_MAX_LIMIT,
    LOG2E,
    MAX_D,
    NT_XENT,
    PAIRS,
    QUEUE,
    _inv_norm,
    _load_rows,
    _merged_lse2,
    _tile_dot,
    config,
    supports,
)
from fastssl.kernels.dispatch import new_output, num_programs_target

__all__ = ["MAX_D", "config", "contrastive_loss", "info_nce", "supports"]

@triton.jit
def _contrastive_fwd(Q, K, M_PART, L_PART, ACC_PART, M, N, D, stride_q, stride_k, scale2,
                     cols_per_split, KEY_NORM: tl.constexpr, EXCLUDE_DIAG: tl.constexpr,
                     FIXED_MAX: tl.constexpr, NEED_ACC: tl.constexpr, ONE_CHUNK: tl.constexpr,
                     DOT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                     BLOCK_D: tl.constexpr):
    """Per key range s: M_PART/L_PART[s, i] (running max and sum of 2^(s_ij - m)) and
    ACC_PART[s, i, chunk] = Σ_j 2^(s_ij - m) k̂_j, s_ij in log2 units."""
    pid_m = tl.program_id(0)
    pid_s = tl.program_id(1)
    d_out = tl.program_id(2) * BLOCK_D
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    q = _load_rows(Q, rows, row_ok, 0, D, stride_q, BLOCK_D)
    rq2 = _inv_norm(Q, rows, row_ok, D, stride_q, q, ONE_CHUNK, BLOCK_D) * scale2
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    if FIXED_MAX:
        m_i = tl.full((BLOCK_M,), 1.0, tl.float32) * scale2
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    start = pid_s * cols_per_split
    end = tl.minimum(start + cols_per_split, N)
    for n0 in range(start, end, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        col_ok = cols < end
        s, ssk, k = _tile_dot(Q, K, rows, cols, row_ok, col_ok, D, stride_q, stride_k, q,
                              ONE_CHUNK, BLOCK_D, DOT)
        ck = tl.full((BLOCK_N,), 1.0, tl.float32)
        if KEY_NORM:
            ck = 1.0 / tl.maximum(tl.sqrt(ssk), 1e-12)
        s = s * rq2[:, None] * ck[None, :]
        valid = col_ok[None, :]
        if EXCLUDE_DIAG:
            valid = valid & (cols[None, :] != rows[:, None])
        s = tl.where(valid, s, float("-inf"))
        if FIXED_MAX:
            p = tl.exp2(s - m_i[:, None])
            l_i += tl.sum(p, 1)
        else:
            m_new = tl.maximum(m_i, tl.max(s, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            alpha = tl.exp2(m_i - m_safe)
            p = tl.exp2(s - m_safe[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None]
            m_i = m_new
        if NEED_ACC:
            if not ONE_CHUNK:
                k = _load_rows(K, cols, col_ok, d_out, D, stride_k, BLOCK_D).to(q.dtype)
            kn = (k.to(tl.float32) * ck[:, None]).to(q.dtype)  # unit rows: no fp16 overflow
            acc += tl.dot(p.to(q.dtype), kn, input_precision=DOT)
    if tl.program_id(2) == 0:
        tl.store(M_PART + pid_s * M + rows, m_i, mask=row_ok)
        tl.store(L_PART + pid_s * M + rows, l_i, mask=row_ok)
    if NEED_ACC:
        dims = d_out + tl.arange(0, BLOCK_D)
        out = ACC_PART + (pid_s * M + rows[:, None]).to(tl.int64) * D + dims[None, :]
        tl.store(out, acc, mask=row_ok[:, None] & (dims < D)[None, :])


@triton.jit
def _finalize_rows(Q, KP, M_PART, L_PART, ACC_PART, GQ, GK, LOSS_PART, LOSS, TICKET, M, D,
                   n_split, stride_q, stride_kp, scale, inv_rows, pos_offset, row_tiles,
                   MODE: tl.constexpr, NEED_DQ: tl.constexpr, NEED_DK: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    prow = rows
    if MODE == 2:
        prow = (rows + pos_offset) % M
    m, total, lse2 = _merged_lse2(M_PART, L_PART, rows, row_ok, M, n_split)
    qp = tl.zeros((BLOCK_M,), tl.float32)
    ssq = tl.zeros((BLOCK_M,), tl.float32)
    ssp = tl.zeros((BLOCK_M,), tl.float32)
    for d0 in range(0, D, BLOCK_D):
        x = _load_rows(Q, rows, row_ok, d0, D, stride_q, BLOCK_D).to(tl.float32)
        y = _load_rows(KP, prow, row_ok, d0, D, stride_kp, BLOCK_D).to(tl.float32)
        qp += tl.sum(x * y, 1)
        ssq += tl.sum(x * x, 1)
        ssp += tl.sum(y * y, 1)
    rq = 1.0 / tl.maximum(tl.sqrt(ssq), 1e-12)
    rp = 1.0 / tl.maximum(tl.sqrt(ssp), 1e-12)
    pos = qp * rq * rp * scale
    lse = lse2 * 0.6931471805599453
    w = tl.full((BLOCK_M,), 1.0, tl.float32)
    if MODE == 0:  # logaddexp(pos, lse_neg) - pos = softplus(lse_neg - pos), gradient σ(·)
        gap = lse - pos
        loss = tl.maximum(gap, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(gap)))
        w = 1.0 / (1.0 + tl.exp(-gap))
    else:
        loss = lse - pos
    if NEED_DQ or NEED_DK:
        coef = scale * inv_rows * w
        for d0 in range(0, D, BLOCK_D):
            dims = d0 + tl.arange(0, BLOCK_D)
            ok = row_ok[:, None] & (dims < D)[None, :]
            if NEED_DQ:
                acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
                for s in range(0, n_split):
                    m_s = tl.load(M_PART + s * M + rows, mask=row_ok, other=float("-inf"))
                    part = ACC_PART + (s * M + rows[:, None]).to(tl.int64) * D + dims[None, :]
                    acc += tl.load(part, mask=ok, other=0.0) * tl.exp2(m_s - m)[:, None]
                y = _load_rows(KP, prow, row_ok, d0, D, stride_kp, BLOCK_D).to(tl.float32)
                g = coef[:, None] * (acc / total[:, None] - y * rp[:, None])
                tl.store(GQ + rows[:, None].to(tl.int64) * D + dims[None, :], g, mask=ok)
            if MODE == 0 and NEED_DK:
                xq = _load_rows(Q, rows, row_ok, d0, D, stride_q, BLOCK_D).to(tl.float32)
                g = -coef[:, None] * xq * rq[:, None]
                tl.store(GK + rows[:, None].to(tl.int64) * D + dims[None, :], g, mask=ok)
    # the mean, in a fixed order: the last row tile to finish adds the per-tile sums
    tl.store(LOSS_PART + pid, tl.sum(tl.where(row_ok, loss, 0.0), 0))
    tl.debug_barrier()
    if tl.atomic_add(TICKET, 1, sem="acq_rel") == row_tiles - 1:
        acc_loss = tl.zeros((BLOCK_M,), tl.float32)
        for t0 in range(0, row_tiles, BLOCK_M):
            t = t0 + tl.arange(0, BLOCK_M)
            acc_loss += tl.load(LOSS_PART + t, mask=t < row_tiles, other=0.0, cache_modifier=".cg")
        tl.store(LOSS, tl.sum(acc_loss, 0) * inv_rows)
        tl.atomic_xchg(TICKET, 0)


@triton.jit
def _key_gradient(Q, K, M_PART, L_PART, GK, M, N, D, n_split, stride_q, stride_k, scale2, scale,
                  inv_rows, pos_offset, pid, d_chunks, MODE: tl.constexpr,
                  EXCLUDE_DIAG: tl.constexpr, ONE_CHUNK: tl.constexpr, DOT: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """GK[j, chunk] = scale·Σ_i (p_ij - [i is j's positive]) q̂_i / R for one key tile
    (in-batch / NT-Xent)."""
    cols = (pid // d_chunks) * BLOCK_N + tl.arange(0, BLOCK_N)
    d_out = (pid % d_chunks) * BLOCK_D
    col_ok = cols < N
    k = _load_rows(K, cols, col_ok, 0, D, stride_k, BLOCK_D)
    ck2 = _inv_norm(K, cols, col_ok, D, stride_k, k, ONE_CHUNK, BLOCK_D) * scale2
    acc = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    for m0 in range(0, M, BLOCK_M):
        rows = m0 + tl.arange(0, BLOCK_M)
        row_ok = rows < M
        s_t, ssq, q = _tile_dot(K, Q, cols, rows, col_ok, row_ok, D, stride_k, stride_q, k,
                                ONE_CHUNK, BLOCK_D, DOT)  # logits transposed: BLOCK_N×BLOCK_M
        rq = 1.0 / tl.maximum(tl.sqrt(ssq), 1e-12)
        _m, _total, lse2 = _merged_lse2(M_PART, L_PART, rows, row_ok, M, n_split)
        s_t = s_t * ck2[:, None] * rq[None, :]
        valid = col_ok[:, None] & row_ok[None, :]
        if EXCLUDE_DIAG:
            valid = valid & (cols[:, None] != rows[None, :])
        p_t = tl.where(valid, tl.exp2(s_t - lse2[None, :]), 0.0)
        # the positive pair's -1 folded into its probability: (p - 1) exactly, where a separate
        # -q̂⁺ after the sum would cancel Σ p q̂ at low τ
        partner = rows[None, :] == cols[:, None]
        if MODE == 2:
            partner = rows[None, :] == (cols[:, None] + pos_offset) % M
        p_t = tl.where(partner & valid, p_t - 1.0, p_t)
        if not ONE_CHUNK:
            q = _load_rows(Q, rows, row_ok, d_out, D, stride_q, BLOCK_D).to(k.dtype)
        qn = (q.to(tl.float32) * rq[:, None]).to(k.dtype)
        acc += tl.dot(p_t.to(k.dtype), qn, input_precision=DOT)
    dims = d_out + tl.arange(0, BLOCK_D)
    g = scale * inv_rows * acc
    tl.store(GK + cols[:, None].to(tl.int64) * D + dims[None, :], g,
             mask=col_ok[:, None] & (dims < D)[None, :])


@triton.jit
def _contrastive_finalize(Q, K, KP, M_PART, L_PART, ACC_PART, GQ, GK, LOSS_PART, LOSS, TICKET,
                          M, N, D, n_split, stride_q, stride_k, stride_kp, scale2, scale,
                          inv_rows, pos_offset, row_tiles, d_chunks, MODE: tl.constexpr,
                          NEED_DQ: tl.constexpr, NEED_DK: tl.constexpr,
                          EXCLUDE_DIAG: tl.constexpr, ONE_CHUNK: tl.constexpr,
                          DOT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                          BLOCK_D: tl.constexpr):
    """Programs [0, row_tiles): loss terms, query gradient (queue: key gradient too) and the
    mean; the others (in-batch / NT-Xent key gradient): one key tile and D chunk each."""
    pid = tl.program_id(0)
    if pid < row_tiles:
        _finalize_rows(Q, KP, M_PART, L_PART, ACC_PART, GQ, GK, LOSS_PART, LOSS, TICKET, M, D,
                       n_split, stride_q, stride_kp, scale, inv_rows, pos_offset, row_tiles,
                       MODE, NEED_DQ, NEED_DK, BLOCK_M, BLOCK_D)
    else:
        _key_gradient(Q, K, M_PART, L_PART, GK, M, N, D, n_split, stride_q, stride_k, scale2,
                      scale, inv_rows, pos_offset, pid - row_tiles, d_chunks, MODE,
                      EXCLUDE_DIAG, ONE_CHUNK, DOT, BLOCK_M, BLOCK_N, BLOCK_D)


@triton.jit
def _contrastive_bwd(X, GA, GB, GRAD, DX, M, D, stride_x, HAS_B: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    """DX = grad_output·r·(G - x̂ (x̂·G)), G = GA (+ GB): the gradient through F.normalize."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    ssq = tl.zeros((BLOCK_M,), tl.float32)
    xg = tl.zeros((BLOCK_M,), tl.float32)
    for d0 in range(0, D, BLOCK_D):
        x = _load_rows(X, rows, row_ok, d0, D, stride_x, BLOCK_D).to(tl.float32)
        g = _load_rows(GA, rows, row_ok, d0, D, D, BLOCK_D)
        if HAS_B:
            g += _load_rows(GB, rows, row_ok, d0, D, D, BLOCK_D)
        ssq += tl.sum(x * x, 1)
        xg += tl.sum(x * g, 1)
    r = 1.0 / tl.maximum(tl.sqrt(ssq), 1e-12)
    scale = tl.load(GRAD).to(tl.float32) * r
    proj = r * r * xg
    for d0 in range(0, D, BLOCK_D):
        dims = d0 + tl.arange(0, BLOCK_D)
        x = _load_rows(X, rows, row_ok, d0, D, stride_x, BLOCK_D).to(tl.float32)
        g = _load_rows(GA, rows, row_ok, d0, D, D, BLOCK_D)
        if HAS_B:
            g += _load_rows(GB, rows, row_ok, d0, D, D, BLOCK_D)
        dx = scale[:, None] * (g - x * proj[:, None])
        tl.store(DX + rows[:, None].to(tl.int64) * D + dims[None, :],
                 dx.to(DX.dtype.element_ty), mask=row_ok[:, None] & (dims < D)[None, :])


_TICKETS: dict[torch.device, torch.Tensor] = {}


def _ticket(device: torch.device) -> torch.Tensor:
    """A zeroed int32 counter per device; the kernel that uses it resets it to zero."""
    if device not in _TICKETS:
        _TICKETS[device] = torch.zeros(1, dtype=torch.int32, device=device)
    return _TICKETS[device]


def _splits(own_tiles: int, other_len: int, unit: int, device: torch.device) -> tuple[int, int]:
    """Split the reduction axis (length other_len) when own_tiles programs cannot fill the device.

    Returns (number of splits, elements per split, a multiple of the tile ``unit``)."""
    want = max(1, num_programs_target(device) // max(own_tiles, 1))
    per = triton.cdiv(triton.cdiv(other_len, want), unit) * unit
    return triton.cdiv(other_len, per), per


def _forward(q, k, queue, scale, mode, queue_normalized, need_dq, need_dk):
    """(loss, ∂L/∂q̂ or empty, ∂L/∂k̂ or empty); q̂, k̂ the normalised rows."""
    keys = queue if mode == QUEUE else q if mode == NT_XENT else k
    kp = q if mode == NT_XENT else k
    m, d = q.shape
    n = keys.shape[0]
    cfg = config(d, q.dtype, m, n)
    one_chunk = d <= cfg.BLOCK_D
    chunks = triton.cdiv(d, cfg.BLOCK_D)
    need_acc = need_dq or (need_dk and mode != QUEUE)
    acc_chunks = chunks if need_acc else 1
    row_tiles = triton.cdiv(m, cfg.BLOCK_M)
    n_split, per = _splits(row_tiles * acc_chunks, n, cfg.BLOCK_N, q.device)
    dev = q.device
    m_part, l_part = new_output(n_split, m, device=dev), new_output(n_split, m, device=dev)
    acc_part = new_output(n_split, m, d, device=dev) if need_acc else m_part
    common = dict(ONE_CHUNK=one_chunk, DOT="tf32x3" if q.dtype == torch.float32 else "tf32",
                  BLOCK_M=cfg.BLOCK_M, BLOCK_N=cfg.BLOCK_N, BLOCK_D=cfg.BLOCK_D,
                  num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    fixed_max = scale <= FIXED_MAX_LIMIT and q.dtype != torch.float16  # fp16 p would underflow
    _contrastive_fwd[(row_tiles, n_split, acc_chunks)](
        q, keys, m_part, l_part, acc_part, m, n, d, q.stride(0), keys.stride(0), scale * LOG2E,
        per, KEY_NORM=not (mode == QUEUE and queue_normalized), EXCLUDE_DIAG=mode == NT_XENT,
        FIXED_MAX=fixed_max, NEED_ACC=need_acc, **common)
    gq = new_output(m, d, device=dev) if need_dq else q.new_empty(0, dtype=torch.float32)
    gk = new_output(kp.shape[0], d, device=dev) if need_dk else q.new_empty(0, dtype=torch.float32)
    # the finalize's row tiles: at most 64 rows (three fp32 row×D tiles live at once)
    fin_m = min(cfg.BLOCK_M, 64)
    fin_tiles = triton.cdiv(m, fin_m)
    loss_part, loss = new_output(fin_tiles, device=dev), new_output(device=dev)
    key_programs = triton.cdiv(n, cfg.BLOCK_N) * chunks if need_dk and mode != QUEUE else 0
    _contrastive_finalize[(fin_tiles + key_programs,)](
        q, keys, kp, m_part, l_part, acc_part, gq if need_dq else m_part,
        gk if need_dk else m_part, loss_part, loss, _ticket(dev), m, n, d, n_split, q.stride(0),
        keys.stride(0), kp.stride(0), scale * LOG2E, scale, 1.0 / m,
        m // 2 if mode == NT_XENT else 0, fin_tiles, chunks, MODE=mode, NEED_DQ=need_dq,
        NEED_DK=need_dk, EXCLUDE_DIAG=mode == NT_XENT,
        **{**common, "BLOCK_M": fin_m, "num_warps": 8 if one_chunk else 4})
    return loss, gq, gk


def _input_grad(grad, x, ga, gb=None):
    m, d = x.shape
    block_d = config(d, x.dtype, m, m).BLOCK_D
    block_m = min(64, max(1, 4096 // block_d))  # row tiles of 4096 elements: no spills on sm_90
    dx = new_output(m, d, device=x.device, dtype=x.dtype)
    _contrastive_bwd[(triton.cdiv(m, block_m),)](
        x, ga, ga if gb is None else gb, grad, dx, m, d, x.stride(0), HAS_B=gb is not None,
        BLOCK_M=block_m, BLOCK_D=block_d, num_warps=4, num_stages=1)
    return dx


@torch.library.custom_op("fastssl::contrastive_loss", mutates_args=())
def contrastive_loss(
    q: torch.Tensor,
    k: torch.Tensor | None,
    queue: torch.Tensor | None,
    scale: float,
    mode: int,
    queue_normalized: bool,
    need_dq: bool,
    need_dk: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean loss, ∂L/∂q̂, ∂L/∂k̂) in float32; a gradient not asked for is an empty tensor.
    mode QUEUE: q, k (B×D pairs) and queue (N×D); PAIRS: q, k; NT_XENT: q = [z1; z2]."""
    k_ = k.contiguous() if k is not None else None
    queue_ = queue.contiguous() if queue is not None else None
    return _forward(q.contiguous(), k_, queue_, scale, mode, queue_normalized, need_dq, need_dk)


@contrastive_loss.register_fake
def _(q, k, queue, scale, mode, queue_normalized, need_dq, need_dk):
    f32 = dict(dtype=torch.float32)
    rows_k = q.shape[0] if k is None else k.shape[0]
    return (q.new_empty((), **f32), q.new_empty(q.shape if need_dq else (0,), **f32),
            q.new_empty((rows_k, q.shape[1]) if need_dk else (0,), **f32))


@torch.library.custom_op("fastssl::contrastive_loss_backward", mutates_args=())
def contrastive_loss_backward(
    grad: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor | None,
    gq: torch.Tensor,
    gk: torch.Tensor,
    mode: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(∂L/∂q, ∂L/∂k) = grad_output × the forward's gradients through the normalisation; NT_XENT
    adds the row and key parts of z's gradient into the first."""
    q = q.contiguous()  # grad: a 0-d tensor the kernel reads and converts (no host sync)
    if mode == NT_XENT:
        return _input_grad(grad, q, gq, gk), q.new_empty(0)
    dq = _input_grad(grad, q, gq) if gq.numel() else q.new_empty(0)
    dk = _input_grad(grad, k.contiguous(), gk) if k is not None and gk.numel() else q.new_empty(0)
    return dq, dk


@contrastive_loss_backward.register_fake
def _(grad, q, k, gq, gk, mode):
    dk = torch.empty_like(k) if k is not None and gk.numel() and mode != NT_XENT else q.new_empty(0)
    return torch.empty_like(q) if gq.numel() else q.new_empty(0), dk


def _setup_context(ctx, inputs, output):
    q, k, _queue, _scale, mode, _normalized, _need_dq, _need_dk = inputs
    _, gq, gk = output
    ctx.save_for_backward(q, k, gq, gk)
    ctx.mode = mode
    ctx.mark_non_differentiable(gq, gk)
    ctx.set_materialize_grads(False)  # no zero-filled gradients for gq, gk (two launches)


def _backward(ctx, grad, *_unused):
    q, k, gq, gk = ctx.saved_tensors
    dq, dk = contrastive_loss_backward(grad, q, k, gq, gk, ctx.mode)
    need_dq, need_dk = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    return (dq if need_dq else None), (dk if need_dk else None), None, None, None, None, None, None


contrastive_loss.register_autograd(_backward, setup_context=_setup_context)


def needs_grad(x: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and x.requires_grad


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
    mode = PAIRS if queue is None else QUEUE
    negatives = None if queue is None else queue.detach()
    return contrastive_loss(query, key, negatives, 1.0 / temperature, mode, queue_normalized,
                            needs_grad(query), needs_grad(key))[0]

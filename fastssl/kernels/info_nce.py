"""Fused InfoNCE: per-row logsumexp of q·kᵀ over key tiles, the logits are never materialised.

The core is one op, ``contrastive_lse(q, k, col_scale, scale, exclude_diag)`` →
``lse_i = log Σ_j exp(scale · c_j · q_i·k_j)`` (j ≠ i when ``exclude_diag``), shared by InfoNCE
(MoCo v2 with a queue, MoCo v3 in-batch) and NT-Xent (``nt_xent.py``). The positive logit is an
O(B·D) row-wise dot product done in PyTorch; the loss is ``mean(lse - pos)``.

Forward: FlashAttention-style online logsumexp over key tiles. Because q and k are unit vectors,
every logit is at most ``scale`` (=1/τ), so for τ ≥ 0.025 the running maximum is replaced by the
constant ``scale`` (no max/rescale per tile, and exp(-2·scale) cannot underflow). Small batches
(MoCo v2: B=256 gives 2-4 row tiles) split the key axis over programs; partial logsumexps are
merged afterwards. Backward recomputes each logit tile from the saved per-row lse; the key
gradient kernel is skipped when keys take no gradient (the MoCo queue).

Gradient math, with s_ij = scale·c_j·q_i·k_j, p_ij = exp(s_ij - lse_i), g_i = ∂L/∂lse_i:
    ∂L/∂q_i = scale · Σ_j g_i p_ij c_j k_j        (row-parallel kernel, loops over key tiles)
    ∂L/∂k_j = scale · c_j Σ_i g_i p_ij q_i        (column-parallel kernel, loops over row tiles)
c_j (the queue's inverse norms) takes no gradient.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from fastssl.kernels.dispatch import INTERPRET, new_output, num_programs_target

# A whole embedding row of a tile lives in registers and (pipelined) shared memory: wider inputs
# use the reference (fp32 D=256 already needs ~225 KiB of the 227 KiB on Hopper for 128×64 tiles).
MAX_D = {torch.float32: 256, torch.float16: 512, torch.bfloat16: 512}
FIXED_MAX_LIMIT = 40.0  # exp(-2·scale) stays a normal fp32 number up to scale = 40


def supports(x: torch.Tensor) -> bool:
    return x.dim() == 2 and x.shape[1] <= MAX_D.get(x.dtype, 0)


def _configs():
    """Tile configs for @autotune. Each extra config costs a compile per kernel variant on first
    use, so there are two (both within Hopper's shared memory for the widest accepted D);
    FASTSSL_AUTOTUNE=0 keeps only the first (the GPU correctness check uses that)."""
    if INTERPRET:  # the interpreter cannot autotune, and small tiles run faster there
        return [triton.Config({"BLOCK_M": 32, "BLOCK_N": 32}, num_warps=4)]
    configs = [
        triton.Config({"BLOCK_M": 64, "BLOCK_N": 64}, num_warps=4, num_stages=2),
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 64}, num_warps=8, num_stages=2),
    ]
    return configs if os.environ.get("FASTSSL_AUTOTUNE", "1") != "0" else configs[:1]


SPLIT_UNIT = 128  # key ranges per program are multiples of every BLOCK_N


@triton.jit
def _logits_tile(q, K, COL_SCALE, rows, cols, dims, col_ok, dim_ok, stride_k, scale,
                 HAS_COL_SCALE: tl.constexpr, EXCLUDE_DIAG: tl.constexpr, BLOCK_N: tl.constexpr):
    """Load key tile ``cols``; return (scale·c_j·q_i·k_j with -inf where masked, k tile, c_j)."""
    k = tl.load(K + cols[:, None].to(tl.int64) * stride_k + dims[None, :],
                mask=col_ok[:, None] & dim_ok[None, :], other=0.0).to(q.dtype)
    s = tl.dot(q, tl.trans(k)) * scale
    c = tl.full((BLOCK_N,), 1.0, tl.float32)
    if HAS_COL_SCALE:
        c = tl.load(COL_SCALE + cols, mask=col_ok, other=0.0)
        s = s * c[None, :]
    valid = col_ok[None, :]
    if EXCLUDE_DIAG:
        valid = valid & (cols[None, :] != rows[:, None])
    return tl.where(valid, s, float("-inf")), k, c


@triton.autotune(configs=_configs(), key=["D", "HAS_COL_SCALE", "EXCLUDE_DIAG"])
@triton.jit
def _info_nce_fwd(Q, K, COL_SCALE, LSE_PART, M, N, D, stride_q, stride_k, scale, cols_per_split,
                  HAS_COL_SCALE: tl.constexpr, EXCLUDE_DIAG: tl.constexpr,
                  FIXED_MAX: tl.constexpr, BLOCK_D: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_s = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    row_ok = rows < M
    dim_ok = dims < D
    q = tl.load(Q + rows[:, None].to(tl.int64) * stride_q + dims[None, :],
                mask=row_ok[:, None] & dim_ok[None, :], other=0.0)
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    if FIXED_MAX:
        m_i = tl.full((BLOCK_M,), 1.0, tl.float32) * scale
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    start = pid_s * cols_per_split
    end = tl.minimum(start + cols_per_split, N)
    for n0 in range(start, end, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        col_ok = cols < end
        s, k, c = _logits_tile(q, K, COL_SCALE, rows, cols, dims, col_ok, dim_ok, stride_k,
                               scale, HAS_COL_SCALE, EXCLUDE_DIAG, BLOCK_N)
        if FIXED_MAX:
            l_i += tl.sum(tl.exp(s - m_i[:, None]), 1)
        else:
            m_new = tl.maximum(m_i, tl.max(s, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            l_i = l_i * tl.exp(m_i - m_safe) + tl.sum(tl.exp(s - m_safe[:, None]), 1)
            m_i = m_new
    tl.store(LSE_PART + pid_s * M + rows, m_i + tl.log(l_i), mask=row_ok)


@triton.autotune(configs=_configs(), key=["D", "HAS_COL_SCALE", "EXCLUDE_DIAG"])
@triton.jit
def _info_nce_bwd_dq(Q, K, COL_SCALE, LSE, DLSE, DQ_PART, M, N, D, stride_q, stride_k, scale,
                     cols_per_split, HAS_COL_SCALE: tl.constexpr, EXCLUDE_DIAG: tl.constexpr,
                     BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_s = tl.program_id(1)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    row_ok = rows < M
    dim_ok = dims < D
    q = tl.load(Q + rows[:, None].to(tl.int64) * stride_q + dims[None, :],
                mask=row_ok[:, None] & dim_ok[None, :], other=0.0)
    lse = tl.load(LSE + rows, mask=row_ok, other=0.0)
    g = tl.load(DLSE + rows, mask=row_ok, other=0.0) * scale
    acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    start = pid_s * cols_per_split
    end = tl.minimum(start + cols_per_split, N)
    for n0 in range(start, end, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        col_ok = cols < end
        s, k, c = _logits_tile(q, K, COL_SCALE, rows, cols, dims, col_ok, dim_ok, stride_k,
                               scale, HAS_COL_SCALE, EXCLUDE_DIAG, BLOCK_N)
        ds = tl.exp(s - lse[:, None]) * g[:, None] * c[None, :]
        acc += tl.dot(ds.to(k.dtype), k)
    out = DQ_PART + (pid_s * M + rows[:, None]).to(tl.int64) * D + dims[None, :]
    tl.store(out, acc, mask=row_ok[:, None] & dim_ok[None, :])


@triton.autotune(configs=_configs(), key=["D", "HAS_COL_SCALE", "EXCLUDE_DIAG"])
@triton.jit
def _info_nce_bwd_dk(Q, K, COL_SCALE, LSE, DLSE, DK_PART, M, N, D, stride_q, stride_k, scale,
                     rows_per_split, HAS_COL_SCALE: tl.constexpr, EXCLUDE_DIAG: tl.constexpr,
                     BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    dims = tl.arange(0, BLOCK_D)
    col_ok = cols < N
    dim_ok = dims < D
    k = tl.load(K + cols[:, None].to(tl.int64) * stride_k + dims[None, :],
                mask=col_ok[:, None] & dim_ok[None, :], other=0.0).to(Q.dtype.element_ty)
    c = tl.full((BLOCK_N,), 1.0, tl.float32)
    if HAS_COL_SCALE:
        c = tl.load(COL_SCALE + cols, mask=col_ok, other=0.0)
    acc = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    start = pid_s * rows_per_split
    end = tl.minimum(start + rows_per_split, M)
    for m0 in range(start, end, BLOCK_M):
        rows = m0 + tl.arange(0, BLOCK_M)
        row_ok = rows < end
        q = tl.load(Q + rows[:, None].to(tl.int64) * stride_q + dims[None, :],
                    mask=row_ok[:, None] & dim_ok[None, :], other=0.0)
        lse = tl.load(LSE + rows, mask=row_ok, other=0.0)
        g = tl.load(DLSE + rows, mask=row_ok, other=0.0)
        s_t = tl.dot(k, tl.trans(q)) * (scale * c[:, None])  # logits, transposed: BLOCK_N×BLOCK_M
        valid = row_ok[None, :] & col_ok[:, None]
        if EXCLUDE_DIAG:
            valid = valid & (cols[:, None] != rows[None, :])
        p_t = tl.where(valid, tl.exp(s_t - lse[None, :]), 0.0)
        acc += tl.dot((p_t * g[None, :] * (scale * c[:, None])).to(q.dtype), q)
    out = DK_PART + (pid_s * N + cols[:, None]).to(tl.int64) * D + dims[None, :]
    tl.store(out, acc, mask=col_ok[:, None] & dim_ok[None, :])


def _splits(own_tiles: int, other_len: int, device: torch.device) -> tuple[int, int]:
    """Split the reduction axis (length other_len) when own_tiles programs cannot fill the device.

    Returns (number of splits, elements per split, a multiple of SPLIT_UNIT)."""
    want = max(1, num_programs_target(device) // max(own_tiles, 1))
    per = triton.cdiv(triton.cdiv(other_len, want), SPLIT_UNIT) * SPLIT_UNIT
    return triton.cdiv(other_len, per), per


def _common(q, k, col_scale, scale, exclude_diag):
    m, d = q.shape
    return dict(
        M=m, N=k.shape[0], D=d, stride_q=q.stride(0), stride_k=k.stride(0), scale=scale,
        HAS_COL_SCALE=col_scale is not None, EXCLUDE_DIAG=exclude_diag,
        BLOCK_D=max(16, triton.next_power_of_2(d)),
    )


def _lse_forward(q, k, col_scale, scale, exclude_diag):
    args = _common(q, k, col_scale, scale, exclude_diag)
    n_split, per = _splits(triton.cdiv(args["M"], 64), args["N"], q.device)
    part = new_output(n_split, args["M"], device=q.device)
    cs = col_scale if col_scale is not None else q
    grid = lambda meta: (triton.cdiv(args["M"], meta["BLOCK_M"]), n_split)
    _info_nce_fwd[grid](q, k, cs, part, cols_per_split=per,
                        FIXED_MAX=scale <= FIXED_MAX_LIMIT, **args)
    return part[0] if n_split == 1 else torch.logsumexp(part, dim=0)


def _lse_backward(grad, q, k, col_scale, lse, scale, exclude_diag, need_dq, need_dk):
    args = _common(q, k, col_scale, scale, exclude_diag)
    m, n, d = args["M"], args["N"], args["D"]
    cs = col_scale if col_scale is not None else q
    grad = grad.float().contiguous()
    dq = dk = q.new_empty(0)
    if need_dq:
        n_split, per = _splits(triton.cdiv(m, 64), n, q.device)
        part = new_output(n_split, m, d, device=q.device)
        grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]), n_split)
        _info_nce_bwd_dq[grid](q, k, cs, lse, grad, part, cols_per_split=per, **args)
        dq = part.sum(0).to(q.dtype)
    if need_dk:
        n_split, per = _splits(triton.cdiv(n, 64), m, q.device)
        part = new_output(n_split, n, d, device=q.device)
        grid = lambda meta: (triton.cdiv(n, meta["BLOCK_N"]), n_split)
        _info_nce_bwd_dk[grid](q, k, cs, lse, grad, part, rows_per_split=per, **args)
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
        lse = contrastive_lse(q, k, None, scale, False)
    else:
        negatives = queue.detach()
        inv_norm = None
        if not queue_normalized:
            inv_norm = 1.0 / torch.linalg.vector_norm(negatives, dim=1, dtype=torch.float32)
            inv_norm = inv_norm.clamp_max(1e12)  # F.normalize's eps: a zero row stays zero
        lse = torch.logaddexp(pos, contrastive_lse(q, negatives, inv_norm, scale, False))
    return (lse - pos).mean()

"""Fused Barlow Twins loss: the D×D cross-correlation is never materialised when D is large.

With X, Y the batch-standardised z1, z2 (N×D; BatchNorm without affine, biased variance,
eps 1e-5) and C = XᵀY/N:
    loss = Σ_d (1 - c_dd)² + λ (‖C‖²_F - Σ_d c_dd²)
    ‖C‖²_F = ⟨XXᵀ, YYᵀ⟩ / N²                           (exact rewrite: 8N²D FLOPs instead of 2ND²)
Kernels: ``_barlow_twins_stats`` (column means, inverse std and the diagonal c_dd directly, one
program per column block, two passes over the batch); then either ``_barlow_twins_fwd_gram``
(N < 0.75·D: the two N×N Gram matrices from standardised tiles, upper-triangle tile pairs only,
the feature axis split over programs when there are few sample tiles; the N×N matrices are kept
for the backward, 8N²D FLOPs in all) or ``_barlow_twins_fwd_cc`` (otherwise: one program per
tile of C, reduced on the fly to its share of the loss, C never stored). Standardisation is fused
into the tile loads in both.

Gradient math, w_d = -2(1 - c_dd) - 2λ c_dd:
    ∂L/∂X = (2λ/N²) (YYᵀ) X + Y diag(w)/N = Y (2λ C_offdiag - 2 diag(1 - c_dd))ᵀ / N
    ∂L/∂Y = (2λ/N²) (XXᵀ) Y + X diag(w)/N
(the first form for N < 0.75·D with the forward's Gram matrices, the second otherwise, forming
the D×D matrix C, no larger than the inputs there; the products run on cuBLAS), then through the
standardisation
    ∂L/∂z = r · (∂L/∂X - mean_n ∂L/∂X - X · mean_n(∂L/∂X ⊙ X))      (``_barlow_twins_bwd``).
Multi-process: callers gather Z with gradient and call this on the global batch (equal to the
single-process loss); Z (N×D) is smaller to move than C (D×D).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastssl.kernels.dispatch import INTERPRET, new_output, num_programs_target

EPS = 1e-5
GRAM_RATIO = 0.75  # N < 0.75·D: the Gram form costs fewer FLOPs
BLOCK_COLS = 32 if INTERPRET else 64  # columns per program in the stats / backward kernels
BLOCK_ROWS = 32 if INTERPRET else 64  # batch rows per step in the stats / backward kernels
BLOCK_T = 32 if INTERPRET else 64  # output tile side (Gram: samples; C: features)
BLOCK_K = 32 if INTERPRET else 64  # inner (reduction) step


@triton.jit
def _barlow_twins_stats(Z1, Z2, MEAN, RSTD, DIAG, N, D, stride1, stride2, eps,
                        BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr):
    """MEAN[t, d], RSTD[t, d] for t in (z1, z2) and DIAG[d] = c_dd = Σ_n x_nd y_nd / N."""
    cols = tl.program_id(0) * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
    col_ok = cols < D
    sum1 = tl.zeros((BLOCK_COLS,), tl.float32)
    sum2 = tl.zeros((BLOCK_COLS,), tl.float32)
    for n0 in range(0, N, BLOCK_ROWS):
        rows = (n0 + tl.arange(0, BLOCK_ROWS)).to(tl.int64)
        ok = (rows < N)[:, None] & col_ok[None, :]
        sum1 += tl.sum(tl.load(Z1 + rows[:, None] * stride1 + cols[None, :], mask=ok, other=0.0)
                       .to(tl.float32), 0)
        sum2 += tl.sum(tl.load(Z2 + rows[:, None] * stride2 + cols[None, :], mask=ok, other=0.0)
                       .to(tl.float32), 0)
    mean1 = sum1 / N
    mean2 = sum2 / N
    var1 = tl.zeros((BLOCK_COLS,), tl.float32)
    var2 = tl.zeros((BLOCK_COLS,), tl.float32)
    cov = tl.zeros((BLOCK_COLS,), tl.float32)
    for n0 in range(0, N, BLOCK_ROWS):
        rows = (n0 + tl.arange(0, BLOCK_ROWS)).to(tl.int64)
        ok = (rows < N)[:, None] & col_ok[None, :]
        a = tl.load(Z1 + rows[:, None] * stride1 + cols[None, :], mask=ok, other=0.0)
        b = tl.load(Z2 + rows[:, None] * stride2 + cols[None, :], mask=ok, other=0.0)
        a = tl.where(ok, a.to(tl.float32) - mean1[None, :], 0.0)
        b = tl.where(ok, b.to(tl.float32) - mean2[None, :], 0.0)
        var1 += tl.sum(a * a, 0)
        var2 += tl.sum(b * b, 0)
        cov += tl.sum(a * b, 0)
    rstd1 = 1.0 / tl.sqrt(var1 / N + eps)
    rstd2 = 1.0 / tl.sqrt(var2 / N + eps)
    tl.store(MEAN + cols, mean1, mask=col_ok)
    tl.store(MEAN + D + cols, mean2, mask=col_ok)
    tl.store(RSTD + cols, rstd1, mask=col_ok)
    tl.store(RSTD + D + cols, rstd2, mask=col_ok)
    tl.store(DIAG + cols, cov / N * rstd1 * rstd2, mask=col_ok)


@triton.jit
def _standardised(Z, rows, cols, stride, MEAN, RSTD, N, D):
    """(z - mean)·rstd for a tile, zero outside the matrix, in z's dtype (for tl.dot)."""
    ok = (rows < N)[:, None] & (cols < D)[None, :]
    z = tl.load(Z + rows[:, None].to(tl.int64) * stride + cols[None, :], mask=ok, other=0.0)
    mean = tl.load(MEAN + cols, mask=cols < D, other=0.0)
    rstd = tl.load(RSTD + cols, mask=cols < D, other=0.0)
    x = tl.where(ok, (z.to(tl.float32) - mean[None, :]) * rstd[None, :], 0.0)
    return x.to(z.dtype)


@triton.jit
def _barlow_twins_fwd_gram(Z1, Z2, MEAN, RSTD, GRAM, N, D, stride1, stride2, cols_per_split,
                           DOT: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr):
    """GRAM[split, 0] = XXᵀ and GRAM[split, 1] = YYᵀ summed over this split's features, for the
    sample tiles i ≤ j (the tile below the diagonal is stored transposed: both are symmetric)."""
    ti = tl.program_id(0)
    tj = tl.program_id(1)
    ts = tl.program_id(2)
    if tj >= ti:
        ri = ti * BLOCK_T + tl.arange(0, BLOCK_T)
        rj = tj * BLOCK_T + tl.arange(0, BLOCK_T)
        gram_x = tl.zeros((BLOCK_T, BLOCK_T), tl.float32)
        gram_y = tl.zeros((BLOCK_T, BLOCK_T), tl.float32)
        start = ts * cols_per_split  # a multiple of BLOCK_K: chunks never straddle two splits
        end = tl.minimum(start + cols_per_split, D)
        for d0 in range(start, end, BLOCK_K):
            cols = d0 + tl.arange(0, BLOCK_K)
            xi = _standardised(Z1, ri, cols, stride1, MEAN, RSTD, N, D)
            xj = _standardised(Z1, rj, cols, stride1, MEAN, RSTD, N, D)
            yi = _standardised(Z2, ri, cols, stride2, MEAN + D, RSTD + D, N, D)
            yj = _standardised(Z2, rj, cols, stride2, MEAN + D, RSTD + D, N, D)
            gram_x += tl.dot(xi, tl.trans(xj), input_precision=DOT)
            gram_y += tl.dot(yi, tl.trans(yj), input_precision=DOT)
        ri64 = ri.to(tl.int64)
        rj64 = rj.to(tl.int64)
        ok = (ri < N)[:, None] & (rj < N)[None, :]
        base = GRAM + ts.to(tl.int64) * 2 * N * N
        upper = ri64[:, None] * N + rj64[None, :]
        lower = rj64[:, None] * N + ri64[None, :]
        tl.store(base + upper, gram_x, mask=ok)
        tl.store(base + N * N + upper, gram_y, mask=ok)
        tl.store(base + lower, tl.trans(gram_x), mask=tl.trans(ok))
        tl.store(base + N * N + lower, tl.trans(gram_y), mask=tl.trans(ok))


@triton.jit
def _barlow_twins_fwd_cc(Z1, Z2, MEAN, RSTD, DIAG, PART, N, D, stride1, stride2, lambd,
                         DOT: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_K: tl.constexpr):
    """PART[i, j] = this C tile's share of the loss: (1 - c_dd)² on, λ c_de² off the diagonal;
    c_dd from the stats kernel's exact fp32 sums, not from the tile product."""
    ti = tl.program_id(0)
    tj = tl.program_id(1)
    ci = ti * BLOCK_T + tl.arange(0, BLOCK_T)
    cj = tj * BLOCK_T + tl.arange(0, BLOCK_T)
    c = tl.zeros((BLOCK_T, BLOCK_T), tl.float32)
    for n0 in range(0, N, BLOCK_K):
        rows = n0 + tl.arange(0, BLOCK_K)
        x = _standardised(Z1, rows, ci, stride1, MEAN, RSTD, N, D)
        y = _standardised(Z2, rows, cj, stride2, MEAN + D, RSTD + D, N, D)
        c += tl.dot(tl.trans(x), y, input_precision=DOT)
    c = c / N
    on = (ci[:, None] == cj[None, :]) & (ci < D)[:, None]
    diag = tl.load(DIAG + ci, mask=ci < D, other=0.0)
    share = tl.where(on, (1.0 - diag[:, None]) * (1.0 - diag[:, None]), lambd * c * c)
    tl.store(PART + ti * tl.num_programs(1) + tj, tl.sum(tl.sum(share, 1), 0))


@triton.jit
def _barlow_twins_bwd(DX, Z, DZ, MEAN, RSTD, N, D, stride_z,
                      BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr):
    """Standardisation backward for one input (program axis 1 picks z1 or z2):
    DZ = rstd · (DX - mean_n DX - X · mean_n(DX ⊙ X)). DX is float32, N×D contiguous."""
    cols = tl.program_id(0) * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
    col_ok = cols < D
    mean = tl.load(MEAN + cols, mask=col_ok, other=0.0)
    rstd = tl.load(RSTD + cols, mask=col_ok, other=0.0)
    sum_dx = tl.zeros((BLOCK_COLS,), tl.float32)
    sum_dxx = tl.zeros((BLOCK_COLS,), tl.float32)
    for n0 in range(0, N, BLOCK_ROWS):
        rows = (n0 + tl.arange(0, BLOCK_ROWS)).to(tl.int64)
        ok = (rows < N)[:, None] & col_ok[None, :]
        dx = tl.load(DX + rows[:, None] * D + cols[None, :], mask=ok, other=0.0)
        z = tl.load(Z + rows[:, None] * stride_z + cols[None, :], mask=ok, other=0.0)
        x = tl.where(ok, (z.to(tl.float32) - mean[None, :]) * rstd[None, :], 0.0)
        sum_dx += tl.sum(dx, 0)
        sum_dxx += tl.sum(dx * x, 0)
    mean_dx = sum_dx / N
    mean_dxx = sum_dxx / N
    for n0 in range(0, N, BLOCK_ROWS):
        rows = (n0 + tl.arange(0, BLOCK_ROWS)).to(tl.int64)
        ok = (rows < N)[:, None] & col_ok[None, :]
        dx = tl.load(DX + rows[:, None] * D + cols[None, :], mask=ok, other=0.0)
        z = tl.load(Z + rows[:, None] * stride_z + cols[None, :], mask=ok, other=0.0)
        x = (z.to(tl.float32) - mean[None, :]) * rstd[None, :]
        dz = rstd[None, :] * (dx - mean_dx[None, :] - x * mean_dxx[None, :])
        tl.store(DZ + rows[:, None] * D + cols[None, :], dz.to(z.dtype), mask=ok)


def use_gram(n: int, d: int) -> bool:
    return n < GRAM_RATIO * d


def _stats(z1, z2):
    n, d = z1.shape
    mean = new_output(2, d, device=z1.device)
    rstd = new_output(2, d, device=z1.device)
    diag = new_output(d, device=z1.device)
    _barlow_twins_stats[(triton.cdiv(d, BLOCK_COLS),)](
        z1, z2, mean, rstd, diag, n, d, z1.stride(0), z2.stride(0), EPS,
        BLOCK_ROWS=BLOCK_ROWS, BLOCK_COLS=BLOCK_COLS)
    return mean, rstd, diag


def _forward(z1, z2, lambd):
    n, d = z1.shape
    mean, rstd, diag = _stats(z1, z2)
    args = (z1, z2, mean, rstd)
    # fp32: 3xTF32 for float32 accuracy (twice the registers: 8 warps for the Gram tiles)
    dot = "tf32x3" if z1.dtype == torch.float32 else "tf32"
    if use_gram(n, d):
        # Few sample tiles (N=256: 4×4) cannot fill a GPU: split the feature axis too and add the
        # partial Gram matrices (N×N each, small by construction since N < 0.75·D).
        t = triton.cdiv(n, BLOCK_T)
        want = max(1, num_programs_target(z1.device) // (t * (t + 1) // 2))
        per = triton.cdiv(triton.cdiv(d, want), BLOCK_K) * BLOCK_K
        n_split = triton.cdiv(d, per)
        part = new_output(n_split, 2, n, n, device=z1.device)
        _barlow_twins_fwd_gram[(t, t, n_split)](*args, part, n, d, z1.stride(0), z2.stride(0),
                                                per, DOT=dot, BLOCK_T=BLOCK_T, BLOCK_K=BLOCK_K,
                                                num_warps=8 if dot == "tf32x3" else 4)
        grams = part[0] if n_split == 1 else part.sum(0)
        frob = (grams[0] * grams[1]).sum() / (n * n)
        loss = (1 - diag).pow(2).sum() + lambd * (frob - diag.pow(2).sum())
    else:
        t = triton.cdiv(d, BLOCK_T)
        part = new_output(t, t, device=z1.device)
        _barlow_twins_fwd_cc[(t, t)](*args, diag, part, n, d, z1.stride(0), z2.stride(0), lambd,
                                     DOT=dot, BLOCK_T=BLOCK_T, BLOCK_K=BLOCK_K)
        loss = part.sum()
        grams = z1.new_empty(0, dtype=torch.float32)
    return loss, mean, rstd, diag, grams


def _backward(grad, z1, z2, mean, rstd, diag, grams, lambd):
    n, d = z1.shape
    x = ((z1.float() - mean[0]) * rstd[0]).to(z1.dtype)
    y = ((z2.float() - mean[1]) * rstd[1]).to(z2.dtype)
    if use_gram(n, d):  # the forward's Gram matrices are reused: two N×N by N×D products
        w = (-2 * (1 - diag) - 2 * lambd * diag) / n
        dx = (2 * lambd / (n * n)) * (grams[1].to(x.dtype) @ x).float() + y.float() * w
        dy = (2 * lambd / (n * n)) * (grams[0].to(y.dtype) @ y).float() + x.float() * w
    else:
        dc = (x.T @ y).float() * (2 * lambd / n)
        dc.diagonal().copy_(-2 * (1 - diag))
        dc = (dc / n).to(x.dtype)
        dx = (y @ dc.T).float()
        dy = (x @ dc).float()
    dz1 = new_output(n, d, device=z1.device, dtype=z1.dtype)
    dz2 = new_output(n, d, device=z2.device, dtype=z2.dtype)
    grid = (triton.cdiv(d, BLOCK_COLS),)
    for dxi, z, dz, t in ((dx, z1, dz1, 0), (dy, z2, dz2, 1)):
        dxi = (dxi * grad).contiguous()
        _barlow_twins_bwd[grid](dxi, z, dz, mean[t], rstd[t], n, d, z.stride(0),
                                BLOCK_ROWS=BLOCK_ROWS, BLOCK_COLS=BLOCK_COLS)
    return dz1, dz2


@torch.library.custom_op("fastssl::barlow_twins_loss", mutates_args=())
def _barlow_twins_op(
    z1: torch.Tensor, z2: torch.Tensor, lambd: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, column means [2, D], inverse stds [2, D], diagonal c_dd [D], Gram matrices
    [2, N, N] (empty on the tiled-C path)), float32."""
    return _forward(z1.contiguous(), z2.contiguous(), lambd)


@_barlow_twins_op.register_fake
def _(z1, z2, lambd):
    d = z1.shape[1]
    f32 = dict(dtype=torch.float32, device=z1.device)
    n = z1.shape[0] if use_gram(z1.shape[0], d) else 0
    return (z1.new_empty((), **f32), z1.new_empty(2, d, **f32), z1.new_empty(2, d, **f32),
            z1.new_empty(d, **f32), z1.new_empty(*((2, n, n) if n else (0,)), **f32))


@torch.library.custom_op("fastssl::barlow_twins_loss_backward", mutates_args=())
def _barlow_twins_backward_op(
    grad: torch.Tensor,
    z1: torch.Tensor,
    z2: torch.Tensor,
    mean: torch.Tensor,
    rstd: torch.Tensor,
    diag: torch.Tensor,
    grams: torch.Tensor,
    lambd: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    return _backward(grad, z1.contiguous(), z2.contiguous(), mean, rstd, diag, grams, lambd)


@_barlow_twins_backward_op.register_fake
def _(grad, z1, z2, mean, rstd, diag, grams, lambd):
    return torch.empty_like(z1), torch.empty_like(z2)


def _setup_context(ctx, inputs, output):
    z1, z2, lambd = inputs
    _, mean, rstd, diag, grams = output
    ctx.save_for_backward(z1, z2, mean, rstd, diag, grams)
    ctx.lambd = lambd
    ctx.mark_non_differentiable(mean, rstd, diag, grams)


def _backward_autograd(ctx, grad, *_unused):
    z1, z2, mean, rstd, diag, grams = ctx.saved_tensors
    dz1, dz2 = _barlow_twins_backward_op(grad, z1, z2, mean, rstd, diag, grams, ctx.lambd)
    return dz1, dz2, None


_barlow_twins_op.register_autograd(_backward_autograd, setup_context=_setup_context)


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, *, lambd: float = 0.0051) -> torch.Tensor:
    """Fused Barlow Twins loss, same semantics as ``reference.barlow_twins_loss`` (float32)."""
    return _barlow_twins_op(z1, z2.to(z1.dtype), lambd)[0]

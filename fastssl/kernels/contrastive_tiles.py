"""Shared pieces of the fused contrastive kernels (``info_nce.py``): the static tile table, the
constants of the base-2 logsumexp, and the row loads, norms, tile dot products and partial
merges that the forward and finalize kernels call."""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from fastssl.kernels.dispatch import INTERPRET, KERNEL_DTYPES

MAX_D = 2048  # widest embedding the kernels take, in every dtype (tiled over D)
FIXED_MAX_LIMIT = 40.0  # 2^(-2·scale·log2 e) stays a normal bf16/fp32 number up to scale = 40
LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
QUEUE, PAIRS, NT_XENT = 0, 1, 2  # modes of the op


def supports(x: torch.Tensor) -> bool:
    return x.dim() == 2 and x.dtype in KERNEL_DTYPES and 1 <= x.shape[1] <= MAX_D


class Config(NamedTuple):
    BLOCK_M: int
    BLOCK_N: int
    BLOCK_D: int  # D chunk: the whole row when D <= BLOCK_D
    num_warps: int
    num_stages: int


def config(d: int, dtype: torch.dtype, m: int, n: int) -> Config:
    """Static tile table keyed on (D, dtype, rows M, keys N). The chunk limits keep the tiles
    within Hopper's shared memory and registers (the sm_90 AOT test compiles every variant
    `supports` admits and checks spills and shared memory). Not tuned on a GPU yet."""
    if INTERPRET:  # few, small tiles: the interpreter pays per tile step
        return Config(32, 32, min(max(16, triton.next_power_of_2(d)), 256), 4, 1)
    block_d = min(max(16, triton.next_power_of_2(d)), 64 if dtype == torch.float32 else 128)
    if d > block_d:  # tiled over D: small tiles, no software pipelining (else ptxas spills)
        return Config(32 if dtype == torch.float32 else 64, 32, 64, 4, 1)
    block_n = 32 if n <= 32 else 64
    if m >= 2048 and dtype != torch.float32:  # large batches: bigger row tiles (fp32 spills)
        return Config(128, block_n, block_d, 8, 2)
    if d % 16:  # unvectorised loads: a 64-bit address per element, smaller tiles
        return Config(32, 32, block_d, 4, 2)
    return Config(64, block_n, block_d, 4, 2)


@triton.jit
def _load_rows(X, rows, ok, d0, D, stride, BLOCK_D: tl.constexpr):
    dims = d0 + tl.arange(0, BLOCK_D)
    return tl.load(X + rows[:, None].to(tl.int64) * stride + dims[None, :],
                   mask=ok[:, None] & (dims < D)[None, :], other=0.0)


@triton.jit
def _inv_norm(X, rows, ok, D, stride, x_tile, ONE_CHUNK: tl.constexpr, BLOCK_D: tl.constexpr):
    """1/max(‖x_r‖, 1e-12) in fp32 (F.normalize's eps), from ``x_tile`` with ONE_CHUNK."""
    if ONE_CHUNK:
        xf = x_tile.to(tl.float32)
        ssq = tl.sum(xf * xf, 1)
    else:
        ssq = tl.sum(tl.zeros((rows.shape[0], 2), tl.float32), 1)
        for d0 in range(0, D, BLOCK_D):
            xf = _load_rows(X, rows, ok, d0, D, stride, BLOCK_D).to(tl.float32)
            ssq += tl.sum(xf * xf, 1)
    return 1.0 / tl.maximum(tl.sqrt(ssq), 1e-12)


@triton.jit
def _tile_dot(A, B, a_rows, b_rows, a_ok, b_ok, D, stride_a, stride_b, a_tile,
              ONE_CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, DOT: tl.constexpr):
    """(A[a_rows]·B[b_rows]ᵀ over all D in fp32, Σ b² per B row, the B rows in A's dtype when
    ONE_CHUNK). With ONE_CHUNK the caller's ``a_tile`` (whole rows, loaded once) is used."""
    dims = tl.arange(0, BLOCK_D)
    if ONE_CHUNK:
        b = tl.load(B + b_rows[:, None].to(tl.int64) * stride_b + dims[None, :],
                    mask=b_ok[:, None] & (dims < D)[None, :], other=0.0).to(a_tile.dtype)
        acc = tl.dot(a_tile, tl.trans(b), input_precision=DOT)
        bf = b.to(tl.float32)
        ssq = tl.sum(bf * bf, 1)
    else:
        acc = tl.zeros((a_rows.shape[0], b_rows.shape[0]), tl.float32)
        ssq = tl.sum(tl.zeros((b_rows.shape[0], 2), tl.float32), 1)
        for d0 in range(0, D, BLOCK_D):
            a = _load_rows(A, a_rows, a_ok, d0, D, stride_a, BLOCK_D)
            b = _load_rows(B, b_rows, b_ok, d0, D, stride_b, BLOCK_D).to(a.dtype)
            acc += tl.dot(a, tl.trans(b), input_precision=DOT)
            bf = b.to(tl.float32)
            ssq += tl.sum(bf * bf, 1)
        b = a_tile  # unused by the callers: they load their chunks (compiled mode needs a value)
    return acc, ssq, b


@triton.jit
def _merged_lse2(M_PART, L_PART, rows, row_ok, M, n_split):
    """(max, Σ 2^(m_s - max)·l_s, base-2 logsumexp) of the key ranges, per row."""
    m = tl.full(rows.shape, float("-inf"), tl.float32)
    for s in range(0, n_split):
        m = tl.maximum(m, tl.load(M_PART + s * M + rows, mask=row_ok, other=float("-inf")))
    m = tl.where(m == float("-inf"), 0.0, m)
    total = tl.zeros(rows.shape, tl.float32)
    for s in range(0, n_split):
        m_s = tl.load(M_PART + s * M + rows, mask=row_ok, other=float("-inf"))
        total += tl.load(L_PART + s * M + rows, mask=row_ok, other=0.0) * tl.exp2(m_s - m)
    return m, total, m + tl.log2(total)

"""Fused Barlow Twins (Triton interpreter) against the float64 reference, both kernel paths."""

from __future__ import annotations

import importlib

import pytest
import torch
from kernel_testing import CASES, assert_close, leaf, needs_interpreter

import fastssl.kernels as K
from fastssl.kernels import reference as R

pytestmark = needs_interpreter
barlow_kernel = importlib.import_module("fastssl.kernels.barlow_twins")


# (N, D): N < 0.75·D takes the Gram path, the others the tiled-C path; none is a multiple of 32.
@pytest.mark.parametrize("dtype,atol,rtol", CASES)
@pytest.mark.parametrize("n,d", [(37, 101), (60, 67), (100, 40)])
def test_barlow_twins(n, d, dtype, atol, rtol):
    torch.manual_seed(n + d)
    z1, z2 = torch.randn(n, d) * 3 + 1, torch.randn(n, d)
    z2[:, : d // 2] += z1[:, : d // 2]  # some real correlation on the diagonal
    a, b = leaf(z1, dtype), leaf(z2, dtype)
    ra, rb = leaf(z1.to(dtype), torch.float64), leaf(z2.to(dtype), torch.float64)
    out = K.barlow_twins_loss(a, b, lambd=0.05, backend="triton")
    want = R.barlow_twins_loss(ra, rb, 0.05)
    # fp16 tiles of standardised values feed tl.dot: the loss is a sum of D² squares
    scale = 3 if dtype == torch.float16 else 1
    assert_close(out, want, atol * scale, rtol * scale, "loss")
    (out * 0.5).backward()
    (want * 0.5).backward()
    assert_close(a.grad, ra.grad, atol * scale, rtol * scale, "dz1")
    assert_close(b.grad, rb.grad, atol * scale, rtol * scale, "dz2")
    assert a.grad.dtype == dtype


def test_gram_path_split_over_features(monkeypatch):
    """Pretend the device wants many programs: the Gram kernel splits D and sums the parts."""
    monkeypatch.setattr(barlow_kernel, "num_programs_target", lambda device: 64)
    torch.manual_seed(5)
    z1, z2 = torch.randn(40, 150), torch.randn(40, 150)
    a, b = leaf(z1, torch.float32), leaf(z2, torch.float32)
    ra, rb = leaf(z1, torch.float64), leaf(z2, torch.float64)
    out = K.barlow_twins_loss(a, b, lambd=0.02, backend="triton")
    want = R.barlow_twins_loss(ra, rb, 0.02)
    assert_close(out, want, 1e-5, 1e-4, "loss")
    out.backward()
    want.backward()
    assert_close(a.grad, ra.grad, 1e-5, 1e-4, "dz1")
    assert_close(b.grad, rb.grad, 1e-5, 1e-4, "dz2")


def test_paths_are_chosen_by_shape():
    assert barlow_kernel.use_gram(256, 8192) and barlow_kernel.use_gram(37, 101)
    assert not barlow_kernel.use_gram(2048, 2048) and not barlow_kernel.use_gram(60, 67)

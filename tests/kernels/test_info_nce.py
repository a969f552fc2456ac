"""Fused InfoNCE / NT-Xent (Triton interpreter) against the float64 reference."""

from __future__ import annotations

import importlib

import pytest
import torch
from kernel_testing import CASES, assert_close, leaf, needs_interpreter

import fastssl.kernels as K
from fastssl.kernels import reference as R

pytestmark = needs_interpreter
info_nce_kernel = importlib.import_module("fastssl.kernels.info_nce")


def _check(fn, ref_fn, inputs, grad_mask, dtype, atol, rtol):
    """Run fn on dtype leaves and ref_fn on float64 leaves; compare the loss and each gradient."""
    xs = [leaf(x, dtype, g) for x, g in zip(inputs, grad_mask, strict=True)]
    refs = [leaf(x.to(dtype), torch.float64, g) for x, g in zip(inputs, grad_mask, strict=True)]
    out, want = fn(*xs), ref_fn(*refs)
    assert out.dtype == torch.float32
    assert_close(out, want, atol, rtol, "loss")
    (out * 1.7).backward()
    (want * 1.7).backward()
    for i, (x, r) in enumerate(zip(xs, refs, strict=True)):
        if grad_mask[i]:
            assert_close(x.grad, r.grad, atol, rtol, f"grad {i}")


# (B, N queue, D): odd sizes that are not multiples of the 32-wide interpreter tiles; N=300 with
# B=37 splits the queue over 3 programs (partial logsumexps merged).
@pytest.mark.parametrize("dtype,atol,rtol", CASES)
@pytest.mark.parametrize("b,n,d", [(37, 300, 24), (70, 45, 128)])
def test_info_nce_queue(b, n, d, dtype, atol, rtol):
    torch.manual_seed(b)
    inputs = [torch.randn(b, d), torch.randn(b, d), torch.randn(n, d)]
    fn = lambda q, k, queue: K.info_nce(q, k, queue, temperature=0.2, backend="triton")
    ref = lambda q, k, queue: R.info_nce(q, k, queue, 0.2)
    _check(fn, ref, inputs, [True, False, False], dtype, atol, rtol)  # MoCo v2: only q


@pytest.mark.parametrize("dtype,atol,rtol", CASES)
@pytest.mark.parametrize("b,d", [(53, 40), (130, 16)])
def test_info_nce_in_batch(b, d, dtype, atol, rtol):
    torch.manual_seed(b)
    inputs = [torch.randn(b, d), torch.randn(b, d)]
    fn = lambda q, k: K.info_nce(q, k, temperature=0.2, backend="triton")
    _check(fn, lambda q, k: R.info_nce(q, k, None, 0.2), inputs, [True, True], dtype, atol, rtol)


@pytest.mark.parametrize("dtype,atol,rtol", CASES)
@pytest.mark.parametrize("n,d", [(29, 24), (100, 64)])
def test_nt_xent(n, d, dtype, atol, rtol):
    torch.manual_seed(n)
    inputs = [torch.randn(n, d), torch.randn(n, d)]
    fn = lambda a, b: K.nt_xent(a, b, temperature=0.5, backend="triton")
    _check(fn, lambda a, b: R.nt_xent(a, b, 0.5), inputs, [True, True], dtype, atol, rtol)


def test_split_reduction_axes(monkeypatch):
    """Pretend the device wants many programs: both backward kernels split their reduction."""
    monkeypatch.setattr(info_nce_kernel, "num_programs_target", lambda device: 64)
    torch.manual_seed(1)
    inputs = [torch.randn(200, 32), torch.randn(200, 32)]
    fn = lambda q, k: K.info_nce(q, k, temperature=0.1, backend="triton")
    ref = lambda q, k: R.info_nce(q, k, None, 0.1)
    _check(fn, ref, inputs, [True, True], torch.float32, 1e-5, 1e-4)


def test_low_temperature_online_max():
    """τ below 1/40 uses the running-max path (the fixed bound 1/τ could underflow)."""
    torch.manual_seed(2)
    inputs = [torch.randn(40, 16), torch.randn(40, 16), torch.randn(90, 16)]
    fn = lambda q, k, queue: K.info_nce(q, k, queue, temperature=0.01, backend="triton")
    ref = lambda q, k, queue: R.info_nce(q, k, queue, 0.01)
    _check(fn, ref, inputs, [True, True, False], torch.float32, 1e-5, 1e-4)


def test_queue_takes_no_gradient():
    q, k = torch.randn(8, 16, requires_grad=True), torch.randn(8, 16, requires_grad=True)
    queue = torch.randn(20, 16, requires_grad=True)
    K.info_nce(q, k, queue, backend="triton").backward()
    assert queue.grad is None and q.grad is not None and k.grad is not None


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("queue_dtype", [torch.float32, torch.bfloat16])
def test_normalized_queue_equals_normalising_path(backend, queue_dtype):
    """queue_normalized=True takes the rows as stored (a bf16 queue with fp32 queries too: no
    conversion pass); on unit (and zero) fp32 rows it equals the normalising path."""
    torch.manual_seed(4)
    queue = torch.nn.functional.normalize(torch.randn(75, 24), dim=1).to(queue_dtype)
    queue[[3, 40]] = 0  # empty queue slots stay zero rows
    q, k = torch.randn(33, 24, requires_grad=True), torch.randn(33, 24, requires_grad=True)
    got = K.info_nce(q, k, queue, 0.1, queue_normalized=True, backend=backend)
    gq, gk = torch.autograd.grad(got * 1.3, (q, k))
    want = R.info_nce(q.double(), k.double(), queue.double(), 0.1, queue_normalized=True)
    wq, wk = torch.autograd.grad(want * 1.3, (q, k))
    assert_close(got, want, 1e-5, 1e-4, "loss")
    assert_close(gq, wq, 1e-5, 1e-4, "dq")
    assert_close(gk, wk, 1e-5, 1e-4, "dk")
    if queue_dtype == torch.float32:  # bf16 rounding leaves rows ~1e-3 off unit length
        plain = K.info_nce(q, k, queue, 0.1, backend=backend)
        assert_close(got, plain, 1e-6, 1e-6, "vs normalising path")

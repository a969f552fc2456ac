"""Fused InfoNCE / NT-Xent (Triton interpreter) against the float64 reference: values and every
gradient, widths from one tile to MAX_D (tiled over D), the three temperature regimes, queue
rows that are unnormalised or zero, split reductions, upstream gradients != 1, reuse, no_grad,
determinism."""

from __future__ import annotations

import importlib

import pytest
import torch
from kernel_testing import CASES, assert_close, leaf, needs_interpreter

import fastssl.kernels as K
from fastssl.kernels import reference as R

pytestmark = needs_interpreter
info_nce_kernel = importlib.import_module("fastssl.kernels.info_nce")


def _check(fn, ref_fn, inputs, grad_mask, dtype, atol, rtol, upstream=1.7):
    """Run fn on dtype leaves and ref_fn on float64 leaves; compare the loss and each gradient."""
    xs = [leaf(x, dtype, g) for x, g in zip(inputs, grad_mask, strict=True)]
    refs = [leaf(x.to(dtype), torch.float64, g) for x, g in zip(inputs, grad_mask, strict=True)]
    out, want = fn(*xs), ref_fn(*refs)
    assert out.dtype == torch.float32
    assert_close(out, want, atol, rtol, "loss")
    (out * upstream).backward()
    (want * upstream).backward()
    for i, (x, r) in enumerate(zip(xs, refs, strict=True)):
        if grad_mask[i]:
            assert_close(x.grad, r.grad, atol, rtol, f"grad {i}")
            assert x.grad.dtype == dtype


def _queue(n, d):
    """Unnormalised negatives (norms 0.1-10) with two zero rows (empty queue slots)."""
    queue = torch.randn(n, d) * torch.logspace(-1, 1, n)[:, None]
    queue[[0, n // 2]] = 0
    return queue


def _info(tau, **kw):
    return (lambda q, k, queue=None: K.info_nce(q, k, queue, tau, backend="triton", **kw),
            lambda q, k, queue=None: R.info_nce(q, k, queue, tau, **kw))


# (B, N queue, D): none a multiple of the 32-wide interpreter tiles except D=128 and 2048;
# D=300 and 2048 are tiled over D (256-wide chunks in the interpreter), with few rows.
WIDTHS = [(37, 300, 24), (20, 45, 128), (9, 70, 300), (3, 40, 2048)]


@pytest.mark.parametrize("dtype,atol,rtol", CASES)
@pytest.mark.parametrize("b,n,d", WIDTHS)
def test_info_nce_queue(b, n, d, dtype, atol, rtol):
    """MoCo v2: query and key gradients (the key through the positive logit), none for the queue."""
    torch.manual_seed(b + d)
    fn, ref = _info(0.2)
    inputs = [torch.randn(b, d), torch.randn(b, d), _queue(n, d)]
    _check(fn, ref, inputs, [True, True, False], dtype, atol, rtol)


@pytest.mark.parametrize("dtype,atol,rtol", CASES)
@pytest.mark.parametrize("b,d", [(53, 40), (130, 16), (11, 300), (4, 2048)])
def test_info_nce_in_batch(b, d, dtype, atol, rtol):
    torch.manual_seed(b)
    fn, ref = _info(0.2)
    _check(fn, ref, [torch.randn(b, d), torch.randn(b, d)], [True, True], dtype, atol, rtol)


@pytest.mark.parametrize("dtype,atol,rtol", CASES)
@pytest.mark.parametrize("n,d", [(29, 24), (100, 64), (6, 300), (2, 2048)])
def test_nt_xent(n, d, dtype, atol, rtol):
    torch.manual_seed(n)
    inputs = [torch.randn(n, d), torch.randn(n, d)]
    fn = lambda a, b: K.nt_xent(a, b, temperature=0.5, backend="triton")
    _check(fn, lambda a, b: R.nt_xent(a, b, 0.5), inputs, [True, True], dtype, atol, rtol)


@pytest.mark.parametrize("queue", [True, False])
@pytest.mark.parametrize("tau", [0.01, 0.025, 0.2])
def test_temperatures(tau, queue):
    """τ = 0.01 takes the running-max path, 0.025 the fixed-max bound at its limit, 0.2 the
    ordinary fixed-max path (logits of random unit vectors spread by ~0.2/τ)."""
    torch.manual_seed(int(tau * 1000))
    inputs = [torch.randn(40, 24), torch.randn(40, 24)] + ([_queue(90, 24)] if queue else [])
    fn, ref = _info(tau)
    _check(fn, ref, inputs, [True, True, False][: len(inputs)], torch.float32, 1e-5, 1e-4)


@pytest.mark.parametrize("target,splits", [(1, 1), (3, 3), (64, 64)])
def test_split_counts(monkeypatch, target, splits):
    """5 queries against 2048 keys: the key axis split into 1, 3 or 64 ranges (partials merged)
    in the forward and in both gradient kernels (in-batch NT-Xent rides along for dK)."""
    monkeypatch.setattr(info_nce_kernel, "num_programs_target", lambda device: target)
    cfg = info_nce_kernel.config(24, torch.float32, 5, 2048)
    assert info_nce_kernel._splits(1, 2048, cfg.BLOCK_N, torch.device("cpu"))[0] == splits
    torch.manual_seed(splits)
    fn, ref = _info(0.1)
    inputs = [torch.randn(5, 24), torch.randn(5, 24), _queue(2048, 24)]
    _check(fn, ref, inputs, [True, True, False], torch.float32, 1e-5, 1e-4, upstream=-0.3)
    fn = lambda a, b: K.nt_xent(a, b, temperature=0.1, backend="triton")
    inputs = [torch.randn(70, 24), torch.randn(70, 24)]
    _check(fn, lambda a, b: R.nt_xent(a, b, 0.1), inputs, [True, True], torch.float32, 1e-5,
           1e-4, upstream=2.5)


def test_loss_used_twice_and_no_grad():
    """Two calls on the same leaves and a non-linear use of one result accumulate the right
    gradients; under no_grad the value is the same and no graph is kept."""
    torch.manual_seed(6)
    data = [torch.randn(21, 24), torch.randn(21, 24), _queue(50, 24)]
    q, k = leaf(data[0], torch.float32), leaf(data[1], torch.float32)
    q64, k64 = leaf(data[0], torch.float64), leaf(data[1], torch.float64)
    a = K.info_nce(q, k, data[2], 0.2, backend="triton")
    b = K.info_nce(q, k, backend="triton")
    (a * a + 3 * a + b).backward()
    ra = R.info_nce(q64, k64, data[2].double(), 0.2)
    rb = R.info_nce(q64, k64, None, 0.2)
    (ra * ra + 3 * ra + rb).backward()
    assert_close(q.grad, q64.grad, 1e-5, 1e-4, "dq")
    assert_close(k.grad, k64.grad, 1e-5, 1e-4, "dk")
    with torch.no_grad():
        c = K.info_nce(q, k, data[2], 0.2, backend="triton")
    assert not c.requires_grad and c.grad_fn is None
    assert torch.equal(c, a.detach())


def test_deterministic():
    """Repeated calls give bit-identical losses and gradients (no atomics; fixed merge order)."""
    torch.manual_seed(7)
    data = [torch.randn(37, 300), torch.randn(37, 300), _queue(100, 300)]
    results = []
    for _ in range(2):
        q, k = leaf(data[0], torch.float32), leaf(data[1], torch.float32)
        loss = K.info_nce(q, k, data[2], 0.2, backend="triton") + K.nt_xent(q, k, backend="triton")
        loss.backward()
        results.append((loss, q.grad, k.grad))
    for x, y in zip(*results, strict=True):
        assert torch.equal(x, y)


def test_queue_takes_no_gradient():
    q, k = torch.randn(8, 16, requires_grad=True), torch.randn(8, 16, requires_grad=True)
    queue = torch.randn(20, 16, requires_grad=True)
    K.info_nce(q, k, queue, backend="triton").backward()
    assert queue.grad is None and q.grad is not None and k.grad is not None


@pytest.mark.parametrize("d", [1, 300, 2048])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_widths_up_to_max_are_supported(d, dtype):
    """D up to 2048 in every kernel dtype goes to the kernel (`auto` does not fall back)."""
    assert info_nce_kernel.supports(torch.empty(4, d, dtype=dtype))
    assert not info_nce_kernel.supports(torch.empty(4, 2049, dtype=dtype))
    assert not info_nce_kernel.supports(torch.empty(4, d, dtype=torch.float64))


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

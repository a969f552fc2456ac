"""The compiled Triton kernels on a CUDA GPU against the float64 reference (``-m gpu``).

Tolerance: PyTorch's own error in the same dtype sets the bar. For each loss value and gradient,
err = ‖x − x64‖/‖x64‖ where x64 is the reference in float64 on the same (rounded) inputs; the
kernel's err may be at most 2 × max(err of ``backend="torch"`` in that dtype, one unit of
roundoff of the dtype) — the floor only matters where PyTorch happens to be exact. NaN never
passes. Skipped with a reason when no GPU is visible; fails when run under the interpreter.

    TRITON_INTERPRET=0 python -m pytest -m gpu tests
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fastssl.kernels as K

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("cuda")]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.detach().double(), ref.detach().double()
    if not torch.isfinite(out).all():
        return float("inf")
    return float((out - ref).norm() / ref.norm().clamp_min(1e-30))


def _run(fn, inputs, grads, dtype, backend):
    """fn(*inputs, backend) on dtype copies: (value, [gradients]) with an upstream gradient of
    1.7."""
    xs = [x.detach().to(dtype).clone().requires_grad_(g) for x, g in zip(inputs, grads,
                                                                         strict=True)]
    out = fn(*xs, backend=backend)
    if any(grads):
        (out * 1.7).backward()
    return out, [x.grad for x, g in zip(xs, grads, strict=True) if g]


def check(fn, inputs, grads, dtype) -> None:
    """The Triton kernel's value and gradients within 2x of PyTorch's error in ``dtype``."""
    rounded = [x.to(dtype) for x in inputs]
    want, want_grads = _run(fn, [x.double() for x in rounded], grads, torch.float64, "torch")
    got, got_grads = _run(fn, rounded, grads, dtype, "triton")
    base, base_grads = _run(fn, rounded, grads, dtype, "torch")
    floor = torch.finfo(dtype).eps
    pairs = [("value", got, base, want)] + [
        (f"grad {i}", g, b, w)
        for i, (g, b, w) in enumerate(zip(got_grads, base_grads, want_grads, strict=True))]
    report = []
    for name, g, b, w in pairs:
        err, torch_err = rel_err(g, w), rel_err(b, w)
        report.append((name, err, torch_err, err <= 2 * max(torch_err, floor)))
    assert all(ok for *_, ok in report), "; ".join(
        f"{n}: triton {e:.2e} vs torch {t:.2e}{'' if ok else ' FAIL'}" for n, e, t, ok in report)


def _randn(*shape):
    return torch.randn(*shape, device="cuda")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("b,n,d,tau", [(256, 65536, 128, 0.2), (37, 1000, 24, 0.01),
                                       (64, 4096, 2048, 0.2)])
def test_info_nce_queue(b, n, d, tau, dtype):
    queue = _randn(n, d) * torch.rand(n, 1, device="cuda") * 3  # unnormalised rows
    queue[:3] = 0
    fn = lambda q, k, backend: K.info_nce(q, k, queue.to(dtype), tau, backend=backend)
    check(fn, [_randn(b, d), _randn(b, d)], [True, True], dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_info_nce_normalized_queue(dtype):
    queue = F.normalize(_randn(65536, 128), dim=1).to(dtype)
    fn = lambda q, k, backend: K.info_nce(q, k, queue, 0.2, queue_normalized=True,
                                          backend=backend)
    check(fn, [_randn(256, 128), _randn(256, 128)], [True, True], dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("b,d,tau", [(4096, 256, 0.2), (1000, 64, 0.01), (300, 2048, 0.025)])
def test_info_nce_in_batch(b, d, tau, dtype):
    fn = lambda q, k, backend: K.info_nce(q, k, None, tau, backend=backend)
    check(fn, [_randn(b, d), _randn(b, d)], [True, True], dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n,d", [(4096, 128), (333, 96), (128, 2048)])
def test_nt_xent(n, d, dtype):
    fn = lambda a, b, backend: K.nt_xent(a, b, 0.5, backend=backend)
    check(fn, [_randn(n, d), _randn(n, d)], [True, True], dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("n,d", [(256, 8192), (2048, 1024), (100, 300), (1000, 700)])
def test_barlow_twins(n, d, dtype):
    z1 = _randn(n, d) * 2 + 1
    fn = lambda a, b, backend: K.barlow_twins_loss(a, b, 0.0051, backend=backend)
    check(fn, [z1, _randn(n, d) + 0.5 * z1], [True, True], dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("b,k", [(4096, 3000), (37, 101), (512, 300)])
def test_sinkhorn(b, k, dtype):
    scores = F.normalize(_randn(b, 128), dim=1) @ F.normalize(_randn(k, 128), dim=1).T
    fn = lambda s, backend: K.sinkhorn_knopp(s, 0.05, 3, backend=backend)
    check(fn, [scores], [False], dtype)


def test_compiled_step_against_float64():
    """torch.compile(fullgraph=True) around the fused losses, compared with float64."""
    q, k = _randn(512, 128), _randn(512, 128)

    def step(a, b, backend="triton"):
        return K.nt_xent(a, b, backend=backend) + K.barlow_twins_loss(a, b, backend=backend)

    compiled = torch.compile(step, fullgraph=True)
    check(lambda a, b, backend: (compiled if backend == "triton" else step)(a, b, backend),
          [q, k], [True, True], torch.float32)

"""The PyTorch references against independent, straightforward float64 formulas."""

from __future__ import annotations

import math

import pytest
import torch
from kernel_testing import assert_close

import fastssl.kernels as K
from fastssl.kernels import reference as R

torch.manual_seed(0)


def _unit(x):
    return x / x.norm(dim=1, keepdim=True)


def _info_nce_loops(query, key, queue, tau):
    q, k = _unit(query), _unit(key)
    losses = []
    for i in range(q.shape[0]):
        if queue is None:
            logits = torch.stack([q[i] @ k[j] for j in range(k.shape[0])]) / tau
            target = logits[i]
        else:
            negs = _unit(queue.detach())
            logits = torch.cat([(q[i] @ k[i]).reshape(1), negs @ q[i]]) / tau
            target = logits[0]
        losses.append(-(target - torch.log(torch.exp(logits).sum())))
    return torch.stack(losses).mean()


def _nt_xent_loops(z1, z2, tau):
    z = _unit(torch.cat([z1, z2]))
    n2 = z.shape[0]
    losses = []
    for i in range(n2):
        pos = (i + n2 // 2) % n2
        others = torch.stack([z[i] @ z[j] for j in range(n2) if j != i]) / tau
        losses.append(-(z[i] @ z[pos] / tau - torch.log(torch.exp(others).sum())))
    return torch.stack(losses).mean()


def _barlow_formula(z1, z2, lambd):
    n = z1.shape[0]
    x = (z1 - z1.mean(0)) / torch.sqrt(((z1 - z1.mean(0)) ** 2).mean(0) + 1e-5)
    y = (z2 - z2.mean(0)) / torch.sqrt(((z2 - z2.mean(0)) ** 2).mean(0) + 1e-5)
    c = torch.einsum("ni,nj->ij", x, y) / n
    eye = torch.eye(c.shape[0], dtype=torch.bool)
    return ((1 - c[eye]) ** 2).sum() + lambd * (c[~eye] ** 2).sum()


def _official_sinkhorn(out, eps, iters):
    """main_swav.py distributed_sinkhorn, single process, literally."""
    q = torch.exp(out / eps).t()
    b, k = q.shape[1], q.shape[0]
    q /= torch.sum(q)
    for _ in range(iters):
        q /= torch.sum(q, dim=1, keepdim=True)
        q /= k
        q /= torch.sum(q, dim=0, keepdim=True)
        q /= b
    q *= b
    return q.t()


def _grads(loss, inputs):
    return torch.autograd.grad(loss, inputs, allow_unused=True)


@pytest.mark.parametrize("with_queue", [False, True])
def test_info_nce_reference(with_queue):
    q = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    k = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    queue = torch.randn(11, 5, dtype=torch.float64, requires_grad=True) if with_queue else None
    got, want = R.info_nce(q, k, queue, 0.2), _info_nce_loops(q, k, queue, 0.2)
    assert_close(got, want, 1e-12, 1e-12, "loss")
    for g, w, name in zip(_grads(got, (q, k)), _grads(want, (q, k)), "qk", strict=True):
        assert_close(g, w, 1e-12, 1e-10, f"d{name}")
    if with_queue:
        assert _grads(R.info_nce(q, k, queue, 0.2), (queue,))[0] is None


def test_nt_xent_reference():
    z1 = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    got, want = R.nt_xent(z1, z2, 0.5), _nt_xent_loops(z1, z2, 0.5)
    assert_close(got, want, 1e-12, 1e-12, "loss")
    for g, w in zip(_grads(got, (z1, z2)), _grads(want, (z1, z2)), strict=True):
        assert_close(g, w, 1e-12, 1e-10, "grad")


def test_barlow_twins_reference():
    z1 = torch.randn(9, 6, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(9, 6, dtype=torch.float64, requires_grad=True)
    got, want = R.barlow_twins_loss(z1, z2, 0.1), _barlow_formula(z1, z2, 0.1)
    assert_close(got, want, 1e-12, 1e-12, "loss")
    for g, w in zip(_grads(got, (z1, z2)), _grads(want, (z1, z2)), strict=True):
        assert_close(g, w, 1e-10, 1e-10, "grad")


@pytest.mark.parametrize("iters", [0, 1, 3])
def test_sinkhorn_reference(iters):
    scores = torch.randn(13, 7, dtype=torch.float64)
    got = R.sinkhorn_knopp(scores, 0.05, iters)
    assert_close(got, _official_sinkhorn(scores.clone(), 0.05, iters), 1e-13, 1e-12, "Q")
    if iters:
        assert_close(got.sum(1), torch.ones(13, dtype=torch.float64), 1e-12, 0, "row sums")


def test_negative_cosine_reference():
    p = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    z = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    got = R.negative_cosine(p, z)
    want = -torch.stack([p[i] @ z[i] / (p[i].norm() * z[i].norm()) for i in range(5)]).mean()
    assert_close(got, want, 1e-14, 1e-14, "loss")
    gp, gz = _grads(got, (p, z))
    assert gz is None
    assert_close(gp, _grads(want, (p,))[0], 1e-12, 1e-12, "dp")


def test_info_nce_chance_level():
    """Orthogonal unrelated embeddings: the loss is log(number of candidates)."""
    q = torch.eye(8, dtype=torch.float64)
    assert math.isclose(float(R.info_nce(q, q.roll(1, 0), None, 1e9)), math.log(8), rel_tol=1e-6)


def test_backend_argument_and_env(monkeypatch):
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="backend must be one of"):
        K.nt_xent(x, x, backend="cuda")
    monkeypatch.setenv("FASTSSL_KERNELS", "bogus")
    with pytest.raises(ValueError, match="FASTSSL_KERNELS"):
        K.nt_xent(x, x)
    monkeypatch.setenv("FASTSSL_KERNELS", "torch")
    assert K.dispatch.resolve_backend("auto", x) == "torch"
    monkeypatch.setenv("FASTSSL_KERNELS", "auto")
    assert K.dispatch.resolve_backend("auto", x) == "torch"  # CPU tensors: reference
    assert K.dispatch.resolve_backend("auto", x.double()) == "torch"
    with pytest.raises(RuntimeError, match="float32/float16/bfloat16"):
        K.dispatch.resolve_backend("triton", x.double())
    monkeypatch.setattr(K.dispatch, "INTERPRET", False)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        K.nt_xent(x, x, backend="triton")
    monkeypatch.setattr(K.dispatch, "HAS_TRITON", False)
    with pytest.raises(RuntimeError, match="needs the triton package"):
        K.dispatch.resolve_backend("triton", x)


def test_import_without_triton():
    """`import fastssl.kernels` works with triton absent, giving the torch backend only."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import importlib.util as u; u.find_spec = lambda name, *a: None\n"
        "import torch, fastssl.kernels as K\n"
        "x = torch.randn(4, 3)\n"
        "print(float(K.nt_xent(x, x, backend='auto')))\n"
        "try:\n    K.nt_xent(x, x, backend='triton')\nexcept RuntimeError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "needs the triton package" in out.stdout

"""One torch.compile(fullgraph=True) case covering every public loss (compiling is slow on CPU)."""

from __future__ import annotations

import torch
from kernel_testing import assert_close, needs_interpreter

import fastssl.kernels as K


@needs_interpreter
def test_all_losses_compile_without_graph_breaks():
    torch.manual_seed(0)
    q, k = torch.randn(40, 32, requires_grad=True), torch.randn(40, 32, requires_grad=True)
    queue, scores = torch.randn(70, 32), torch.randn(40, 50)

    def step(q, k, queue, scores):
        assign = K.sinkhorn_knopp(scores, backend="triton")
        return (
            K.info_nce(q, k, queue, backend="triton")
            + K.info_nce(q, k, backend="triton")
            + K.nt_xent(q, k, backend="triton")
            + K.barlow_twins_loss(q, k, backend="triton")
            + K.negative_cosine(q, k, backend="triton")
            + (assign * (q @ k.T)[:, :1]).mean()  # the assignments are a constant target
        )

    compiled = torch.compile(step, fullgraph=True)  # raises on any graph break
    out = compiled(q, k, queue, scores)
    grads = torch.autograd.grad(out, (q, k))
    want = step(q, k, queue, scores)
    want_grads = torch.autograd.grad(want, (q, k))
    assert_close(out, want, 1e-5, 1e-5, "loss")
    for g, w in zip(grads, want_grads, strict=True):
        assert_close(g, w, 1e-5, 1e-5, "grad")

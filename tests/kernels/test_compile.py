"""One torch.compile(fullgraph=True) case covering every public loss (compiling is slow on CPU),
compared with the float64 reference (values and gradients), not with the eager fused losses."""

from __future__ import annotations

import torch
from kernel_testing import assert_close, needs_interpreter

import fastssl.kernels as K


@needs_interpreter
def test_all_losses_compile_without_graph_breaks():
    torch.manual_seed(0)
    q, k = torch.randn(40, 32, requires_grad=True), torch.randn(40, 32, requires_grad=True)
    queue, scores = torch.randn(70, 32), torch.randn(40, 50)

    def step(q, k, queue, scores, backend="triton"):
        assign = K.sinkhorn_knopp(scores, backend=backend)
        return (
            K.info_nce(q, k, queue, backend=backend)
            + K.info_nce(q, k, backend=backend)
            + K.nt_xent(q, k, backend=backend)
            + K.barlow_twins_loss(q, k, backend=backend)
            + K.negative_cosine(q, k, backend=backend)
            + (assign * (q @ k.T)[:, :1]).mean()  # the assignments are a constant target
        )

    compiled = torch.compile(step, fullgraph=True)  # raises on any graph break
    out = compiled(q, k, queue, scores)
    grads = torch.autograd.grad(out * 1.5, (q, k))
    q64, k64 = (x.detach().double().requires_grad_() for x in (q, k))
    want = step(q64, k64, queue.double(), scores.double(), backend="torch")
    want_grads = torch.autograd.grad(want * 1.5, (q64, k64))
    assert_close(out, want, 1e-5, 1e-4, "loss")
    for g, w in zip(grads, want_grads, strict=True):
        assert_close(g, w, 1e-5, 1e-4, "grad")

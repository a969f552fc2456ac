"""Kernel launches per forward + backward, counted on CPU: Triton launches (the interpreter) plus
the aten ops that would launch a GPU kernel, seen by a TorchDispatchMode (inside the fastssl
custom ops too). The issue's budget: 4 for InfoNCE (queue and in-batch), NT-Xent and Sinkhorn
(3 iterations)."""

from __future__ import annotations

import pytest
import torch
from kernel_testing import needs_interpreter
from torch._library.custom_ops import _maybe_get_opdef
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from triton.runtime.interpreter import InterpretedFunction

import fastssl.kernels as K

pytestmark = needs_interpreter
# aten ops that allocate or re-view memory without launching a kernel
NO_LAUNCH = {"empty", "empty_strided", "new_empty", "new_empty_strided", "view", "_unsafe_view",
             "detach", "alias", "t", "transpose", "as_strided", "slice", "narrow", "split",
             "split_with_sizes", "expand", "unsqueeze", "squeeze", "select", "permute",
             "lift_fresh", "_to_copy_noop"}


class _Count(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.aten: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        if func.namespace == "fastssl":  # run the op's Python body here: its aten ops count
            with self:
                return _maybe_get_opdef(func)._init_fn(*args, **(kwargs or {}))
        if name not in NO_LAUNCH:
            self.aten.append(name)
        return func(*args, **(kwargs or {}))


def _launches(monkeypatch, step) -> tuple[int, list[str]]:
    """(launches, aten ops) of step(): Triton launches + aten ops that launch a kernel."""
    monkeypatch.delenv("FASTSSL_KERNELS_POISON", raising=False)  # NaN fills are test-only
    triton_launches = []
    real = InterpretedFunction.run

    def counting(self, *args, **kwargs):  # the interpreter's own host copies are not launches
        triton_launches.append(self.fn.__name__)
        with _disable_current_modes():
            return real(self, *args, **kwargs)

    monkeypatch.setattr(InterpretedFunction, "run", counting)
    step()  # first call: one-time allocations (the ticket counter) stay out of the count
    triton_launches.clear()
    with _Count() as mode:
        step()
    return len(triton_launches) + len(mode.aten), mode.aten + triton_launches


def _fwd_bwd(fn, *inputs):
    leaves = [x.clone().requires_grad_() for x in inputs]
    seed = torch.tensor(1.3)

    def step():
        for x in leaves:
            x.grad = None
        fn(*leaves).backward(seed)

    return step


q, k, queue = torch.randn(64, 32), torch.randn(64, 32), torch.randn(300, 32)
unit_queue = torch.nn.functional.normalize(queue, dim=1)
CASES = {
    "moco_v2 queue": _fwd_bwd(lambda a, b: K.info_nce(a, b, queue, backend="triton"), q, k),
    "moco_v2 normalised queue": _fwd_bwd(lambda a, b: K.info_nce(
        a, b, unit_queue, queue_normalized=True, backend="triton"), q, k),
    "moco_v3 in-batch": _fwd_bwd(lambda a, b: K.info_nce(a, b, backend="triton"), q, k),
    "nt_xent": _fwd_bwd(lambda a, b: K.nt_xent(a, b, backend="triton"), q, k),
}


@pytest.mark.parametrize("case", CASES)
def test_contrastive_launch_budget(monkeypatch, case):
    count, ops = _launches(monkeypatch, CASES[case])
    assert count <= 4, f"{case}: {count} launches per forward+backward: {ops}"


def test_no_grad_forward_is_two_launches(monkeypatch):
    def step():
        with torch.no_grad():
            K.info_nce(q, k, queue, backend="triton")

    count, ops = _launches(monkeypatch, step)
    assert count == 2, ops


@pytest.mark.parametrize("iters", [1, 3])
def test_sinkhorn_launches(monkeypatch, iters):
    """iters + 1 launches: 4 for SwAV's 3 iterations."""
    scores = torch.randn(256, 100)
    count, ops = _launches(monkeypatch, lambda: K.sinkhorn_knopp(scores, iters=iters,
                                                                backend="triton"))
    assert count == iters + 1, ops

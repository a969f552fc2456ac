"""Shared helpers of the kernel tests."""

from __future__ import annotations

import pytest
import torch

# (dtype, atol, rtol) of a kernel against the float64 reference. bf16 is not listed: tl.dot in
# bf16 is wrong in Triton's interpreter (triton#11584); the GPU suite checks bf16.
CASES = [
    pytest.param(torch.float32, 1e-5, 1e-4, id="fp32"),
    pytest.param(torch.float16, 3e-3, 3e-3, id="fp16"),
]

# Skips without triton; fails loudly when TRITON_INTERPRET=0 leaves no way to run the kernels
# (the `interpreter` fixture in conftest.py).
needs_interpreter = pytest.mark.usefixtures("interpreter")


def leaf(x: torch.Tensor, dtype: torch.dtype, grad: bool = True) -> torch.Tensor:
    return x.detach().to(dtype).requires_grad_(grad)


def assert_close(actual, expected, atol: float, rtol: float, what: str = "") -> None:
    """|actual - expected| <= atol·max|expected| + rtol·|expected| element-wise, in float64.

    atol is taken relative to the tensor's largest magnitude: gradients of a mean loss are tiny,
    so a fixed absolute tolerance could not fail."""
    assert actual is not None, f"{what}: no gradient"
    actual, expected = actual.detach().double(), expected.detach().double()
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert torch.isfinite(actual).all(), f"{what}: non-finite values (unwritten output?)"
    bound = atol * expected.abs().max() + rtol * expected.abs()
    excess = ((actual - expected).abs() - bound).max()
    assert excess <= 0, f"{what}: max error {(actual - expected).abs().max():.3g} over bound"

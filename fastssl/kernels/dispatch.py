"""Backend choice for the loss functions: ``torch`` (reference) or ``triton`` (fused kernels).

``backend="auto"`` (the default) picks Triton for CUDA tensors when triton is installed and the
kernel supports the input, and the PyTorch reference otherwise. The environment variable
``FASTSSL_KERNELS=torch|triton|auto`` replaces ``auto`` (an explicit ``backend=`` argument wins).
Triton on CPU tensors runs only in Triton's interpreter, i.e. when ``TRITON_INTERPRET=1`` was set
before ``fastssl.kernels`` (and so its ``@triton.jit`` kernels) was imported.
"""

from __future__ import annotations

import importlib.util
import os

import torch

BACKENDS = ("auto", "torch", "triton")
HAS_TRITON = importlib.util.find_spec("triton") is not None
# Decided once: @triton.jit picks interpreter or compiler when our kernel modules are imported.
INTERPRET = HAS_TRITON and os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def resolve_backend(backend: str, x: torch.Tensor, supported: bool = True) -> str:
    """Return ``"torch"`` or ``"triton"`` for a call on tensor ``x``.

    ``supported`` is the kernel's own verdict on the shapes (e.g. embedding width); ``auto`` falls
    back to the reference when it is False, an explicit ``triton`` raises.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        backend = os.environ.get("FASTSSL_KERNELS", "auto").strip().lower() or "auto"
        if backend not in BACKENDS:
            raise ValueError(f"FASTSSL_KERNELS must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        ok = HAS_TRITON and x.is_cuda and x.dtype in KERNEL_DTYPES and supported
        return "triton" if ok else "torch"
    if backend == "triton":
        if not HAS_TRITON:
            raise RuntimeError("backend='triton' needs the triton package, which is not installed")
        if not x.is_cuda and not INTERPRET:
            raise RuntimeError(
                "backend='triton' on CPU tensors needs TRITON_INTERPRET=1 set before importing "
                "fastssl.kernels (or use CUDA tensors / backend='torch')"
            )
        if x.dtype not in KERNEL_DTYPES:
            raise RuntimeError(f"Triton kernels take float32/float16/bfloat16, got {x.dtype}")
        if not supported:
            raise RuntimeError("this input shape is not supported by the Triton kernel")
    return backend


def on_gpu_or_interpreter(x: torch.Tensor) -> bool:
    return x.is_cuda or INTERPRET


def new_output(*shape: int, device: torch.device, dtype: torch.dtype = torch.float32):
    """Allocate a kernel output buffer. Tests set FASTSSL_KERNELS_POISON=1 so buffers start as
    NaN: an element a kernel forgets to write then fails the comparison instead of passing on
    leftover memory."""
    if os.environ.get("FASTSSL_KERNELS_POISON") == "1":
        return torch.full(shape, float("nan"), device=device, dtype=dtype)
    return torch.empty(shape, device=device, dtype=dtype)


def num_programs_target(device: torch.device) -> int:
    """How many programs fill the device: two per SM on a GPU, a handful in the interpreter."""
    if device.type == "cuda":
        return 2 * torch.cuda.get_device_properties(device).multi_processor_count
    return 4

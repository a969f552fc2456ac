"""Process-group and device helpers. Imports only torch, so the loss kernels may use it too."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def resolve_device(name: str) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` (this process's GPU under torchrun: LOCAL_RANK)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device=cuda asked for but no CUDA GPU is available")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def init_from_env(device_type: str) -> bool:
    """Initialise the default group when launched by torchrun (WORLD_SIZE > 1).

    NCCL on CUDA, gloo elsewhere. Returns True when running distributed.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_distributed():
        return is_distributed()
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return True


def shutdown() -> None:
    """Barrier, then destroy the default group. The barrier first: gloo's worker thread releases
    the last collective's tensors after it completes, which needs the GIL; destroying the group
    while that is pending (the main thread holds the GIL while joining the thread) deadlocks.
    Collectives run in order, so once the barrier is done, earlier ones are released."""
    if is_distributed():
        dist.barrier()
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """In-place sum over processes (no-op when not distributed); returns ``t``."""
    if is_distributed():
        dist.all_reduce(t)
    return t


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums the incoming gradient over processes and keeps our slice.

    Every process computes its loss from the gathered tensor, so the gradient of the summed losses
    w.r.t. our rows is the all-reduced gradient restricted to our rows (DDP then averages).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        n = grad.shape[0] // dist.get_world_size()
        return grad[dist.get_rank() * n : (dist.get_rank() + 1) * n]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (same shape on every process) over processes, keeping the gradient."""
    if not is_distributed() or world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


@torch.no_grad()
def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` over processes without gradient (queues, momentum keys)."""
    if not is_distributed() or world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)

"""Batch normalisation over the global batch of all processes.

``torch.nn.SyncBatchNorm`` runs only on CUDA; :func:`convert_sync_batchnorm` uses it there and,
elsewhere (gloo on CPU), :class:`GlobalBatchNorm`: every process gathers each process's
``(count, mean, biased variance)`` with :func:`fastssl.distributed.gather_with_grad` (whose
backward all-reduces the gradient), combines them exactly (parallel-variance formula) and
normalises with the global statistics. Running statistics are updated with the global mean and
the unbiased global variance, as SyncBatchNorm does.
"""

from __future__ import annotations

from typing import TypeVar, cast

import torch
from torch import nn

from fastssl.distributed import gather_with_grad, is_distributed, world_size

M = TypeVar("M", bound=nn.Module)


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm for any input rank (N, C, *) with statistics over every process's batch."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (N, C, ...), got {x.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not (self.training and is_distributed() and world_size() > 1):
            return super().forward(x)
        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        count = x.numel() // c
        var, mean = torch.var_mean(x, dim=dims, correction=0)
        local = torch.cat([mean, var, mean.new_full((1,), float(count))])
        stats = gather_with_grad(local[None])  # (world, 2C + 1)
        counts = stats[:, -1:]
        total = counts.sum()
        g_mean = (counts * stats[:, :c]).sum(0) / total
        g_var = (counts * (stats[:, c:2 * c] + (stats[:, :c] - g_mean).pow(2))).sum(0) / total
        if self.track_running_stats:
            assert self.num_batches_tracked is not None and self.running_mean is not None \
                and self.running_var is not None  # track_running_stats allocates them
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                f = (1.0 / self.num_batches_tracked.item() if self.momentum is None
                     else self.momentum)
                self.running_mean.lerp_(g_mean.detach().to(self.running_mean.dtype), f)
                unbiased = g_var.detach() * total / (total - 1).clamp(min=1)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), f)
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (x - g_mean.view(shape)) * torch.rsqrt(g_var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def _convert_cpu(module: nn.Module) -> nn.Module:
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
            module, GlobalBatchNorm):
        out = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
        if module.affine:
            with torch.no_grad():
                out.weight = module.weight
                out.bias = module.bias
        if module.track_running_stats:
            out.running_mean = module.running_mean
            out.running_var = module.running_var
            out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _convert_cpu(child))
    return out


def convert_sync_batchnorm(module: M, device: torch.device | str | None = None) -> M:
    """Replace every BatchNorm layer with one using global-batch statistics.

    CUDA (``device`` or, when not given, the device of the module's first parameter):
    ``torch.nn.SyncBatchNorm``; otherwise :class:`GlobalBatchNorm`. Parameters and running
    buffers are shared with the originals (no copy). Without a process group both behave as
    plain BatchNorm.
    """
    if device is None:
        p = next(module.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    if torch.device(device).type == "cuda":
        return cast(M, nn.SyncBatchNorm.convert_sync_batchnorm(module))
    return cast(M, _convert_cpu(module))


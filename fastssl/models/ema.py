"""Exponential moving average of a network (BYOL / MoCo target encoders)."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def momentum_copy(online: nn.Module) -> nn.Module:
    """A frozen deep copy of ``online`` to be updated by :func:`ema_update_`."""
    target = copy.deepcopy(online)
    target.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update_(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """target = momentum * target + (1 - momentum) * online, in place, without allocating."""
    t_params: list[torch.Tensor] = list(target.parameters())
    o_params: list[torch.Tensor] = list(online.parameters())
    torch._foreach_lerp_(t_params, o_params, 1.0 - momentum)
    for tb, ob in zip(target.buffers(), online.buffers(), strict=True):
        tb.copy_(ob)


def cosine_momentum(base: float, step: int, total_steps: int) -> float:
    """BYOL / MoCo v3 schedule: 1 - (1 - base) * (cos(pi * k / K) + 1) / 2."""
    return 1.0 - (1.0 - base) * (math.cos(math.pi * step / max(1, total_steps)) + 1.0) / 2.0

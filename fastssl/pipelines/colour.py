"""The colour jitter of every loader: DALI's colour twist, written once for torch tensors.

DALI's ``fn.color_twist`` (the GPU path) is one affine map per sample, clamped once at the end:
hue (a rotation of the YIQ chroma plane) and saturation (a blend with luma) about the grey axis,
contrast about mid-grey (0.5, not the image's mean grey) and then brightness (a factor). The
memory and torchvision loaders call :func:`twist`, so all three make the same colours
(``tests/pipelines/test_colour.py`` checks it against DALI pixel by pixel).

torchvision's ``ColorJitter`` is a different recipe: four clamped steps in a random order,
contrast about the mean grey, hue as an HSV shift. The torchvision loader used it until the
loaders were measured to learn differently (``benchmarks/results/background-cpu.md``, loader
rows).
"""

from __future__ import annotations

import math

import torch

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601 luma, DALI's and torchvision's greyscale weights
_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                    dtype=torch.float64)
_YIQ_INV = torch.linalg.inv(_YIQ)


def grey(x: torch.Tensor) -> torch.Tensor:
    """Luma of (B, 3, H, W) -> (B, 1, H, W)."""
    return LUMA[0] * x[:, 0:1] + LUMA[1] * x[:, 1:2] + LUMA[2] * x[:, 2:3]


def twist_matrix(brightness: torch.Tensor, contrast: torch.Tensor, saturation: torch.Tensor,
                 hue: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample factors (B,) (``hue`` in turns) -> the affine map ``x -> m @ x + offset`` on
    RGB in [0, 1]: matrices (B, 3, 3) and offsets (B, 3), float64."""
    n = len(hue)
    turns = 2 * math.pi * hue.double()
    rot = torch.zeros(n, 3, 3, dtype=torch.float64)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2] = torch.cos(turns), torch.sin(turns)  # DALI's direction
    rot[:, 2, 1], rot[:, 2, 2] = -torch.sin(turns), torch.cos(turns)
    s = saturation.double().view(n, 1, 1)
    sat = s * torch.eye(3, dtype=torch.float64) + (1 - s) * torch.tensor(LUMA, dtype=torch.float64)
    linear = sat @ _YIQ_INV @ rot @ _YIQ
    b, c = brightness.double().view(n, 1), contrast.double().view(n, 1)
    return (b * c).view(n, 1, 1) * linear, (b * 0.5 * (1 - c)).expand(n, 3)


def twist(x: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor,
          saturation: torch.Tensor, hue: torch.Tensor) -> torch.Tensor:
    """DALI's ``color_twist`` of float RGB (B, 3, H, W) in [0, 1] with per-sample factors (B,);
    ``hue`` in turns (DALI takes degrees: 360 x this)."""
    m, offset = twist_matrix(brightness, contrast, saturation, hue)
    out = torch.einsum("bij,bjhw->bihw", m.to(x), x) + offset.to(x)[:, :, None, None]
    return out.clamp(0, 1)


def factors(n: int, jitter: tuple[float, float, float, float], rand) -> list[torch.Tensor]:
    """Brightness, contrast, saturation (from ``[max(0, 1 - x), 1 + x]``) and hue (from
    ``[-h, h]`` turns) for ``n`` samples, as torchvision and DALI draw them; ``rand(n)`` gives
    uniform [0, 1) draws."""
    b, c, s, h = jitter
    lows, highs = [max(0.0, 1 - b), max(0.0, 1 - c), max(0.0, 1 - s), -h], [1 + b, 1 + c, 1 + s, h]
    return [lo + (hi - lo) * rand(n) for lo, hi in zip(lows, highs, strict=True)]

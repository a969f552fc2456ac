"""The colour jitter of every loader, written once for torch tensors (the memory and
torchvision loaders) and once in DALI (``dali_augment.colour_jitter``), in two named recipes
(``--colour_jitter``); ``tests/pipelines/test_colour.py`` checks DALI against these functions
pixel by pixel.

- ``sequential`` (the default): brightness (a factor), contrast about the image's mean grey,
  saturation (a blend with luma), hue (a rotation of the YIQ chroma plane), in that order, each
  step clamped to [0, 1]. The memory loader's recipe, with which the published CPU tables were
  made.
- ``twist``: DALI's ``fn.color_twist``, one affine map per sample, clamped once: hue and
  saturation about the grey axis, contrast about mid-grey (0.5), then brightness.

Neither is torchvision's ``ColorJitter`` (four clamped steps in a random order, contrast about
the mean grey, hue as an HSV shift), which the torchvision loader used until issue 14. Factors
are drawn as torchvision draws them. What each recipe learns: ``benchmarks/results/
background-cpu.md`` (loader rows).
"""

from __future__ import annotations

import functools
import math

import torch

from fastssl.config import COLOUR_RECIPES

RECIPES = COLOUR_RECIPES
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601 luma, DALI's and torchvision's greyscale weights
_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                    dtype=torch.float64)
_YIQ_INV = torch.linalg.inv(_YIQ)


def grey(x: torch.Tensor) -> torch.Tensor:
    """Luma of (B, 3, H, W) -> (B, 1, H, W)."""
    return LUMA[0] * x[:, 0:1] + LUMA[1] * x[:, 1:2] + LUMA[2] * x[:, 2:3]


@functools.cache  # constants: built once, not per image or batch
def hue_basis() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Constant 3x3 matrices (A, C, S) with hue rotation by ``turns`` = A + cos(2 pi turns) C +
    sin(2 pi turns) S (RGB -> YIQ, rotate the I/Q plane, back): the DALI recipe builds the
    rotation from them."""
    a = _YIQ_INV @ torch.diag(torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)) @ _YIQ
    c = _YIQ_INV @ torch.diag(torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64)) @ _YIQ
    s = _YIQ_INV @ torch.tensor([[0.0, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=torch.float64) @ _YIQ
    return a, c, s


def hue_matrix(turns: torch.Tensor) -> torch.Tensor:
    """(B,) turns -> (B, 3, 3) RGB hue rotations (float64)."""
    a, c, s = hue_basis()
    t = 2 * math.pi * turns.double().view(-1, 1, 1)
    return a + torch.cos(t) * c + torch.sin(t) * s


def sequential(x: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor,
               saturation: torch.Tensor, hue: torch.Tensor) -> torch.Tensor:
    """The ``sequential`` recipe on float RGB (B, 3, H, W) in [0, 1]; factors (B,), hue in turns."""
    def per(t: torch.Tensor) -> torch.Tensor:
        return t.to(x).view(-1, 1, 1, 1)

    y = (x * per(brightness)).clamp(0, 1)
    mean = grey(y).mean((2, 3), keepdim=True)
    y = ((y - mean) * per(contrast) + mean).clamp(0, 1)
    g = grey(y)
    y = ((y - g) * per(saturation) + g).clamp(0, 1)
    return torch.einsum("bij,bjhw->bihw", hue_matrix(hue).to(x), y).clamp(0, 1)


def twist(x: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor,
          saturation: torch.Tensor, hue: torch.Tensor) -> torch.Tensor:
    """The ``twist`` recipe (DALI's ``color_twist``; its hue turns the other way, hence
    ``-hue``) on float RGB (B, 3, H, W) in [0, 1]; factors (B,), hue in turns."""
    n = len(hue)
    s = saturation.double().view(n, 1, 1)
    sat = s * torch.eye(3, dtype=torch.float64) + (1 - s) * torch.tensor(LUMA, dtype=torch.float64)
    b, c = brightness.double().view(n, 1, 1), contrast.double().view(n, 1, 1)
    m = (b * c) * (sat @ hue_matrix(-hue))
    offset = (b * 0.5 * (1 - c)).view(n, 1).expand(n, 3)
    out = torch.einsum("bij,bjhw->bihw", m.to(x), x) + offset.to(x)[:, :, None, None]
    return out.clamp(0, 1)


def jitter(x: torch.Tensor, recipe: str, factors_: list[torch.Tensor]) -> torch.Tensor:
    """``recipe`` (``RECIPES``) of ``x`` with ``factors_`` = [brightness, contrast, saturation,
    hue] (as :func:`factors` draws them)."""
    if recipe not in RECIPES:
        raise ValueError(f"colour recipe must be one of {', '.join(RECIPES)}, got {recipe!r}")
    return (sequential if recipe == "sequential" else twist)(x, *factors_)


def ranges(jitter: tuple[float, float, float, float]) -> list[tuple[float, float]]:
    """Brightness, contrast, saturation (``[max(0, 1 - x), 1 + x]``) and hue (``[-h, h]`` turns)
    ranges, as torchvision's ``ColorJitter`` draws its factors."""
    b, c, s, h = jitter
    return [(max(0.0, 1 - b), 1 + b), (max(0.0, 1 - c), 1 + c), (max(0.0, 1 - s), 1 + s), (-h, h)]


def factors(n: int, jitter: tuple[float, float, float, float], rand) -> list[torch.Tensor]:
    """Per-sample factors (``ranges``) for ``n`` samples; ``rand(n)`` gives uniform [0, 1)
    draws."""
    return [lo + (hi - lo) * rand(n) for lo, hi in ranges(jitter)]

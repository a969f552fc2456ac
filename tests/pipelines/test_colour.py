"""``colour.twist`` is DALI's ``color_twist``, pixel by pixel, and keeps its defining properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastssl.pipelines.colour import LUMA, factors, twist
from tests.pipelines.conftest import DALI_GPU, needs_dali

N = 16
SIMCLR = (0.8, 0.8, 0.8, 0.2)


def _images(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (N, 8, 8, 3), dtype=np.uint8)


def _dali_twist(images: np.ndarray, params: list[np.ndarray], device: str) -> np.ndarray:
    from nvidia.dali import fn, pipeline_def

    def column(values):
        return lambda: [np.float32(v) for v in values]  # no argument: DALI passes none

    @pipeline_def(batch_size=N, num_threads=1, device_id=0 if device == "gpu" else None)
    def pipe():
        x = fn.external_source(source=lambda: list(images), layout="HWC")
        b, c, s, h = (fn.external_source(source=column(p)) for p in params)
        x = x.gpu() if device == "gpu" else x
        return fn.color_twist(x, brightness=b, contrast=c, saturation=s, hue=h * 360)

    p = pipe()
    p.build()
    out = p.run()[0]
    out = out.as_cpu() if device == "gpu" else out
    return np.stack([np.array(t) for t in out]).astype(np.float64)


@pytest.mark.dali
@pytest.mark.parametrize("device", ["cpu", pytest.param("gpu", marks=DALI_GPU)])
@pytest.mark.parametrize("op", ["brightness", "contrast", "saturation", "hue", "all"])
@needs_dali
def test_twist_is_dalis_color_twist(op, device):
    rng = np.random.default_rng(1)
    drawn = [p.numpy() for p in factors(N, SIMCLR, lambda n: torch.from_numpy(rng.random(n)))]
    keep = {"brightness": [0], "contrast": [1], "saturation": [2], "hue": [3],
            "all": [0, 1, 2, 3]}[op]
    params = [d if i in keep else np.full(N, 0.0 if i == 3 else 1.0) for i, d in enumerate(drawn)]
    images = _images()
    want = _dali_twist(images, params, device)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    got = twist(x, *(torch.from_numpy(p) for p in params)).permute(0, 2, 3, 1).numpy() * 255
    err = np.abs(got - want)
    assert err.max() <= 2.0 and err.mean() < 0.5, (op, err.max(), err.mean())


def test_twist_definitions():
    x = torch.from_numpy(_images()).permute(0, 3, 1, 2).float() / 255
    one, zero = torch.ones(N), torch.zeros(N)
    torch.testing.assert_close(twist(x, one, one, one, zero), x, atol=1e-6, rtol=0)
    # contrast about mid-grey (DALI), not the image's mean grey (torchvision): 0 gives 0.5
    torch.testing.assert_close(twist(x, one, zero, one, zero), torch.full_like(x, 0.5))
    # saturation 0 is greyscale with ITU-R 601 luma
    luma = (x * torch.tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)
    torch.testing.assert_close(twist(x, one, one, zero, zero), luma.expand_as(x), atol=1e-6,
                               rtol=0)
    # contrast first, then brightness (DALI's order): 0.5 * (2 * (x - 0.5) + 0.5)
    half = torch.full((N,), 0.5)
    want = (0.5 * (2 * (x - 0.5) + 0.5)).clamp(0, 1)
    torch.testing.assert_close(twist(x, half, 2 * one, one, zero), want, atol=1e-6, rtol=0)

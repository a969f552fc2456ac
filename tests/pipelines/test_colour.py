"""The colour recipes are the same in DALI (``dali_augment.colour_jitter``) and in torch
(``colour.jitter``, the memory and torchvision loaders), pixel by pixel, and ``twist`` is DALI's
own ``color_twist``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastssl.pipelines.colour import LUMA, RECIPES, factors, jitter, twist
from tests.pipelines.conftest import DALI_GPU, needs_dali

N = 16
SIMCLR = (0.8, 0.8, 0.8, 0.2)


def _images(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (N, 8, 8, 3), dtype=np.uint8)


def _dali(images: np.ndarray, recipe: str, params: list[np.ndarray], device: str) -> np.ndarray:
    from nvidia.dali import fn, pipeline_def

    from fastssl.pipelines.dali_augment import colour_jitter

    def column(values):
        return lambda: [np.float32(v) for v in values]  # no argument: DALI passes none

    @pipeline_def(batch_size=N, num_threads=1, device_id=0 if device == "gpu" else None)
    def pipe():
        x = fn.external_source(source=lambda: list(images), layout="HWC")
        b, c, s, h = (fn.external_source(source=column(p)) for p in params)
        return colour_jitter(x.gpu() if device == "gpu" else x, recipe, b, c, s, h)

    p = pipe()
    p.build()
    out = p.run()[0]
    out = out.as_cpu() if device == "gpu" else out
    return np.stack([np.array(t) for t in out]).astype(np.float64)


@pytest.mark.dali
@pytest.mark.parametrize("device", ["cpu", pytest.param("gpu", marks=DALI_GPU)])
@pytest.mark.parametrize("op", ["brightness", "contrast", "saturation", "hue", "all"])
@pytest.mark.parametrize("recipe", RECIPES)
@needs_dali
def test_dali_and_torch_recipes_agree(recipe, op, device):
    rng = np.random.default_rng(1)
    drawn = [p.numpy() for p in factors(N, SIMCLR, lambda n: torch.from_numpy(rng.random(n)))]
    keep = {"brightness": [0], "contrast": [1], "saturation": [2], "hue": [3],
            "all": [0, 1, 2, 3]}[op]
    params = [d if i in keep else np.full(N, 0.0 if i == 3 else 1.0) for i, d in enumerate(drawn)]
    images = _images()
    want = _dali(images, recipe, params, device)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    got = jitter(x, recipe, [torch.from_numpy(p) for p in params]).permute(0, 2, 3, 1).numpy()
    err = np.abs(got * 255 - want)
    assert err.max() <= 2.0 and err.mean() < 0.5, (recipe, op, err.max(), err.mean())


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_definitions(recipe):
    x = torch.from_numpy(_images()).permute(0, 3, 1, 2).float() / 255
    one, zero = torch.ones(N), torch.zeros(N)
    torch.testing.assert_close(jitter(x, recipe, [one, one, one, zero]), x, atol=1e-6, rtol=0)
    # saturation 0 is greyscale with ITU-R 601 luma
    luma = (x * torch.tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)
    torch.testing.assert_close(jitter(x, recipe, [one, one, zero, zero]), luma.expand_as(x),
                               atol=1e-6, rtol=0)
    # contrast 0: sequential keeps the mean grey, twist goes to mid-grey
    flat = jitter(x, recipe, [one, zero, one, zero])
    want = luma.mean((2, 3), keepdim=True).expand_as(x) if recipe == "sequential" else 0.5
    torch.testing.assert_close(flat, torch.as_tensor(want).expand_as(x).float(), atol=1e-6,
                               rtol=0)
    # hue keeps luma where nothing clips
    mid = x / 4 + 0.375
    turned = jitter(mid, recipe, [one, one, one, torch.full((N,), 0.3)])
    torch.testing.assert_close((turned * torch.tensor(LUMA).view(1, 3, 1, 1)).sum(1),
                               (mid * torch.tensor(LUMA).view(1, 3, 1, 1)).sum(1), atol=1e-5,
                               rtol=0)
    with pytest.raises(ValueError, match="colour recipe"):
        jitter(x, "ColorJitter", [one, one, one, zero])


def test_twist_order_is_contrast_then_brightness():
    x = torch.from_numpy(_images()).permute(0, 3, 1, 2).float() / 255
    one, zero, half = torch.ones(N), torch.zeros(N), torch.full((N,), 0.5)
    want = (0.5 * (2 * (x - 0.5) + 0.5)).clamp(0, 1)
    torch.testing.assert_close(twist(x, half, 2 * one, one, zero), want, atol=1e-6, rtol=0)

"""The three loaders (DALI, torchvision, memory) agree statistically for the same ViewSpec: crop
area, flip rate, blur rate, the colour statistics of jittered views and the resampling of the
crops (within 4 standard errors, or a stated tolerance; the runs are seeded, so the test is
deterministic). Inputs are lossless PNGs built so the parameters can be read off the pixels.
DALI runs on the CPU and, where a GPU is present, on the GPU (nvJPEG "mixed" decoding, every op
on the GPU) against the same CPU torchvision and memory references."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch
from PIL import Image

from fastssl.data.layout import Split
from fastssl.pipelines.views import MEAN, STD, ViewSpec
from tests.helpers import make_loader
from tests.pipelines.conftest import DALI_GPU

pytestmark = [pytest.mark.dali, pytest.mark.skipif(
    importlib.util.find_spec("nvidia.dali") is None, reason="nvidia.dali is not installed")]
DEVICES = ["cpu", pytest.param("cuda", marks=DALI_GPU)]  # DALI's device

N = 128  # samples per epoch; 4 views each
SIZE = 32
LOADERS = ("dali", "torch", "memory")


def pixels(view: torch.Tensor) -> torch.Tensor:
    mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    return (view * std + mean) * 255


def crops(name: str, path, spec: ViewSpec, seed: int = 0, device: str = "cpu") -> torch.Tensor:
    """Pixels of 4 views of ``N`` samples; ``device`` is DALI's (torchvision runs on the CPU)."""
    split = Split("train", [path] * N, [0] * N)
    ld = make_loader(name, split, [spec] * 4, batch_size=32,
                     workers=0 if name == "torch" else 2, seed=seed,
                     device_type=device if name == "dali" else "cpu")
    return torch.cat([pixels(v.cpu()) for b in ld.epoch(0) for v in b["views"]])


def close(a: np.ndarray, b: np.ndarray, what: str, slack: float = 0.0) -> None:
    se = math.sqrt(a.var() / len(a) + b.var() / len(b)) + 1e-9
    assert abs(a.mean() - b.mean()) < 4 * se + slack, (what, a.mean(), b.mean(), se)


@pytest.mark.parametrize("device", DEVICES)
def test_crop_area_and_flip_rate_agree(tmp_path, device):
    # R encodes x, G encodes y (2 levels per pixel): a crop's extent and orientation are readable
    side = 128
    ramp = np.arange(side, dtype=np.uint8) * 2
    img = np.stack([np.tile(ramp, (side, 1)), np.tile(ramp[:, None], (1, side)),
                    np.full((side, side), 128, np.uint8)], -1)
    path = tmp_path / "ramp.png"
    Image.fromarray(img).save(path)
    spec = ViewSpec(SIZE, (0.08, 1.0), flip_p=0.5, jitter_p=0.0, gray_p=0.0)
    stats = {}
    for name in LOADERS:
        v = crops(name, path, spec, device=device)
        r, g = v[:, 0].mean(1), v[:, 1].mean(2)  # R profile along x, G profile along y
        slope = r[:, -1] - r[:, 0]
        # centre of first to centre of last output pixel spans (SIZE - 1) / SIZE of the crop
        width = slope.abs() / 2 / side * SIZE / (SIZE - 1)
        height = (g[:, -1] - g[:, 0]).abs() / 2 / side * SIZE / (SIZE - 1)
        stats[name] = dict(area=(width * height).numpy(), flip=(slope < 0).float().numpy())
    for key in ("area", "flip"):
        close(stats["dali"][key], stats["torch"][key], key)
        close(stats["memory"][key], stats["torch"][key], key)
    assert abs(stats["dali"]["flip"].mean() - 0.5) < 4 * math.sqrt(0.25 / (4 * N))
    # RandomResizedCrop's area is U(0.08, 1) clipped by the aspect / border rejections: ~0.5
    assert 0.35 < stats["dali"]["area"].mean() < 0.6


@pytest.mark.parametrize("device", DEVICES)
def test_blur_rate_agrees(tmp_path, device):
    rng = np.random.default_rng(0)
    path = tmp_path / "noise.png"
    Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(path)
    base = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, gray_p=0.0)
    sharp = crops("torch", path, ViewSpec(SIZE, **base, blur_p=0.0))[:1]
    energy = lambda v: (v[..., 1:] - v[..., :-1]).abs().mean((1, 2, 3))  # noqa: E731
    rates = {}
    for name in LOADERS:
        v = crops(name, path, ViewSpec(SIZE, **base, blur_p=0.5, blur_sigma=(0.1, 2.0)),
                  device=device)
        # detected blur: high-frequency energy down by 10% (sigma near 0.1 is a no-op in both)
        rates[name] = (energy(v) < 0.9 * energy(sharp)).float().numpy()
    close(rates["dali"], rates["torch"], "blur")
    close(rates["memory"], rates["torch"], "blur")
    assert 0.3 < rates["dali"].mean() < 0.55


def noise_png(tmp_path, side: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    path = tmp_path / f"noise{side}.png"
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path)
    return path


def high_frequency(v: torch.Tensor) -> np.ndarray:
    return (v[..., 1:] - v[..., :-1]).abs().mean((1, 2, 3)).numpy()


@pytest.mark.parametrize("device", DEVICES)
def test_resampling_agrees(tmp_path, device):
    """A 2x downscale of noise: the loaders keep the same high-frequency energy (within 1%) for
    both recipes, and antialiasing removes more of it than plain bilinear sampling (the memory
    loader's former ``roi_align`` resampling kept ~17% more than the others' antialiasing)."""
    path = noise_png(tmp_path, 2 * SIZE)
    base = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, gray_p=0.0)
    energy = {}
    for antialias in (True, False):
        spec = ViewSpec(SIZE, **base, antialias=antialias)
        e = {name: high_frequency(crops(name, path, spec, device=device)).mean()
             for name in LOADERS}
        for name in LOADERS:
            assert abs(e[name] / e["torch"] - 1) < 0.01, (antialias, e)
        energy[antialias] = e["torch"]
    assert energy[True] < 0.8 * energy[False]


COLOUR_OPS = ("brightness", "contrast", "saturation", "hue", "all", "gray")
# the torchvision loader rounds to uint8 after the colour twist, and its greyscale truncates
ROUNDING = 1 / 255


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["memory", "dali"])
@pytest.mark.parametrize("op", COLOUR_OPS)
def test_colour_statistics_agree(tmp_path, device, op, name):
    """Each colour operator alone and all four together (probability 1, SimCLR strength) on
    dark colourful blocks (mean grey far from mid-grey, where contrast's centre shows): the
    views' mean, contrast (std) and saturation (max - min channel) agree with the torchvision
    loader's. (torchvision's own ColorJitter fails the contrast and hue cases: contrast about
    the mean grey, four clamped steps in a random order.)"""
    rng = np.random.default_rng(1)
    blocks = rng.integers(0, 140, (8, 8, 3), dtype=np.uint8).repeat(SIZE // 8, 0).repeat(
        SIZE // 8, 1)
    path = tmp_path / "blocks.png"
    Image.fromarray(blocks).save(path)
    strength = {"brightness": (0.8, 0, 0, 0), "contrast": (0, 0.8, 0, 0),
                "saturation": (0, 0, 0.8, 0), "hue": (0, 0, 0, 0.2), "all": (0.8, 0.8, 0.8, 0.2),
                "gray": (0, 0, 0, 0)}[op]
    spec = ViewSpec(SIZE, (1.0, 1.0), (1.0, 1.0), flip_p=0.0, jitter=strength,
                    jitter_p=0.0 if op == "gray" else 1.0, gray_p=0.5 if op == "gray" else 0.0)
    stats = {}
    for loader in (name, "torch"):
        v = crops(loader, path, spec, device=device) / 255
        stats[loader] = {"mean": v.mean((1, 2, 3)).numpy(), "std": v.std((2, 3)).mean(1).numpy(),
                         "saturation": (v.max(1).values - v.min(1).values).mean((1, 2)).numpy()}
    for key in ("mean", "std", "saturation"):
        close(stats[name][key], stats["torch"][key], f"{op} {name} {key}", ROUNDING)

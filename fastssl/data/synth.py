"""Embedded data sets, written in the standard layout (no downloads).

- ``shapes``: ten procedurally drawn shape classes with exact foreground masks. Colour, size,
  position, rotation and a cluttered background vary per image, so raw pixels carry almost no
  class signal while the shape does.
- ``shapes --clutter high``: the same shapes (smaller) on backgrounds that identify their image:
  a two-colour grating of per-image orientation, period and colours with thick strokes. Crops,
  flips, colour jitter and greyscale keep the grating's orientation and period, so instance
  discrimination can succeed on the background alone: the shortcut background augmentation is
  meant to remove.
- ``digits``: scikit-learn's bundled 8x8 handwritten digits (real data), upscaled.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHAPES = ("circle", "square", "triangle", "star", "cross", "ring", "crescent", "arrow",
          "half_disc", "bar")
SUPERSAMPLE = 4  # masks are drawn at 4x and box-downsampled for smooth, exact edges
# Background colours stay within +-BG_CONTRAST of a random base colour and the shape differs from
# that base by at least MIN_LUMA_GAP in luminance: the background is cluttered and varied, but
# the shape is the salient object (as in object-centric photos). Denser or higher-contrast
# clutter made the classes hard to learn for a small CNN even with labels (17% validation
# accuracy after 200 supervised steps, against 71% with these settings).
BG_CONTRAST = 30
CLUTTER_LINES = 4
MIN_LUMA_GAP = 60
CLUTTER = ("low", "high")
# high clutter: grating period (px at 64 px), stroke count and width, shape radius (fraction of
# the side; smaller than low clutter's 0.25-0.42, so crops hold more background)
GRATING_PERIOD = (5.0, 14.0)
STROKES = (3, 6)
STROKE_WIDTH = (2, 4)
HIGH_RADIUS = (0.2, 0.34)


def fastssl_home() -> Path:
    return Path(os.environ.get("FASTSSL_HOME", "~/.cache/fastssl")).expanduser()


def _polygon(points: np.ndarray, angle: float, scale: float, cx: float, cy: float) -> list:
    c, s = math.cos(angle), math.sin(angle)
    rot = points @ np.array([[c, s], [-s, c]])
    return [(cx + scale * x, cy + scale * y) for x, y in rot]


def _regular(n: int, inner: float | None = None) -> np.ndarray:
    k = 2 * n if inner else n
    t = np.arange(k) * 2 * math.pi / k - math.pi / 2
    r = np.where(np.arange(k) % 2 == 1, inner, 1.0) if inner else np.ones(k)
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


_CROSS = np.array([[-.3, -1], [.3, -1], [.3, -.3], [1, -.3], [1, .3], [.3, .3], [.3, 1],
                   [-.3, 1], [-.3, .3], [-1, .3], [-1, -.3], [-.3, -.3]])
_ARROW = np.array([[-1, -.25], [.2, -.25], [.2, -.7], [1, 0], [.2, .7], [.2, .25], [-1, .25]])
_BAR = np.array([[-1, -.22], [1, -.22], [1, .22], [-1, .22]])
_HALF = np.array([[math.cos(t), -math.sin(t) + .5] for t in np.linspace(0, math.pi, 24)])


def _draw_shape(draw: ImageDraw.ImageDraw, name: str, cx: float, cy: float, r: float,
                angle: float) -> None:
    """Draw class ``name`` (fill 255) centred at (cx, cy) with radius r and rotation angle."""
    if name == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif name == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        draw.ellipse([cx - .55 * r, cy - .55 * r, cx + .55 * r, cy + .55 * r], fill=0)
    elif name == "crescent":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        ox, oy = cx + .5 * r * math.cos(angle), cy + .5 * r * math.sin(angle)
        draw.ellipse([ox - .85 * r, oy - .85 * r, ox + .85 * r, oy + .85 * r], fill=0)
    else:
        pts = {"square": _regular(4) * 1.0, "triangle": _regular(3), "star": _regular(5, .42),
               "cross": _CROSS, "arrow": _ARROW, "half_disc": _HALF, "bar": _BAR}[name]
        draw.polygon(_polygon(pts, angle, r, cx, cy), fill=255)


def _hsv_colour(rng: np.random.Generator, s: tuple[float, float], v: tuple[float, float]):
    import colorsys

    return np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(*s), rng.uniform(*v))) * 255


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random colour field around a random base colour, with clutter: a few thin lines
    of nearby colours. Returns the background (H, W, 3 float) and its base colour."""
    base = rng.uniform(40, 215, 3)
    field = np.clip(base + rng.uniform(-BG_CONTRAST, BG_CONTRAST, (3, 3, 3)), 0, 255)
    bg = Image.fromarray(field.astype(np.uint8)).resize((size, size), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(bg)
    for _ in range(CLUTTER_LINES):
        colour = np.clip(base + rng.uniform(-BG_CONTRAST, BG_CONTRAST, 3), 0, 255)
        draw.line(list(rng.uniform(0, size, 4)), fill=tuple(int(c) for c in colour), width=1)
    return np.asarray(bg.filter(ImageFilter.GaussianBlur(0.6)), dtype=np.float32), base


def _grating_background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """High clutter: a sharp two-colour grating (per-image orientation, period, phase and
    colours) under a few thick strokes of random colours. Returns the background and its mean
    colour."""
    c1 = rng.uniform(20, 235, 3)
    c2 = np.clip(c1 + rng.choice([-1, 1], 3) * rng.uniform(50, 110, 3), 0, 255)
    theta, period = rng.uniform(0, math.pi), rng.uniform(*GRATING_PERIOD) * size / 64
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    wave = np.sin(2 * math.pi * (xx * math.cos(theta) + yy * math.sin(theta)) / period
                  + rng.uniform(0, 2 * math.pi))
    t = (np.tanh(3 * wave) + 1)[..., None] / 2
    bg = Image.fromarray((c1 * t + c2 * (1 - t)).astype(np.uint8))
    draw = ImageDraw.Draw(bg)
    for _ in range(int(rng.integers(*STROKES, endpoint=True))):
        colour = tuple(int(c) for c in rng.uniform(0, 255, 3))
        draw.line(list(rng.uniform(0, size, 4)), fill=colour,
                  width=int(rng.integers(*STROKE_WIDTH, endpoint=True)))
    return np.asarray(bg, dtype=np.float32), (c1 + c2) / 2


def _luma(rgb: np.ndarray) -> float:
    return float(rgb @ np.array([0.299, 0.587, 0.114]))


def render_shape(rng: np.random.Generator, label: int, size: int, clutter: str = "low"
                 ) -> tuple[np.ndarray, np.ndarray]:
    """One image (H, W, 3 uint8) of class ``label`` and its exact mask (H, W uint8, 255 = shape)."""
    image, mask, _ = render_with_background(rng, label, size, clutter)
    return image, mask


def render_with_background(rng: np.random.Generator, label: int, size: int,
                           clutter: str = "low") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``render_shape`` plus the true background behind the shape (H, W, 3 uint8): the reference
    that foreground-free fills are measured against."""
    big = size * SUPERSAMPLE
    r = rng.uniform(*(HIGH_RADIUS if clutter == "high" else (0.25, 0.42))) * big
    cx, cy = rng.uniform(r * 0.85, big - r * 0.85, 2)
    mask_img = Image.new("L", (big, big), 0)
    _draw_shape(ImageDraw.Draw(mask_img), SHAPES[label], cx, cy, r, rng.uniform(0, 2 * math.pi))
    alpha = np.asarray(mask_img.resize((size, size), Image.Resampling.BOX),
                       dtype=np.float32) / 255.0
    mask = np.where(alpha >= 0.5, 255, 0).astype(np.uint8)
    background, base = (_grating_background if clutter == "high" else _background)(rng, size)
    fg = _hsv_colour(rng, (0.3, 1.0), (0.1, 1.0))
    while abs(_luma(fg) - _luma(base)) < MIN_LUMA_GAP:  # the shape must stand out in grey too
        fg = _hsv_colour(rng, (0.3, 1.0), (0.1, 1.0))
    image = np.where((mask == 255)[..., None], fg[None, None].astype(np.float32), background)
    return image.astype(np.uint8), mask, background.astype(np.uint8)


def _write(out: Path, split: str, cls: str, name: str, image: np.ndarray,
           mask: np.ndarray | None) -> None:
    folder = out / split / cls
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(folder / f"{name}.jpg", quality=95)
    if mask is not None:
        mfolder = out / "masks" / split / cls
        mfolder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(mfolder / f"{name}.png")


def synth_shapes(out: str | Path, *, train_per_class: int = 500, val_per_class: int = 100,
                 size: int = 64, seed: int = 0, clutter: str = "low") -> Path:
    """Write the shapes set to ``out`` (train/, val/, masks/); ``clutter``: low | high."""
    if clutter not in CLUTTER:
        raise ValueError(f"clutter must be one of {', '.join(CLUTTER)}, got {clutter!r}")
    out = Path(out)
    rng = np.random.default_rng(seed)
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for label, cls in enumerate(SHAPES):
            for i in range(n):
                image, mask = render_shape(rng, label, size, clutter)
                _write(out, split, cls, f"{cls}_{i:05d}", image, mask)
    return out


def synth_digits(out: str | Path, *, size: int = 32, val_fraction: float = 0.2,
                 seed: int = 0) -> Path:
    """Export scikit-learn's bundled handwritten digits (1797 images of 8x8) as RGB images."""
    from sklearn.datasets import load_digits

    out = Path(out)
    digits = load_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(digits.target))
    n_val = int(len(order) * val_fraction)
    for rank, idx in enumerate(order):
        split = "val" if rank < n_val else "train"
        grey = (digits.images[idx] / 16.0 * 255).astype(np.uint8)
        img = Image.fromarray(grey).resize((size, size), Image.Resampling.BICUBIC).convert("RGB")
        _write(out, split, str(digits.target[idx]), f"digit_{idx:04d}", np.asarray(img), None)
    return out


GENERATORS: dict[str, Callable[..., Path]] = {"shapes": synth_shapes, "digits": synth_digits}


def cached_dataset(name: str, generate: Callable[[Path], object]) -> Path:
    """``$FASTSSL_HOME/data/NAME``, generated once by ``generate(folder)`` (atomically: into a
    temporary folder, then renamed; a concurrent process that finished first wins)."""
    target = fastssl_home() / "data" / name
    if (target / ".complete").exists():
        return target
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    generate(tmp)
    (tmp / ".complete").touch()
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(target)
    except OSError:  # another process finished first
        if not (target / ".complete").exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def default_dataset() -> Path:
    """The embedded shapes set, generated once under ``$FASTSSL_HOME``."""
    return cached_dataset("shapes-v3", synth_shapes)


def synth_cluttered(out: str | Path, *, seed: int = 0) -> Path:
    """The high-clutter shapes set: 4000 train / 1000 val images of 64 px (the issue 14 size)."""
    return synth_shapes(out, train_per_class=400, val_per_class=100, seed=seed, clutter="high")


def cluttered_dataset() -> Path:
    """The high-clutter shapes set, generated once under ``$FASTSSL_HOME``."""
    return cached_dataset("shapes-clutter-v1", synth_cluttered)

"""Background augmentation (Ryali et al. 2021, "Characterizing and improving the robustness of
self-supervised learning through background augmentations"): BG_RM, BG_Random and BG_Swaps.

The compositing math lives here once and is written with arithmetic operators only, so the same
function runs on DALI DataNodes (inside the pipeline, on the GPU when the pipeline is) and on
torch tensors (the torchvision fallback). Mask resolution and validation (missing file, wrong
size) is also shared: both loaders get the per-image mask list from :func:`resolve_masks`.

Modes (``Config.bg_mode``):
- ``rm``: with probability ``bg_p`` the background becomes constant grey (``GREY``).
- ``random``: with probability ``bg_p`` the background becomes another image: one from
  ``bg_bank`` (a directory of images, used whole) or, without a bank, another image of the batch
  (used whole, its own foreground included: an approximation of the paper's foreground-free
  backgrounds that needs no inpainting).
- ``swaps``: the views are unchanged, and two views are appended to every sample: an extra
  positive (the anchor's foreground on another background, as in ``random``) and a hard negative
  (another image's foreground on the anchor's image). Methods read them as ``views[-2:]``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from fastssl.config import Config
from fastssl.data.layout import (
    IMAGE_EXTENSIONS,
    DataError,
    DatasetIndex,
    Split,
    image_size,
    mask_path,
)

log = logging.getLogger(__name__)

GREY = 128.0  # BG_RM's constant background (mid-grey; the paper's grey background)
MISSING_POLICIES = ("error", "skip")


def composite(fg, mask, bg):
    """``fg`` where ``mask`` is 255, ``bg`` where it is 0, linear in between (soft edges).

    Works on DALI DataNodes and torch tensors alike (operators only); ``mask`` broadcasts over
    channels (H, W, 1 or 1, H, W). Every product has a float factor, so uint8 inputs are
    promoted before any subtraction could wrap; the result is float and exact at 0 and 255
    (``fg * 1 + bg * 0 == fg``).
    """
    alpha = mask * (1.0 / 255.0)
    return fg * alpha + bg * (1.0 - alpha)


@dataclass
class BgOptions:
    mode: str = "none"
    p: float = 0.5
    bank: str = ""  # directory of background images for "random" / "swaps"; "" = other images
    missing_mask: str = "error"  # error | skip (no background change for that image, counted)
    mask_root: Path | None = None  # dataset root: masks live in ROOT/masks/<split>/<class>/*.png
    bank_files: list[Path] = field(default_factory=list)

    @property
    def swaps(self) -> bool:
        return self.mode == "swaps"

    @property
    def extra_views(self) -> int:
        return 2 if self.swaps else 0


def bg_options(cfg: Config, index: DatasetIndex) -> BgOptions | None:
    """The loader's background options from a run config; None when it is off."""
    if cfg.bg_mode == "none":
        return None
    return BgOptions(cfg.bg_mode, cfg.bg_p, cfg.bg_bank, cfg.bg_missing_mask,
                     mask_root=Path(index.root))


def bank_files(bank: str) -> list[Path]:
    folder = Path(bank).expanduser()
    if not folder.is_dir():
        raise DataError(f"background bank directory not found: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DataError(f"no images (*.jpg, *.jpeg, *.png) in background bank {folder}")
    return files


def resolve_masks(split: Split, opts: BgOptions) -> tuple[list[Path | None], int]:
    """The mask file of every image of ``split`` (``None``: no background change for that image)
    and how many were missing or unusable.

    With ``missing_mask="error"`` a missing mask or one whose size differs from its image raises
    :class:`DataError` naming the file; with ``"skip"`` the image keeps its background and is
    counted (logged once with the first few paths).
    """
    if opts.mask_root is None:
        raise ValueError("background augmentation needs the dataset root (mask_root)")
    out: list[Path | None] = []
    problems: list[str] = []
    for image in split.paths:
        m = mask_path(opts.mask_root, image)
        problem = None
        if not m.is_file():
            problem = f"missing foreground mask {m} (for {image})"
        else:
            try:
                (mw, mh), (iw, ih) = image_size(m), image_size(image)
                if (mw, mh) != (iw, ih):
                    problem = f"foreground mask {m} is {mw}x{mh} but its image {image} is {iw}x{ih}"
            except OSError as e:
                problem = f"unreadable foreground mask {m} ({e})"
        if problem and opts.missing_mask == "error":
            raise DataError(problem + "; compute masks with `fastssl data masks DIR` or set "
                            "bg_missing_mask=skip")
        if problem:
            problems.append(problem)
        out.append(None if problem else m)
    if problems:
        log.warning("background augmentation skipped for %d of %d images without a usable mask "
                    "(e.g. %s)", len(problems), len(out), "; ".join(problems[:3]))
    return out, len(problems)


# -- torchvision fallback ----------------------------------------------------------------------

def torch_background(image, mask, other, *, mode: str, apply: bool, bank=None):
    """The fallback's compositing of one sample (uint8 CHW tensors; ``mask`` 1xHxW or None).

    Returns ``(image, extra_views)``: ``image`` with its background changed when ``apply`` (the
    coin flip, drawn by the caller from the per-sample seed), and for ``swaps`` the extra
    positive and the hard negative. ``other`` is ``(image, mask)`` of another sample.
    """
    import torch
    from torchvision.transforms.v2 import functional as F

    def resized(x, like):
        return F.resize(x, list(like.shape[-2:]), antialias=True) if x.shape != like.shape else x

    def done(x):
        return x.round().clamp(0, 255).to(torch.uint8)

    full = torch.full((1, *image.shape[-2:]), 255, dtype=torch.uint8)
    mask = full if mask is None else mask  # skipped (no usable mask): all foreground, no change
    if mode == "rm":
        return (done(composite(image, mask, torch.full(image.shape, GREY))) if apply else image), []
    background = resized(bank if bank is not None else other[0], image)
    if mode == "random" and apply:
        return done(composite(image, mask, background)), []
    if mode == "swaps":
        o_img = resized(other[0], image)
        o_mask = resized(full if other[1] is None else other[1], mask)
        positive = done(composite(image, mask, background))
        negative = done(composite(o_img, o_mask, image))
        return image, [positive, negative]
    return image, []

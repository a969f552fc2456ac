"""Background augmentation (Ryali et al. 2021, "Characterizing and improving the robustness of
self-supervised learning through background augmentations"): BG_RM, BG_Random and BG_Swaps.

The compositing math lives here once and is written with arithmetic operators only, so the same
function runs on DALI DataNodes (inside the pipeline, on the GPU when the pipeline is) and on
torch tensors (the memory and torchvision loaders, through :func:`tensor_background`). Mask and
background-bank resolution (missing file, wrong size) is shared too.

Backgrounds are foreground-free (``fastssl.data.backgrounds``): the dilated foreground is removed
and filled, from the bank written by ``fastssl data backgrounds`` when ``bg_bank`` names it, else
on the fly. A background never shows an object.

Modes (``Config.bg_mode``); ``rm`` and ``random`` are view transforms, drawn independently for
every view (so the two views of a pair usually differ in background, which is what removes the
background as a cue for matching them), for every method:
- ``rm``: with probability ``p`` the view's background becomes constant grey (``GREY``).
- ``random``: with probability ``p`` the view's background becomes the foreground-free
  background of another image (of the batch, or a random file of a bank that is not laid out
  per image).
- ``swaps``: the views are unchanged, and two inputs are appended to every sample: an extra
  positive (the anchor's foreground on another image's foreground-free background) and a hard
  negative (another image's foreground on the anchor's foreground-free background), consumed
  by SimCLR and MoCo v2 as ``bg_positive`` / ``bg_negative``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from fastssl.config import Config
from fastssl.data.backgrounds import MARGIN, bank_path
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
# Default probability per mode when ``bg_p`` is negative. BG_Random: 0.5, chosen on the cluttered
# shapes set (SimCLR, 12 epochs, 2 seeds: kNN 18.3 at p 0.2, 25.5 at 0.5, 24.7 at 0.8, against
# 14.7 without it; benchmarks/results/background-cpu.md); the paper's ImageNet value is 0.2
# (Ryali et al. 2021, Sec. 3 and App. A, as recalled: the stored copy does not show the table).
# BG_RM: the paper's 0.2, not measured here. BG_Swaps adds its pair to every sample.
DEFAULT_P = {"rm": 0.2, "random": 0.5, "swaps": 1.0}


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
    # foreground-free backgrounds: `fastssl data backgrounds` (per image) or any directory of
    # background images (a pool for "random" and the swaps positive); "" = filled on the fly
    bank: str = ""
    missing_mask: str = "error"  # error | skip (no background change for that image, counted)
    mask_root: Path | None = None  # dataset root: masks live in ROOT/masks/<split>/<class>/*.png
    fill: str = "tile"  # on-the-fly fill (fastssl.data.backgrounds.FILLS)
    margin: int = MARGIN  # mask dilation before filling (px)

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
    return BgOptions(cfg.bg_mode, bg_probability(cfg), cfg.bg_bank, cfg.bg_missing_mask,
                     mask_root=Path(index.root))


def bg_probability(cfg: Config) -> float:
    """``bg_p``, or the mode's ``DEFAULT_P`` when it is negative (0 without a mode)."""
    return cfg.bg_p if cfg.bg_p >= 0 else DEFAULT_P.get(cfg.bg_mode, 0.0)


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


def resolve_backgrounds(split: Split, opts: BgOptions) -> tuple[list[Path | None], list[Path]]:
    """Per image, its foreground-free background in the bank (``None``: fill on the fly), and the
    pool of bank files for ``random`` and the swaps positive (empty: another image's
    background). A bank laid out per image (``fastssl data backgrounds``) has no pool."""
    if not opts.bank:
        return [None] * len(split), []
    files = bank_files(opts.bank)
    if opts.mask_root is None:
        return [None] * len(split), files
    own = [bank_path(Path(opts.bank), opts.mask_root, p) for p in split.paths]
    found: list[Path | None] = [p if p.is_file() else None for p in own]
    if not any(found):
        return found, files
    return found, []


def tensor_background(images, masks, backgrounds, *, mode: str, apply, partner, pool=None):
    """Background augmentation of a batch of uint8 tensors (the memory and torchvision loaders).

    ``images`` (B, 3, H, W), ``masks`` (B, 1, H, W) (255 = foreground), ``backgrounds`` their
    foreground-free backgrounds (B, 3, H, W); ``apply`` a bool (B,) coin per sample; ``partner``
    (B,) the index of the other sample; ``pool`` (B, 3, H, W) backgrounds drawn from a bank
    (instead of the partner's). Returns ``(images, extra)``: ``rm`` / ``random`` change the
    background where ``apply``; ``swaps`` leaves ``images`` and returns the extra positive and
    the hard negative.
    """
    import torch

    def done(x):
        return x.round().clamp(0, 255).to(torch.uint8)

    other_bg = pool if pool is not None else backgrounds[partner]
    if mode == "swaps":
        positive = done(composite(images, masks, other_bg))
        negative = done(composite(images[partner], masks[partner], backgrounds))
        return images, [positive, negative]
    bg = torch.full_like(images, int(GREY)) if mode == "rm" else other_bg
    changed = done(composite(images, masks, bg))
    return torch.where(apply.view(-1, 1, 1, 1), changed, images), []


def mask_and_background(image, mask_file: Path | None, bank_file: Path | None, opts: BgOptions):
    """uint8 tensors of one sample for :func:`tensor_background`: its mask (1, H, W; all
    foreground without a usable mask, i.e. no change) and its foreground-free background
    (3, H, W; from the bank file or filled on the fly)."""
    import torch

    from fastssl.data.backgrounds import foreground_free
    from fastssl.pipelines.decode import load

    if mask_file is None:
        return torch.full((1, *image.shape[-2:]), 255, dtype=torch.uint8), image
    mask = load(mask_file, "L")
    if bank_file is not None:
        return mask, resized(load(bank_file), image)
    bg = foreground_free(image.permute(1, 2, 0).numpy(), mask[0].numpy(), margin=opts.margin,
                         fill=opts.fill)
    return mask, torch.from_numpy(bg).permute(2, 0, 1)


def resized(x, like, nearest: bool = False):
    """``x`` (C, H, W) resized to ``like``'s size (when it differs)."""
    from torchvision.transforms.v2 import functional as F

    if x.shape[-2:] == like.shape[-2:]:
        return x
    mode = F.InterpolationMode.NEAREST if nearest else F.InterpolationMode.BILINEAR
    return F.resize(x, list(like.shape[-2:]), interpolation=mode, antialias=not nearest)

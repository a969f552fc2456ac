"""Foreground-free backgrounds (Ryali et al. 2021; Xiao et al. 2020's ImageNet-9 "only_bg_t"):
the foreground mask is dilated by a small margin (so the object's edge pixels, which blend
object and background, do not leak) and the hole is filled from the image's own background.

Fills (``FILLS``):
- ``tile``: each hole pixel is copied from the image translated by whole multiples of the hole's
  bounding box (the image tiled around itself), nearest translation first, so the hole receives
  background texture at full contrast; what no translation reaches is inpainted.
- ``inpaint``: OpenCV's Telea inpainting: a smooth fill that keeps the silhouette's outline as a
  blurred blob on textured backgrounds.

``benchmarks/background.py --measure-fill`` compares them against the true background of the
synthetic sets (``benchmarks/results/background-cpu.md``); ``tile`` is the default.

``fastssl data backgrounds DIR`` writes the bank ``DIR/backgrounds/<split>/<class>/<name>.png``
(the layout of ``DIR/masks``), which ``--bg_bank DIR/backgrounds`` then reads instead of filling
on the fly.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from fastssl.data.layout import DatasetIndex, Split, scan

FILLS = ("tile", "inpaint")
MARGIN = 2  # px of dilation: the shapes' anti-aliased edge is one pixel wide at 64 px
BANK = "backgrounds"


def dilated(mask: np.ndarray, margin: int = MARGIN) -> np.ndarray:
    """Boolean hole: mask >= 128 grown by ``margin`` pixels (a disc)."""
    import cv2

    hole = (mask >= 128).astype(np.uint8)
    if margin <= 0:
        return hole.astype(bool)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
    return cv2.dilate(hole, kernel).astype(bool)


def _inpaint(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.inpaint(np.ascontiguousarray(image), hole.astype(np.uint8), 3, cv2.INPAINT_TELEA)


def _tile(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(hole)
    bh, bw = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    shifts = sorted({(a * bh, b * bw) for a in (-2, -1, 0, 1, 2) for b in (-2, -1, 0, 1, 2)}
                    - {(0, 0)}, key=lambda s: abs(s[0]) + abs(s[1]))
    out, todo = image.copy(), hole.copy()
    for dy, dx in shifts:
        source_ok = np.roll(~hole, (dy, dx), (0, 1))
        take = todo & source_ok
        out[take] = np.roll(image, (dy, dx), (0, 1))[take]
        todo &= ~take
        if not todo.any():
            return out
    return _inpaint(out, todo)


def foreground_free(image: np.ndarray, mask: np.ndarray, *, margin: int = MARGIN,
                    fill: str = "tile") -> np.ndarray:
    """``image`` (H, W, 3 uint8) with its foreground (``mask`` H, W; 255 = foreground) dilated
    by ``margin`` removed and filled. An image that is all foreground becomes mid-grey."""
    if fill not in FILLS:
        raise ValueError(f"fill must be one of {', '.join(FILLS)}, got {fill!r}")
    hole = dilated(mask, margin)
    if not hole.any():
        return image.copy()
    if hole.all():
        return np.full_like(image, 128)
    return (_tile if fill == "tile" else _inpaint)(image, hole)


def bank_path(bank: Path, root: Path, image: Path) -> Path:
    """The bank file of ``image``: ``bank/<split>/<class>/<stem>.png`` (as ``DIR/masks``)."""
    return (bank / image.relative_to(root)).with_suffix(".png")


def build_bank(index: DatasetIndex, bank: Path, *, splits: list[Split], margin: int = MARGIN,
               fill: str = "tile", overwrite: bool = False) -> dict[str, int]:
    """Write the foreground-free background of every image of ``splits`` that has a mask."""
    written = skipped = 0
    for split in splits:
        for path in split.paths:
            out, mask_file = bank_path(bank, index.root, path), index.mask_path(path)
            if not mask_file.is_file():
                skipped += 1
                continue
            if out.exists() and not overwrite:
                continue
            image = np.asarray(Image.open(path).convert("RGB"))
            mask = np.asarray(Image.open(mask_file).convert("L"))
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_suffix(".tmp.png")
            Image.fromarray(foreground_free(image, mask, margin=margin, fill=fill)).save(tmp)
            tmp.replace(out)
            written += 1
    return {"written": written, "no_mask": skipped}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="fastssl data backgrounds", description=(
        "foreground-free backgrounds from the masks in DIR/masks/ (for --bg_bank)"))
    p.add_argument("data", help="dataset root with masks (fastssl data masks DIR)")
    p.add_argument("--out", default="", help=f"bank directory (default: DIR/{BANK})")
    p.add_argument("--fill", choices=FILLS, default="tile")
    p.add_argument("--margin", type=int, default=MARGIN, help="mask dilation (px)")
    p.add_argument("--splits", default="train", help="comma list of train, val")
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    index = scan(a.data)
    bank = Path(a.out) if a.out else Path(index.root) / BANK
    splits = [{"train": index.train, "val": index.val}[s] for s in a.splits.split(",") if s]
    s = build_bank(index, bank, splits=splits, margin=a.margin, fill=a.fill,
                   overwrite=a.overwrite)
    print(f"backgrounds in {bank}: {s['written']} written ({a.fill}, margin {a.margin} px); "
          f"{s['no_mask']} images without a mask skipped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""``fastssl data masks DIR``: foreground masks for a dataset that has none, for background
augmentation. Writes ``DIR/masks/<split>/<class>/<name>.png`` (255 = foreground) and reports
coverage statistics.

Methods:
- ``grabcut`` (default): OpenCV GrabCut initialised with a centre-prior rectangle (the object is
  assumed to lie inside the central ``1 - 2 * margin`` of each side, as in object-centric
  datasets); no model needed.
- ``--module pkg.mod:factory``: a user torch segmentation module. ``factory()`` returns a module
  taking a (1, 3, H, W) float batch normalised with ImageNet statistics and returning either
  (1, 1, H', W') foreground logits or (1, K, H', W') class logits / a dict with ``"out"`` (as
  torchvision's segmentation models), where class 0 is background.
"""

from __future__ import annotations

import argparse
import importlib
import sys

import numpy as np
from PIL import Image

from fastssl.data.layout import DatasetIndex, Split, scan
from fastssl.data.stats import MEAN, STD


def grabcut_mask(image: np.ndarray, *, margin: float = 0.05, iters: int = 5) -> np.ndarray:
    """GrabCut with a centre rectangle; ``image`` HxWx3 uint8 RGB -> HxW uint8 (255 = fg)."""
    import cv2

    h, w = image.shape[:2]
    rect = (int(margin * w), int(margin * h), max(1, int(w * (1 - 2 * margin))),
            max(1, int(h * (1 - 2 * margin))))
    mask = np.zeros((h, w), np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(np.ascontiguousarray(image[..., ::-1]), mask, rect, bgd, fgd, iters,
                    cv2.GC_INIT_WITH_RECT)
    except cv2.error:  # degenerate input (e.g. a constant image): no foreground model
        return np.zeros((h, w), np.uint8)
    fg = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
    return np.where(fg, 255, 0).astype(np.uint8)


def module_masker(spec: str, device: str = "cpu"):
    """A mask function from ``pkg.mod:factory`` (see the module docstring)."""
    import torch
    import torch.nn.functional as F

    mod_name, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"--module expects pkg.mod:factory, got '{spec}'")
    model = getattr(importlib.import_module(mod_name), attr)().to(device).eval()
    mean = torch.tensor(MEAN, device=device)[:, None, None]
    std = torch.tensor(STD, device=device)[:, None, None]

    @torch.no_grad()
    def masker(image: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().to(device) / 255
        out = model(((x - mean) / std)[None])
        out = out["out"] if isinstance(out, dict) else out
        out = F.interpolate(out.float(), size=image.shape[:2], mode="bilinear",
                            align_corners=False)[0]
        fg = out[0] > 0 if out.shape[0] == 1 else out.argmax(0) != 0
        return (fg.to(torch.uint8) * 255).cpu().numpy()

    return masker


def coverage(fractions: list[float]) -> dict[str, float]:
    """Mean / median foreground fraction and how many masks are empty or full."""
    f = np.asarray(fractions, dtype=np.float64)
    return {"images": int(len(f)), "mean_fg": float(f.mean()) if len(f) else 0.0,
            "median_fg": float(np.median(f)) if len(f) else 0.0,
            "empty": int((f == 0).sum()), "full": int((f == 1).sum())}


def compute_masks(index: DatasetIndex, masker, *, overwrite: bool = False,
                  splits: list[Split] | None = None, progress: bool = False) -> dict[str, float]:
    """Write a mask for every image of ``splits`` (default: train and val) that lacks one."""
    fractions, written = [], 0
    paths = [p for s in (splits or [index.train, index.val]) for p in s.paths]
    paths = list(dict.fromkeys(paths))  # the held-out split may share train/'s files
    for i, path in enumerate(paths):
        out = index.mask_path(path)
        if out.exists() and not overwrite:
            mask = np.asarray(Image.open(out).convert("L"))
        else:
            mask = masker(np.asarray(Image.open(path).convert("RGB")))
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_suffix(".tmp.png")
            Image.fromarray(mask).save(tmp)
            tmp.replace(out)  # atomic: an interrupted run leaves no half-written mask
            written += 1
        fractions.append(float((mask >= 128).mean()))
        if progress and (i + 1) % 500 == 0:
            print(f"{i + 1}/{len(paths)} images", file=sys.stderr, flush=True)
    return {**coverage(fractions), "written": written}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="fastssl data masks",
                                description="compute foreground masks into DIR/masks/")
    p.add_argument("data", help="dataset root (DIR/train/<class>/...)")
    p.add_argument("--module", default="", help="torch segmentation module pkg.mod:factory "
                   "(default: OpenCV GrabCut with a centre prior)")
    p.add_argument("--margin", type=float, default=0.05,
                   help="GrabCut: border fraction outside the centre-prior rectangle")
    p.add_argument("--iters", type=int, default=5, help="GrabCut iterations")
    p.add_argument("--device", default="cpu", help="device for --module")
    p.add_argument("--overwrite", action="store_true", help="recompute existing masks")
    a = p.parse_args(argv)
    index = scan(a.data)
    if a.module:
        masker = module_masker(a.module, a.device)
    else:
        def masker(image):
            return grabcut_mask(image, margin=a.margin, iters=a.iters)
    s = compute_masks(index, masker, overwrite=a.overwrite, progress=True)
    print(f"masks in {index.root / 'masks'}: {s['written']} written, {s['images']} images; "
          f"foreground fraction mean {s['mean_fg']:.3f} median {s['median_fg']:.3f}; "
          f"empty {s['empty']}, full {s['full']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

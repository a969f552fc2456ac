"""Background-robustness evaluation in the style of ImageNet-9 (Xiao et al. 2020, "Noise or
signal: the role of image backgrounds in object recognition"): the held-out split is rebuilt
from its masks with the foreground on another background, and kNN (bank: the unchanged train
split) is reported on each variant and as a gap to the original images.

Variants (``SHIFTS``); backgrounds are foreground-free (``fastssl.data.backgrounds``):
- ``only_fg``: the foreground on black;
- ``mixed_same``: the foreground on the background of another image of the same class;
- ``mixed_rand``: the foreground on the background of a random other image (any class).

``gap`` is original minus variant (kNN points); ImageNet-9's BG-Gap is mixed_same minus
mixed_rand. A model that ignores backgrounds has gaps near zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fastssl.data.layout import DatasetIndex, Split
from fastssl.eval.features import extract
from fastssl.eval.knn import knn_top1
from fastssl.pipelines.background import (
    BgOptions,
    composite,
    mask_and_background,
    resized,
    resolve_masks,
)
from fastssl.pipelines.decode import Decoder
from fastssl.pipelines.torch_loader import eval_loader, eval_transform

SHIFTS = ("only_fg", "mixed_same", "mixed_rand")


def partners(labels: Sequence[int], shift: str, g: torch.Generator) -> list[int]:
    """For every image, the image whose background it receives (never itself when another
    candidate exists): same class for ``mixed_same``, any for ``mixed_rand``."""
    out = []
    for i, y in enumerate(labels):
        pool = [j for j, z in enumerate(labels) if j != i and (shift == "mixed_rand" or z == y)]
        out.append(pool[int(torch.randint(len(pool), (), generator=g))] if pool else i)
    return out


def shifted_split(split: Split, root, shift: str, *, seed: int = 0,
                  opts: BgOptions | None = None) -> list[torch.Tensor]:
    """The images of ``split`` (uint8 CHW) rebuilt for ``shift`` from their masks; every image
    needs a mask (``fastssl data masks``)."""
    if shift not in SHIFTS:
        raise ValueError(f"bg_shift must be one of {', '.join(SHIFTS)}, got {shift!r}")
    opts = opts or BgOptions("random", 1.0, mask_root=root)
    masks, _ = resolve_masks(split, opts)
    decode = Decoder(split)
    images = [decode(i) for i in range(len(split))]
    pairs = [mask_and_background(im, m, None, opts)
             for im, m in zip(images, masks, strict=True)]
    if shift == "only_fg":
        return [composite(im, m, 0.0).round().to(torch.uint8)
                for im, (m, _) in zip(images, pairs, strict=True)]
    source = partners(split.labels, shift, torch.Generator().manual_seed(seed))
    return [composite(im, m, resized(pairs[j][1], im)).round().clamp(0, 255).to(torch.uint8)
            for im, (m, _), j in zip(images, pairs, source, strict=True)]


@torch.no_grad()
def bg_shift_knn(embed, index: DatasetIndex, shifts: Sequence[str], *, crop_size: int,
                 k: int, temperature: float, device: torch.device, workers: int = 2,
                 seed: int = 0) -> dict[str, float]:
    """kNN top-1 on the original held-out split and on each variant, and ``gap[...]``."""
    bank = extract(embed, eval_loader(index.train, crop_size, workers=workers), device)
    val = extract(embed, eval_loader(index.val, crop_size, workers=workers), device)
    out = {"original": knn_top1(*bank, *val, k=k, temperature=temperature)}
    transform = eval_transform(crop_size)
    labels = torch.tensor(index.val.labels)
    for shift in shifts:
        images = shifted_split(index.val, index.root, shift, seed=seed)
        batches = [(torch.stack([transform(x) for x in images[s:s + 256]]), labels[s:s + 256])
                   for s in range(0, len(images), 256)]
        out[shift] = knn_top1(*bank, *extract(embed, batches, device), k=k,
                              temperature=temperature)
        out[f"gap[{shift}]"] = out["original"] - out[shift]
    if "mixed_same" in out and "mixed_rand" in out:
        out["bg_gap"] = out["mixed_same"] - out["mixed_rand"]
    return out

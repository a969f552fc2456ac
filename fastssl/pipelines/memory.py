"""The in-memory loader: a split decoded once into one uint8 tensor, every view of a batch made
at once with tensor ops, on the CPU or on the training GPU.

For sets that fit in memory (the embedded shapes and digits sets, CIFAR-sized data) this removes
per-image decoding and per-image transform calls, the cost that dominates small-image training
on a few CPU cores. The views follow the same ``ViewSpec`` parameters as DALI and torchvision:

- crop: RandomResizedCrop sampled as torchvision does (``crop_boxes``), resampled as the other
  loaders do (``ViewSpec.antialias``): antialiased bilinear on the crop rounded to
  whole pixels (torchvision's ``resized_crop``), or plain bilinear sampling of the exact box
  (``roi_align`` with one sample per output pixel). Before this was named, the loader used
  ``roi_align``'s adaptive sampling (a 2-pixel box average at 2x downscale), sharper than
  the others' antialiasing: the difference in what the loaders learned;
- colour: the run's colour recipe (``colour.jitter``) with probability ``jitter_p``; then
  grayscale, Gaussian blur (kernel ``ViewSpec.blur_kernel``, sigma per sample) and solarize
  (threshold 128/255).

Background augmentation (``background.py``): masks and foreground-free backgrounds are loaded
(or filled) once with the images; ``rm`` / ``random`` are drawn per view, ``swaps`` appends its
pair. AutoAugment, RandAugment and large-scale jitter are not implemented here: asking for them
raises with the option named (use ``--loader torch`` or ``--loader dali``).

Randomness is a pure function of (seed, epoch, batch index, rank): views do not depend on where
a resumed epoch starts.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from fastssl.batch import Batch, swaps_partners
from fastssl.data.layout import Split
from fastssl.pipelines.background import (
    BgOptions,
    mask_and_background,
    resized,
    resolve_backgrounds,
    resolve_masks,
    tensor_background,
)
from fastssl.pipelines.batches import epoch_batches
from fastssl.pipelines.colour import factors, grey, jitter
from fastssl.pipelines.decode import Decoder
from fastssl.pipelines.loader import LoaderSpec, labelled
from fastssl.pipelines.views import MEAN, STD, ViewSpec
from fastssl.seeding import generator

log = logging.getLogger(__name__)

ATTEMPTS = 10  # RandomResizedCrop's tries (torchvision)
def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _bernoulli(n: int, p: float, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g) < p


def crop_boxes(n: int, height: int, width: int, spec: ViewSpec,
               g: torch.Generator) -> torch.Tensor:
    """RandomResizedCrop boxes (n, 4) as whole-pixel (x1, y1, x2, y2), sampled as torchvision
    does: up to ``ATTEMPTS`` draws of area ``spec.scale`` and log-uniform aspect ``spec.ratio``
    (sides rounded), the first that fits is placed uniformly; when none fits, a centred crop of
    the whole image clamped to the aspect range. (Clamping each draw to the image instead, as
    this loader once did, gives larger crops: mean area 0.55 against 0.48 at scale 0.08-1.)"""
    area = _uniform(n * ATTEMPTS, *spec.scale, g).view(n, ATTEMPTS) * height * width
    log_r = _uniform(n * ATTEMPTS, math.log(spec.ratio[0]), math.log(spec.ratio[1]), g)
    aspect = torch.exp(log_r).view(n, ATTEMPTS)
    w, h = torch.sqrt(area * aspect).round(), torch.sqrt(area / aspect).round()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.float().argmax(1, keepdim=True)
    found = fits.any(1)
    fw, fh = float(width), float(height)
    if width / height < spec.ratio[0]:
        fh = float(round(width / spec.ratio[0]))
    elif width / height > spec.ratio[1]:
        fw = float(round(height * spec.ratio[1]))
    w = torch.where(found, w.gather(1, first)[:, 0], fw)
    h = torch.where(found, h.gather(1, first)[:, 0], fh)
    x1 = torch.where(found, (torch.rand(n, generator=g) * (width - w + 1)).floor(),
                     (width - w) // 2)
    y1 = torch.where(found, (torch.rand(n, generator=g) * (height - h + 1)).floor(),
                     (height - h) // 2)
    return torch.stack([x1, y1, x1 + w, y1 + h], 1)


def resample(images: torch.Tensor, boxes: torch.Tensor, spec: ViewSpec) -> torch.Tensor:
    """Whole-pixel crops ``boxes`` (n, 4) of uint8 ``images`` resized to ``spec.size`` (float,
    0-255), as torchvision's ``resized_crop`` (bilinear, antialiased or not)."""
    if not spec.antialias:
        rois = torch.cat([torch.arange(len(boxes), dtype=torch.float32)[:, None], boxes], 1)
        return roi_align(images.float(), rois.to(images.device), spec.size, sampling_ratio=1,
                         aligned=True)
    return torch.cat([F.interpolate(images[i:i + 1, :, y1:y2, x1:x2].float(), size=spec.size,
                                    mode="bilinear", antialias=True, align_corners=False)
                      for i, (x1, y1, x2, y2) in enumerate(boxes.long().tolist())])


def _blur(x: torch.Tensor, sigma: torch.Tensor, k: int) -> torch.Tensor:
    """Separable Gaussian blur with a per-sample sigma (sigma 0 = identity), reflect padding."""
    b, c, h, w = x.shape
    t = torch.arange(k, dtype=x.dtype, device=x.device) - k // 2
    s = sigma.to(x).clamp(min=1e-6)[:, None]
    kern = torch.exp(-0.5 * (t[None] / s) ** 2)
    kern = (kern / kern.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (b*c, k)
    y = F.pad(x.reshape(1, b * c, h, w), (k // 2,) * 4, mode="reflect")
    y = F.conv2d(y, kern[:, None, :, None], groups=b * c)
    y = F.conv2d(y, kern[:, None, None, :], groups=b * c)
    return y.reshape(b, c, h, w)


def augment(images: torch.Tensor, spec: ViewSpec, g: torch.Generator) -> torch.Tensor:
    """One view of a uint8 batch (B, 3, H, W) -> normalised float (B, 3, size, size), on the
    images' device. Random parameters are drawn on the CPU from ``g`` (device independent)."""
    n, _, height, width = images.shape
    dev = images.device

    def per_sample(t: torch.Tensor) -> torch.Tensor:
        return t.to(dev, torch.float32).view(n, 1, 1, 1)

    x = resample(images, crop_boxes(n, height, width, spec, g), spec) / 255.0
    flip = per_sample(_bernoulli(n, spec.flip_p, g))
    x = flip * x.flip(3) + (1 - flip) * x

    on = per_sample(_bernoulli(n, spec.jitter_p, g))
    jittered = jitter(x, spec.colour, factors(n, spec.jitter, lambda k: torch.rand(k, generator=g)))
    x = on * jittered + (1 - on) * x

    to_grey = per_sample(_bernoulli(n, spec.gray_p, g))
    x = to_grey * grey(x).expand_as(x) + (1 - to_grey) * x
    if spec.blur_p > 0:
        sigma = _uniform(n, *spec.blur_sigma, g) * _bernoulli(n, spec.blur_p, g)
        x = _blur(x, sigma, spec.blur_kernel)
    if spec.solarize_p > 0:
        sol = per_sample(_bernoulli(n, spec.solarize_p, g))
        x = torch.where((sol > 0) & (x >= 128 / 255), 1 - x, x)
    mean = torch.tensor(MEAN, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=dev).view(1, 3, 1, 1)
    return (x - mean) / std


def check_specs(specs: Sequence[ViewSpec], bg: BgOptions | None) -> None:
    """Reject what this loader does not implement, naming the option."""
    for spec in specs:
        if spec.randaugment[0] > 0 or spec.scale_jitter[1] > 0 or spec.autoaugment:
            raise ValueError("--loader memory does not do AutoAugment, RandAugment or large-scale"
                             " jitter (the 'strong' and 's2'-'s4' views): use --loader torch or "
                             "--loader dali")


def load_backgrounds(split: Split, images: torch.Tensor, bg: BgOptions
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, int]:
    """Masks (N, 1, H, W), foreground-free backgrounds (N, 3, H, W), the bank pool (P, 3, H, W)
    or None, and how many images had no usable mask."""
    from fastssl.pipelines.decode import load

    mask_files, skipped = resolve_masks(split, bg)
    own, pool_files = resolve_backgrounds(split, bg)
    pairs = [mask_and_background(im, m, b, bg) for im, m, b in zip(images, mask_files, own,
                                                                   strict=True)]
    pool = torch.stack([resized(load(f), images[0]) for f in pool_files]) if pool_files else None
    return (torch.stack([m for m, _ in pairs]), torch.stack([b for _, b in pairs]), pool,
            skipped)


def background_views(images: torch.Tensor, masks: torch.Tensor, backgrounds: torch.Tensor,
                     pool: torch.Tensor | None, bg: BgOptions, g: torch.Generator
                     ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One draw of ``tensor_background`` for a batch: coins, partners (another sample of the
    batch, ``swaps_partners`` for BG_Swaps) and bank picks come from ``g``."""
    n, dev = len(images), images.device
    partner = swaps_partners(n) if bg.swaps else \
        (torch.arange(n) + torch.randint(1, max(2, n), (n,), generator=g)) % n
    picks = None if pool is None else pool[torch.randint(len(pool), (n,), generator=g)].to(dev)
    return tensor_background(images, masks, backgrounds, mode=bg.mode,
                             apply=_bernoulli(n, bg.p, g).to(dev), partner=partner.to(dev),
                             pool=picks)


def decode_split(split: Split, workers: int) -> tuple[torch.Tensor, int]:
    """Every image of ``split`` as one uint8 tensor (N, 3, H, W) and the count of unreadable
    files (each replaced by the next readable image, as in the other loaders). All images must
    have the same size."""
    decode = Decoder(split)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        images = list(pool.map(decode, range(len(split))))
    sizes = {tuple(im.shape[1:]) for im in images}
    if len(sizes) > 1:
        raise ValueError(f"--loader memory needs images of one size; {split.paths[0].parent.parent}"
                         f" has {len(sizes)} sizes (e.g. {sorted(sizes)[:2]}): resize the set "
                         "or use --loader torch")
    return torch.stack(images), decode.corrupt.value


class MemoryTrainLoader:
    """Batches made from the decoded split, sharded over processes."""

    def __init__(self, spec: LoaderSpec) -> None:
        check_specs(spec.views, spec.bg)
        self.spec = spec
        split = spec.split
        images, self._corrupt = decode_split(split, spec.workers)
        device = torch.device("cuda", torch.cuda.current_device()) \
            if spec.device_type == "cuda" else torch.device("cpu")
        self.images = images.to(device)
        self.labels = torch.tensor(split.labels)
        self.bg_skipped = 0
        if spec.bg is not None:
            masks, backgrounds, pool, self.bg_skipped = load_backgrounds(split, images, spec.bg)
            self.masks, self.backgrounds = masks.to(device), backgrounds.to(device)
            self.pool = pool
        log.info("memory loader: %d images of %s decoded (%.0f MiB on %s)", len(images),
                 tuple(images.shape[1:]), images.numel() / 2**20, device)
        self.batches_per_epoch = len(split) // (spec.batch_size * spec.world)

    def __len__(self) -> int:
        return self.batches_per_epoch

    @property
    def corrupt_count(self) -> int:
        return self._corrupt

    @property
    def pipelines(self) -> list:
        return []

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        s = self.spec
        batches = epoch_batches(len(self.labels), s.batch_size, seed=s.seed, epoch=epoch,
                                rank=s.rank, world=s.world)
        for b in range(start_batch, len(batches)):
            g = generator(s.seed, epoch, b, s.rank)
            idx = torch.tensor(batches[b])
            views, extra = self._views(idx.to(self.images.device), g)
            yield labelled(views, self.labels[idx], extra)

    def _views(self, idx: torch.Tensor, g: torch.Generator
               ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The views of a batch and BG_Swaps' pair (empty without it)."""
        images, bg = self.images[idx], self.spec.bg
        if bg is None:
            return [augment(images, v, g) for v in self.spec.views], []
        masks, backgrounds = self.masks[idx], self.backgrounds[idx]
        if bg.swaps:
            _, extra = background_views(images, masks, backgrounds, self.pool, bg, g)
            views = [augment(images, v, g) for v in self.spec.views]
            return views, [augment(x, self.spec.views[0], g) for x in extra]
        return [augment(background_views(images, masks, backgrounds, self.pool, bg, g)[0], v, g)
                for v in self.spec.views], []

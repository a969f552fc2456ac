"""The torchvision.transforms.v2 loader: the CPU fallback that DALI is compared against.

Randomness is a pure function of (seed, epoch, sample index), so the views do not depend on the
worker count or on where a resumed epoch starts.
"""

from __future__ import annotations

import logging
import multiprocessing as mp

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2 as T

from fastssl.data.layout import Split
from fastssl.pipelines.background import BgOptions, bank_files, resolve_masks, torch_background
from fastssl.pipelines.batches import epoch_batches
from fastssl.pipelines.views import MEAN, STD, ViewSpec

log = logging.getLogger(__name__)


def view_transform(spec: ViewSpec) -> T.Compose:
    """The torchvision version of one view (uint8 CHW in, normalised float CHW out)."""
    if spec.scale_jitter[1] > 0:  # large-scale jitter (as dali_augment.scale_jitter)
        crop = [T.ScaleJitter((spec.size, spec.size), spec.scale_jitter, antialias=True),
                T.RandomCrop(spec.size, pad_if_needed=True)]
    else:
        crop = [T.RandomResizedCrop(spec.size, scale=spec.scale, ratio=spec.ratio, antialias=True)]
    n, m = spec.randaugment
    return T.Compose([
        *crop,
        T.RandomHorizontalFlip(spec.flip_p),
        *([T.RandAugment(num_ops=n, magnitude=m, fill=128)] if n > 0 else []),
        T.RandomApply([T.ColorJitter(*spec.jitter)], p=spec.jitter_p),
        T.RandomGrayscale(spec.gray_p),
        T.RandomApply([T.GaussianBlur(spec.blur_kernel, spec.blur_sigma)], p=spec.blur_p),
        T.RandomSolarize(threshold=128, p=spec.solarize_p),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(MEAN, STD),
    ])


def eval_transform(size: int) -> T.Compose:
    return T.Compose([T.Resize(size, antialias=True), T.CenterCrop(size),
                      T.ToDtype(torch.float32, scale=True), T.Normalize(MEAN, STD)])


class ImageFiles(Dataset):
    """Decodes each image once and applies every view transform to it.

    A file that cannot be decoded is reported once with its path and replaced by the next
    readable image (deterministically); ``corrupt`` counts them across worker processes.
    """

    def __init__(self, split: Split, transforms: list, seed: int = 0,
                 bg: BgOptions | None = None) -> None:
        self.split = split
        self.transforms = transforms
        self.seed = seed
        self.epoch = 0
        self.corrupt = mp.Value("i", 0)
        self._bad: set[int] = set()
        self.bg = bg if bg is not None and bg.mode != "none" else None
        self.bg_skipped = 0
        if self.bg is not None:  # background augmentation: masks checked up front, as in DALI
            self.masks, self.bg_skipped = resolve_masks(split, self.bg)
            self.bank = bank_files(self.bg.bank) if self.bg.bank else []

    def __len__(self) -> int:
        return len(self.split)

    def _decode(self, index: int) -> torch.Tensor:
        for offset in range(len(self.split)):
            i = (index + offset) % len(self.split)
            if i in self._bad:
                continue
            try:
                with Image.open(self.split.paths[i]) as im:
                    return T.functional.pil_to_tensor(im.convert("RGB"))
            except (OSError, ValueError, SyntaxError) as e:
                self._bad.add(i)
                with self.corrupt.get_lock():
                    self.corrupt.value += 1
                log.warning("skipping unreadable image %s (%s)", self.split.paths[i], e)
        raise RuntimeError(f"no readable image in {self.split.paths[0].parent.parent}")

    def _background(self, image: torch.Tensor, index: int):
        """BG_RM / BG_Random / BG_Swaps of one sample (math shared with DALI: background.py)."""
        def load(path, mode="RGB"):
            with Image.open(path) as im:
                return T.functional.pil_to_tensor(im.convert(mode))

        def mask_of(i):
            return load(self.masks[i], "L") if self.masks[i] else None

        bg = self.bg
        apply = bool(torch.rand(()) < bg.p)
        if bg.mode in ("rm", "random") and not apply:
            return image, []
        other = None
        if bg.mode != "rm":
            j = int(torch.randint(len(self), ()))
            other = (self._decode(j), mask_of(j))
        bank = load(self.bank[int(torch.randint(len(self.bank), ()))]) if self.bank else None
        return torch_background(image, mask_of(index), other, mode=bg.mode, apply=apply, bank=bank)

    def __getitem__(self, index: int):
        image = self._decode(index)
        # per-sample seed: views independent of worker assignment and resume position
        torch.manual_seed((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index)
        extra = []
        if self.bg is not None:
            image, extra = self._background(image, index)
        views = [t(image) for t in self.transforms]
        views += [self.transforms[0](x) for x in extra]  # BG_Swaps: positive, hard negative
        return views, self.split.labels[index]


class TorchTrainLoader:
    """Batches of ``(views, labels)`` from the torchvision pipeline, sharded over processes."""

    def __init__(self, split: Split, specs: list[ViewSpec], *, batch_size: int, workers: int,
                 seed: int, rank: int = 0, world: int = 1, bg: BgOptions | None = None) -> None:
        self.dataset = ImageFiles(split, [view_transform(s) for s in specs], seed, bg)
        self.batch_size, self.workers = batch_size, workers
        self.seed, self.rank, self.world = seed, rank, world
        self.batches_per_epoch = len(split) // (batch_size * world)

    def __len__(self) -> int:
        return self.batches_per_epoch

    @property
    def corrupt_count(self) -> int:
        return self.dataset.corrupt.value

    def epoch(self, epoch: int, start_batch: int = 0):
        self.dataset.epoch = epoch  # read by the workers forked below
        batches = epoch_batches(len(self.dataset), self.batch_size, seed=self.seed, epoch=epoch,
                                rank=self.rank, world=self.world)[start_batch:]
        return iter(DataLoader(self.dataset, batch_sampler=batches, num_workers=self.workers,
                               persistent_workers=False, pin_memory=torch.cuda.is_available(),
                               prefetch_factor=4 if self.workers else None))


def eval_loader(split: Split, size: int, *, batch_size: int = 256, workers: int = 2):
    """Deterministic (resize + centre crop) batches of ``(images, labels)`` for evaluation."""
    dataset = ImageFiles(split, [eval_transform(size)])
    return DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                      collate_fn=lambda items: (torch.stack([v[0] for v, _ in items]),
                                                torch.tensor([y for _, y in items])))

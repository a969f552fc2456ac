"""The torchvision.transforms.v2 loader: the CPU fallback that DALI is compared against.

Randomness is a pure function of (seed, epoch, sample index) (``fastssl.seeding``), so the views
do not depend on the worker count or on where a resumed epoch starts.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2 as T

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
from fastssl.pipelines.colour import factors, jitter
from fastssl.pipelines.decode import Decoder, load
from fastssl.pipelines.loader import LoaderSpec, labelled
from fastssl.pipelines.views import MEAN, STD, ViewSpec
from fastssl.seeding import derive_seed


class ColourJitter(torch.nn.Module):
    """The run's colour recipe (``colour.jitter``) on one float CHW image in [0, 1], factors
    drawn as torchvision's ``ColorJitter`` draws them (from the global generator), whose own
    recipe differs (see ``colour``)."""

    def __init__(self, jitter: tuple[float, float, float, float], recipe: str) -> None:
        super().__init__()
        self.jitter, self.recipe = jitter, recipe

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return jitter(image[None], self.recipe, factors(1, self.jitter, torch.rand))[0]


def view_transform(spec: ViewSpec) -> T.Compose:
    """The torchvision version of one view (uint8 CHW in, normalised float CHW out). The colour
    operators run on float images, as in the memory loader: on uint8, torchvision rounds after
    each of them and truncates greyscale (0.5 of 255 darker on average)."""
    if spec.scale_jitter[1] > 0:  # large-scale jitter (as dali_augment.scale_jitter)
        crop = [T.ScaleJitter((spec.size, spec.size), spec.scale_jitter, antialias=True),
                T.RandomCrop(spec.size, pad_if_needed=True)]
    else:
        crop = [T.RandomResizedCrop(spec.size, scale=spec.scale, ratio=spec.ratio,
                                    antialias=spec.antialias)]
    n, m = spec.randaugment
    return T.Compose([
        *crop,
        T.RandomHorizontalFlip(spec.flip_p),
        *([T.AutoAugment(T.AutoAugmentPolicy.IMAGENET, fill=128)] if spec.autoaugment else []),
        *([T.RandAugment(num_ops=n, magnitude=m, fill=128)] if n > 0 else []),
        T.ToDtype(torch.float32, scale=True),
        T.RandomApply([ColourJitter(spec.jitter, spec.colour)], p=spec.jitter_p),
        T.RandomGrayscale(spec.gray_p),
        T.RandomApply([T.GaussianBlur(spec.blur_kernel, spec.blur_sigma)], p=spec.blur_p),
        T.RandomSolarize(threshold=128 / 255, p=spec.solarize_p),
        T.Normalize(MEAN, STD),
    ])


def eval_transform(size: int) -> T.Compose:
    return T.Compose([T.Resize(size, antialias=True), T.CenterCrop(size),
                      T.ToDtype(torch.float32, scale=True), T.Normalize(MEAN, STD)])


class ImageFiles(Dataset):
    """Training samples keyed by ``(epoch, index, BG_Swaps partner)``: decode once, apply every
    view transform.

    torchvision's random transforms draw from the global generator, so each sample runs inside
    ``torch.random.fork_rng`` seeded from ``derive_seed(seed, epoch, index)``: the views depend on
    nothing else (not the worker count, not where a resumed epoch starts), and the caller's
    global RNG state is left as it was (with ``workers=0`` this is the training process).
    """

    def __init__(self, split: Split, transforms: list[T.Compose], seed: int = 0,
                 bg: BgOptions | None = None) -> None:
        self.split = split
        self.transforms = transforms
        self.seed = seed
        self.decode = Decoder(split)
        self.bg = bg
        if bg is not None:  # background augmentation: masks checked up front, as in DALI
            self.masks, self.bg_skipped = resolve_masks(split, bg)
            self.own, self.pool = resolve_backgrounds(split, bg)

    def __len__(self) -> int:
        return len(self.split)

    def _sample(self, i: int, like: torch.Tensor | None = None,
                image: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Image (decoded unless given), mask and foreground-free background of sample ``i``
        (resized to ``like``)."""
        assert self.bg is not None
        image = self.decode(i) if image is None else image
        mask, background = mask_and_background(image, self.masks[i], self.own[i], self.bg)
        if like is None:
            return [image, mask, background]
        return [resized(image, like), resized(mask, like, nearest=True), resized(background, like)]

    def _background(self, index: int, bg: BgOptions, anchor: list[torch.Tensor],
                    swaps_partner: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One draw of BG_RM / BG_Random / BG_Swaps for sample ``index`` (``anchor``: its image,
        mask and background): the sample and a partner (``swaps_partner`` for BG_Swaps, else a
        random other sample) go through ``tensor_background`` as a batch of two."""
        apply = bool(torch.rand(()) < bg.p)
        if bg.mode != "swaps" and not apply:
            return anchor[0], []
        partner = anchor
        if bg.mode != "rm":
            j = swaps_partner if bg.swaps else \
                (index + int(torch.randint(1, max(2, len(self)), ()))) % len(self)
            partner = self._sample(j, like=anchor[0])
        pool = None
        if self.pool:
            pick = resized(load(self.pool[int(torch.randint(len(self.pool), ()))]), anchor[0])
            pool = torch.stack([pick, pick])
        images, masks, backgrounds = (torch.stack(pair) for pair in zip(anchor, partner,
                                                                         strict=True))
        out, extra = tensor_background(images, masks, backgrounds, mode=bg.mode,
                                       apply=torch.tensor([apply, False]),
                                       partner=torch.tensor([1, 0]), pool=pool)
        return out[0], [x[0] for x in extra]

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[list[torch.Tensor], int]:
        epoch, index, swaps_partner = key
        image = self.decode(index)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, epoch, index))
            if self.bg is None:
                views = [t(image) for t in self.transforms]
            elif self.bg.swaps:
                anchor = self._sample(index, image=image)
                views = [t(image) for t in self.transforms]
                views += [self.transforms[0](x)  # BG_Swaps: positive, hard negative
                          for x in self._background(index, self.bg, anchor, swaps_partner)[1]]
            else:  # a background draw per view
                anchor = self._sample(index, image=image)
                views = [t(self._background(index, self.bg, anchor, swaps_partner)[0])
                         for t in self.transforms]
        return views, self.split.labels[index]


class _EpochBatches:
    """The batch sampler of the persistent DataLoader: the current epoch's batches of
    ``(epoch, index, BG_Swaps partner index)``, replaced before each epoch (the sampler runs in
    the main process)."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, int, int]]] = []

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class TorchTrainLoader:
    """Batches from the torchvision pipeline, sharded over processes; the DataLoader and its
    workers persist across epochs."""

    def __init__(self, spec: LoaderSpec) -> None:
        self.spec = spec
        self.dataset = ImageFiles(spec.split, [view_transform(v) for v in spec.views], spec.seed,
                                  spec.bg)
        self.batches_per_epoch = len(spec.split) // (spec.batch_size * spec.world)
        self._sampler = _EpochBatches()
        self._loader = DataLoader(
            self.dataset, batch_sampler=self._sampler, num_workers=spec.workers,
            persistent_workers=spec.workers > 0, pin_memory=torch.cuda.is_available(),
            prefetch_factor=4 if spec.workers else None,
            # its own generator: DataLoader draws a base seed per iterator, which would
            # otherwise come from (and advance) the global RNG of the training process
            generator=torch.Generator().manual_seed(spec.seed))

    def __len__(self) -> int:
        return self.batches_per_epoch

    @property
    def corrupt_count(self) -> int:
        return self.dataset.decode.corrupt.value

    @property
    def pipelines(self) -> list:
        return []

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        s = self.spec
        order = epoch_batches(len(self.dataset), s.batch_size, seed=s.seed, epoch=epoch,
                              rank=s.rank, world=s.world)[start_batch:]
        self._sampler.batches = [
            [(epoch, i, b[j]) for i, j in zip(b, swaps_partners(len(b)).tolist(), strict=True)]
            for b in order]
        n_views = len(s.views)
        for views, labels in self._loader:
            yield labelled(views[:n_views], labels, views[n_views:])


class EvalImages(Dataset):
    """Deterministic evaluation images (resize + centre crop) and their labels."""

    def __init__(self, split: Split, size: int) -> None:
        self.split, self.transform, self.decode = split, eval_transform(size), Decoder(split)

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.decode(index)), self.split.labels[index]


def eval_loader(split: Split, size: int, *, batch_size: int = 256,
                workers: int = 2) -> DataLoader:
    """Batches of ``(images, labels)`` for evaluation."""
    return DataLoader(EvalImages(split, size), batch_size=batch_size, num_workers=workers)

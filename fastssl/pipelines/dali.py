"""The DALI loader: decode once, crop many, every crop its own named output.

One pipeline definition for both devices: ``device_type == "cuda"`` decodes with nvJPEG
("mixed") and runs every op on the GPU; otherwise the same graph runs on CPU (DALI 2.4 runs CPU
pipelines without a driver), which is what the CPU tests exercise.

Epoch order and sharding. The order of an epoch is :func:`epoch_batches` (the same as the
torchvision loader: a seeded permutation, full global batches only, each rank its contiguous
slice). The file list handed to ``fn.readers.file`` is the ranks' slices laid end to end, and the
reader shards it (``shard_id``/``num_shards``; shards are equal, ``pad_last_batch`` only guards
the invariant), so rank r reads exactly its slice; the iterator takes the epoch size from the
reader (``reader_name``). Every sample is seen at most once per epoch across ranks, and only the
incomplete last global batch is left out.

Determinism and resume. A pipeline is built per epoch with a seed derived from (seed, epoch,
rank); DALI's random ops keep one generator per sample slot, so the views are reproducible for a
given seed, batch size, world size, device type and DALI version (measured: identical across
thread counts). ``epoch(e, start_batch)`` replays the first ``start_batch`` batches (decoded and
augmented, then dropped), so a resumed epoch yields exactly the batches an uninterrupted run
would; the price is up to one epoch of pipeline time at resume. Not exact: CPU vs GPU (different
JPEG decoders and resampling), a different batch size or world size, another DALI version.

Bad files. Before an epoch every file gets a fast completeness check (image signature at the
start, JPEG end-of-image / PNG IEND marker at the end), which catches truncated and non-image
files without decoding. A file that still fails to decode mid-epoch (corrupt entropy data that
the decoder rejects) is located (DALI names it, or each file of the failing batches is decoded
with PIL), and the epoch is rebuilt and replayed up to the failing batch. Bad files are reported
once with their path, counted in ``corrupt_count`` and replaced by the next readable file of the
split (deterministically, as in the torchvision loader).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from nvidia.dali import fn, pipeline_def
from nvidia.dali.pipeline import Pipeline
from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

from fastssl.batch import Batch
from fastssl.pipelines import dali_augment as A
from fastssl.pipelines.background import (
    BgOptions,
    mask_and_background,
    resolve_backgrounds,
    resolve_masks,
)
from fastssl.pipelines.batches import epoch_batches
from fastssl.pipelines.decode import load
from fastssl.pipelines.loader import LoaderSpec, labelled
from fastssl.pipelines.views import ViewSpec
from fastssl.seeding import derive_seed

log = logging.getLogger(__name__)

READER = "Reader"  # the reader that defines the epoch (iterator's reader_name)
PREFETCH = 2  # DALI's default prefetch queue depth; a failing batch is at most this far ahead
_PNG = b"\x89PNG\r\n\x1a\n"
_FULL_MASK_PNG = "fastssl-full-mask.png"  # 1x1 255: "no background change" for skipped masks


def looks_complete(path: Path) -> bool:
    """A cheap check (two small reads) that a JPEG/PNG file is whole: its signature is there and
    its end marker (JPEG EOI ``FFD9`` / PNG ``IEND``) is in the last bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 64))
            tail = f.read()
    except OSError:
        return False
    if head[:3] == b"\xff\xd8\xff":
        return b"\xff\xd9" in tail  # some encoders append padding after EOI
    if head == _PNG:
        return b"IEND" in tail
    return False


def decodes(path: Path) -> bool:
    """Full decode with PIL (slow path, only used to locate a file DALI failed on)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
        return True
    except (OSError, ValueError, SyntaxError):
        return False


def filled_backgrounds(split, masks: list[Path | None], own: list[Path | None],
                       bg: BgOptions) -> list[str]:
    """The foreground-free background file of every image: the bank's, else filled now into a
    temporary directory (DALI reads files; the fill is ``mask_and_background``'s)."""
    import tempfile

    from PIL import Image

    out: list[str] = []
    folder: Path | None = None
    for i, (path, mask, bank_file) in enumerate(zip(split.paths, masks, own, strict=True)):
        if bank_file is not None:
            out.append(str(bank_file))
            continue
        folder = folder or Path(tempfile.mkdtemp(prefix="fastssl-backgrounds-"))
        _, background = mask_and_background(load(path), mask, None, bg)
        target = folder / f"{i}.png"
        Image.fromarray(background.permute(1, 2, 0).numpy()).save(target)
        out.append(str(target))
    if folder is not None:
        log.info("foreground-free backgrounds of %d images filled (%s) into %s", len(out),
                 bg.fill, folder)
    return out


@pipeline_def(enable_conditionals=True)
def ssl_pipeline(files: list[str], labels: list[int], specs: Sequence[ViewSpec], *, shard_id: int,
                 num_shards: int, device_type: str, bg: BgOptions | None = None,
                 mask_files: list[str] | None = None, background_files: list[str] | None = None,
                 bank: list[str] | None = None):
    """Reader -> decode once -> (background, per view) -> one ``augment_view`` per crop;
    outputs ``view0 .. viewN-1, labels`` (then BG_Swaps' pair)."""
    shard: dict[str, Any] = dict(shard_id=shard_id, num_shards=num_shards, random_shuffle=False,
                 pad_last_batch=True, stick_to_shard=True)
    encoded, label = fn.readers.file(files=files, labels=labels, name=READER, **shard)
    images = A.decode(encoded, device_type)
    if bg is None:
        return (*[A.augment_view(images, spec) for spec in specs], label)
    # masks and foreground-free backgrounds: files in the images' order, read alongside
    masks = A.decode(fn.readers.file(files=mask_files, **shard)[0], device_type, gray=True)
    backgrounds = A.decode(fn.readers.file(files=background_files, **shard)[0], device_type)
    pool = None
    if bank:
        encoded_bank, _ = fn.readers.file(files=bank, random_shuffle=True, initial_fill=256)
        pool = A.decode(encoded_bank, device_type)
    common: dict[str, Any] = dict(mode=bg.mode, p=bg.p, pool=pool,
                                  batch_size=Pipeline.current().max_batch_size)
    shape = fn.peek_image_shape(encoded)
    if bg.swaps:
        _, extra = A.apply_background(images, masks, backgrounds, shape, **common)
        views = [A.augment_view(images, spec) for spec in specs]
        views += [A.augment_view(x, specs[0]) for x in extra]  # BG_Swaps: appended last
    else:  # a background draw per view, each with another partner
        views = [A.augment_view(A.apply_background(images, masks, backgrounds, shape,
                                                   shift=1 + k, **common)[0], spec)
                 for k, spec in enumerate(specs)]
    return (*views, label)


class DaliTrainLoader:
    """Batches from a DALI pipeline (see the module docstring). ``stats=True`` builds the
    pipelines with DALI's executor statistics on (for ``fastssl profile``)."""

    def __init__(self, spec: LoaderSpec, *, stats: bool = False) -> None:
        self.spec, self.stats = spec, stats
        split = spec.split
        self.device_id = torch.cuda.current_device() if spec.device_type == "cuda" else None
        self.bg: BgOptions | None = spec.bg
        self.bg_skipped = 0
        self.masks: list[str] = []
        self.backgrounds: list[str] = []
        self.bank: list[str] | None = None
        if spec.bg is not None:
            masks, self.bg_skipped = resolve_masks(split, spec.bg)
            full = self._full_mask() if self.bg_skipped else ""
            self.masks = [str(m) if m is not None else full for m in masks]
            own, pool = resolve_backgrounds(split, spec.bg)
            self.backgrounds = filled_backgrounds(split, masks, own, spec.bg)
            self.bank = [str(p) for p in pool] or None
        self._pipelines: list[Any] = []
        self.batches_per_epoch = len(epoch_batches(len(split), spec.batch_size, seed=spec.seed,
                                                   epoch=0, rank=spec.rank, world=spec.world))
        self._bad: set[int] = set()
        self._checked = False
        self._replacement: dict[int, int] = {}

    def __len__(self) -> int:
        return self.batches_per_epoch

    @property
    def corrupt_count(self) -> int:
        return len(self._bad)

    @property
    def num_views(self) -> int:
        return len(self.spec.views) + (self.bg.extra_views if self.bg else 0)

    @property
    def pipelines(self) -> list[Any]:
        return self._pipelines

    def _full_mask(self) -> str:
        import tempfile

        from PIL import Image

        path = Path(tempfile.gettempdir()) / _FULL_MASK_PNG
        if not path.exists():
            Image.new("L", (1, 1), 255).save(path)
        return str(path)

    # -- bad files -------------------------------------------------------------------------
    def _mark_bad(self, i: int, why: str) -> None:
        if i not in self._bad:
            self._bad.add(i)
            log.warning("skipping unreadable image %s (%s); replaced by the next readable one",
                        self.spec.split.paths[i], why)

    def _check_files(self) -> None:
        if not self._checked:
            for i, p in enumerate(self.spec.split.paths):
                if not looks_complete(p):
                    self._mark_bad(i, "truncated or not a JPEG/PNG")
            self._checked = True
        if len(self._bad) == len(self.spec.split):
            raise RuntimeError(f"no readable image in {self.spec.split.paths[0].parent.parent}")
        self._replacement = {}
        for i in self._bad:
            j = i
            while j in self._bad:
                j = (j + 1) % len(self.spec.split)
            self._replacement[i] = j

    def _locate_bad(self, error: Exception, indices: list[int]) -> bool:
        """Find the file(s) behind a decode error among ``indices``; True if one was found."""
        found = False
        by_path = {str(self.spec.split.paths[i]): i for i in indices}
        for path in re.findall(r"Failed to decode sample #\d+ : (.+)", str(error)):
            if path.strip() in by_path:
                self._mark_bad(by_path[path.strip()], "decode failed")
                found = True
        if not found:
            for i in indices:
                if i not in self._bad and not decodes(self.spec.split.paths[i]):
                    self._mark_bad(i, "decode failed")
                    found = True
        return found

    # -- epochs ----------------------------------------------------------------------------
    def _order(self, epoch: int) -> list[int]:
        """All ranks' sample indices for the epoch, rank 0's slice first (the reader shards it)."""
        s = self.spec
        per_rank = [sum(epoch_batches(len(s.split), s.batch_size, seed=s.seed, epoch=epoch,
                                      rank=r, world=s.world), [])
                    for r in range(s.world)]
        return sum(per_rank, [])

    def _iterator(self, epoch: int, order: list[int]) -> DALIGenericIterator:
        src = [self._replacement.get(i, i) for i in order]
        files = [str(self.spec.split.paths[i]) for i in src]
        extra: dict[str, Any] = {}
        if self.stats:  # DALI 2.4 keeps executor statistics only with the static executor
            extra.update(enable_memory_stats=True, exec_dynamic=False)
        if self.bg is not None:
            extra = dict(bg=self.bg, mask_files=[self.masks[i] for i in src], bank=self.bank,
                         background_files=[self.backgrounds[i] for i in src])
        pipe = ssl_pipeline(files, [self.spec.split.labels[i] for i in order], self.spec.views,
                            shard_id=self.spec.rank, num_shards=self.spec.world,
                            device_type=self.spec.device_type, batch_size=self.spec.batch_size,
                            num_threads=max(1, self.spec.workers), device_id=self.device_id,
                            seed=derive_seed(self.spec.seed, epoch, 0,
                                             self.spec.rank) % (2**31 - 1),
                            prefetch_queue_depth=PREFETCH, **extra)
        self._pipelines = [pipe]
        names = [f"view{i}" for i in range(self.num_views)] + ["labels"]
        return DALIGenericIterator(pipe, names, reader_name=READER, auto_reset=False,
                                   last_batch_policy=LastBatchPolicy.DROP)

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        """Yield the batches ``start_batch ..`` of ``epoch``."""
        order = self._order(epoch)
        mine = order[self.spec.rank * len(order) // self.spec.world:
                     (self.spec.rank + 1) * len(order) // self.spec.world]
        done = start_batch  # batches already delivered (or to be skipped)
        while True:
            self._check_files()
            b = 0
            try:  # building the iterator already runs the first batches
                for out in self._iterator(epoch, order):
                    if b >= done:
                        d = out[0]
                        views = [d[f"view{i}"] for i in range(self.num_views)]
                        n = len(self.spec.views)
                        yield labelled(views[:n], d["labels"].reshape(-1).long(), views[n:])
                        done = b + 1
                    b += 1
                return
            except RuntimeError as e:
                if "decode" not in str(e).lower() and "Failed" not in str(e):
                    raise
                lo = b * self.spec.batch_size
                window = mine[lo:lo + (PREFETCH + 2) * self.spec.batch_size]
                if not self._locate_bad(e, [self._replacement.get(i, i) for i in window]):
                    raise
                log.warning("rebuilding the DALI pipeline of epoch %d and replaying %d batches",
                            epoch, done)

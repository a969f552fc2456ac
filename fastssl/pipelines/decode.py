"""One image decoder for the CPU loaders: PIL to a uint8 CHW tensor, unreadable files skipped."""

from __future__ import annotations

import logging
import multiprocessing as mp
from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

from fastssl.data.layout import Split

log = logging.getLogger(__name__)


def load(path: Path, mode: str = "RGB") -> torch.Tensor:
    """The image at ``path`` as a uint8 (C, H, W) tensor in PIL ``mode``."""
    with Image.open(path) as im:
        return F.pil_to_tensor(im.convert(mode))


class Decoder:
    """Decodes images of a split; a file that cannot be decoded is reported once with its path and
    replaced by the next readable image (deterministically). ``corrupt`` counts them across
    worker processes."""

    def __init__(self, split: Split) -> None:
        self.split = split
        self.corrupt = mp.Value("i", 0)
        self._bad: set[int] = set()

    def __call__(self, index: int) -> torch.Tensor:
        n = len(self.split)
        for offset in range(n):
            i = (index + offset) % n
            if i in self._bad:
                continue
            try:
                return load(self.split.paths[i])
            except (OSError, ValueError, SyntaxError) as e:
                self._bad.add(i)
                with self.corrupt.get_lock():
                    self.corrupt.value += 1
                log.warning("skipping unreadable image %s (%s)", self.split.paths[i], e)
        raise RuntimeError(f"no readable image in {self.split.paths[0].parent.parent}")

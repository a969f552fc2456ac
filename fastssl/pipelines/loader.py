"""The loader contract: one spec for every loader and the protocol the training loop and the
profiler rely on."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from fastssl.batch import Batch
from fastssl.data.layout import Split
from fastssl.pipelines.background import BgOptions
from fastssl.pipelines.clips import ClipSpec, has_sidecars
from fastssl.pipelines.views import ViewSpec


@dataclass(frozen=True)
class LoaderSpec:
    """Everything a train loader is built from (the same keywords for every loader)."""

    split: Split
    views: tuple[ViewSpec, ...]
    batch_size: int  # per process
    workers: int = 2  # DataLoader workers / DALI threads / decode threads
    seed: int = 0
    rank: int = 0
    world: int = 1
    device_type: str = "cpu"  # where the views are made when the loader can choose (dali, memory)
    bg: BgOptions | None = None  # background augmentation; None = off
    clip: ClipSpec | None = None  # video clips (the video loaders); None = images

    @property
    def provides(self) -> frozenset[str]:
        """The named inputs of every batch (``fastssl.methods.base.Batch``)."""
        if self.clip is not None:  # audio / flow when the set has their sidecars
            return frozenset({"clips", "labels", *(
                k for k in ("audio", "flow")
                if getattr(self.clip, k) and has_sidecars(self.split, k))})
        extra = {"bg_positive", "bg_negative"} if self.bg is not None and self.bg.swaps else set()
        return frozenset({"views", "labels", *extra})


class TrainLoader(Protocol):
    """What ``fastssl train`` and ``fastssl profile`` use of a loader."""

    spec: LoaderSpec

    def __len__(self) -> int:
        """Steps per epoch."""
        ...

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        """The batches ``start_batch ..`` of ``epoch`` (a pure function of seed and epoch)."""
        ...

    @property
    def corrupt_count(self) -> int:
        """Unreadable files skipped so far."""
        ...

    @property
    def pipelines(self) -> list[Any]:
        """The DALI pipelines currently built (empty for the other loaders)."""
        ...


def labelled(views: list[Any], labels: Any, extra: list[Any]) -> Batch:
    """A batch from the views, the labels and BG_Swaps' (positive, negative) when present."""
    batch: Batch = {"views": views, "labels": labels}
    if extra:
        batch["bg_positive"], batch["bg_negative"] = extra
    return batch

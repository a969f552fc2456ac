"""kNN of an encoder on a data set's held-out split, and ``fastssl eval`` on a checkpoint."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import DataLoader

from fastssl.config import Config
from fastssl.data import dataset_index
from fastssl.data.layout import DatasetIndex, Split, is_video, scan
from fastssl.distributed import resolve_device
from fastssl.eval.bg_shift import bg_shift_knn
from fastssl.eval.features import extract
from fastssl.eval.knn import knn_top1
from fastssl.eval.linear import linear_top1
from fastssl.eval.rank import effective_rank
from fastssl.methods import load_method
from fastssl.methods.base import Method
from fastssl.pipelines.clips import ClipSpec, clip_spec
from fastssl.pipelines.torch_loader import eval_loader
from fastssl.pipelines.video import eval_clip_loader

DEFAULT_CLIP = ClipSpec()


def features(embed: Callable[[torch.Tensor], torch.Tensor], index: DatasetIndex, *,
             crop_size: int, workers: int, device: torch.device, clip: ClipSpec = DEFAULT_CLIP
             ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Frozen features and labels of the train and held-out splits (centre clips of a video
    set)."""
    def loader(split: Split) -> DataLoader:
        if is_video(split.paths[0]):
            return eval_clip_loader(split, clip, crop_size, workers=workers)
        return eval_loader(split, crop_size, workers=workers)

    return extract(embed, loader(index.train), device), extract(embed, loader(index.val), device)


@torch.no_grad()
def knn_of_model(model: Method, index: DatasetIndex, *, crop_size: int, workers: int, k: int,
                 temperature: float, device: torch.device, clip: ClipSpec = DEFAULT_CLIP
                 ) -> float:
    """Weighted kNN top-1 (%) of the method's ``embed`` (evaluation mode meanwhile)."""
    was_training = model.training
    model.eval()
    try:
        train, test = features(model.embed, index, crop_size=crop_size, workers=workers,
                               device=device, clip=clip)
    finally:
        model.train(was_training)
    return knn_top1(*train, *test, k=k, temperature=temperature)


def _frozen(path: str, data: str | None, device: str
            ) -> tuple[Method, Config, DatasetIndex, torch.device]:
    """A checkpoint's method in evaluation mode on ``device``, its config and the data set (its
    run's unless ``data`` names another)."""
    model, cfg = load_method(path)
    dev = resolve_device(device)
    model.to(dev).eval()
    return model, cfg, scan(data) if data else dataset_index(cfg.data), dev


PROTOCOLS = ("knn", "linear", "rank")


def checkpoint_scores(path: str, protocols: list[str], *, data: str | None = None,
                      device: str = "auto", workers: int = 2) -> dict[str, float]:
    """Each of ``protocols`` on a checkpoint's frozen backbone, from one feature extraction:
    ``knn`` and ``linear`` top-1 (%) on the held-out split, ``rank`` the effective rank of the
    training split's features."""
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        raise ValueError(f"unknown protocol {unknown[0]!r}: choose from {', '.join(PROTOCOLS)}")
    model, cfg, index, dev = _frozen(path, data, device)
    train, test = features(model.embed, index, crop_size=cfg.crop_size, workers=workers,
                           device=dev, clip=clip_spec(cfg))
    score = {"knn": lambda: knn_top1(*train, *test, k=cfg.knn_k, temperature=cfg.knn_temperature),
             "linear": lambda: linear_top1(*train, *test),
             "rank": lambda: effective_rank(train[0])}
    return {p: score[p]() for p in protocols}


def evaluate_checkpoint(path: str, protocol: str, *, data: str | None = None,
                        device: str = "auto", workers: int = 2) -> float:
    """One protocol of :func:`checkpoint_scores`, in one process."""
    return checkpoint_scores(path, [protocol], data=data, device=device, workers=workers)[protocol]


def bg_shift_checkpoint(path: str, shifts: list[str], *, data: str | None = None,
                        device: str = "auto", workers: int = 2) -> dict[str, float]:
    """``bg_shift_knn`` of a checkpoint (its config's crop size and kNN settings)."""
    model, cfg, index, dev = _frozen(path, data, device)
    return bg_shift_knn(model.embed, index, shifts, crop_size=cfg.crop_size, k=cfg.knn_k,
                        temperature=cfg.knn_temperature, device=dev, workers=workers)

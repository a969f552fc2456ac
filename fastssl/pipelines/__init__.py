"""One loader interface for the training loop, whichever pipeline produces the batches.

A train loader has ``len(loader)`` (steps per epoch), ``loader.epoch(e, start_batch=0)`` (an
iterator of ``(views, labels)``: a list of (B, 3, H, W) float tensors, global crops first) and
``loader.corrupt_count`` (unreadable files skipped so far).
"""

from __future__ import annotations

from fastssl.data.layout import Split
from fastssl.pipelines.views import ViewSpec


def resolve_loader(name: str, device_type: str) -> str:
    if name == "auto":
        return "dali" if device_type == "cuda" else "torch"
    return name


def build_train_loader(name: str, split: Split, specs: list[ViewSpec], *, batch_size: int,
                       workers: int, seed: int, rank: int = 0, world: int = 1,
                       device_type: str = "cpu", **options):
    """``name`` is ``torch`` or ``dali``; ``options`` are pipeline-specific (e.g. masks)."""
    if name == "torch":
        from fastssl.pipelines.torch_loader import TorchTrainLoader

        return TorchTrainLoader(split, specs, batch_size=batch_size, workers=workers, seed=seed,
                                rank=rank, world=world, **options)
    if name == "dali":
        from fastssl.pipelines.dali import DaliTrainLoader

        return DaliTrainLoader(split, specs, batch_size=batch_size, workers=workers, seed=seed,
                               rank=rank, world=world, device_type=device_type, **options)
    raise ValueError(f"unknown loader '{name}' (choose from auto, dali, torch)")

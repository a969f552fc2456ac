"""One loader interface for the training loop, whichever pipeline produces the batches.

A train loader has ``len(loader)`` (steps per epoch), ``loader.epoch(e, start_batch=0)`` (an
iterator of ``(views, labels)``: a list of (B, 3, H, W) float tensors, global crops first) and
``loader.corrupt_count`` (unreadable files skipped so far).
"""

from __future__ import annotations

import importlib.util

from fastssl.data.layout import Split, image_size
from fastssl.pipelines.views import ViewSpec

LOADERS = ("auto", "memory", "dali", "torch")
# ``auto`` on the CPU decodes sets up to this size into memory (the embedded sets are ~60 MiB)
MEMORY_AUTO_BYTES = 2 * 2**30


def _image_size(path) -> tuple[int, int] | None:
    try:
        return image_size(path)
    except (OSError, ValueError):
        return None  # unreadable: the loader reports it, not this check


def _memory_fits(split: Split, specs: list[ViewSpec], options: dict) -> bool:
    """Whether ``auto`` may pick the memory loader: it implements the views and background mode,
    the decoded set is at most ``MEMORY_AUTO_BYTES`` and all images have one size."""
    from fastssl.pipelines.memory import check_specs

    try:
        check_specs(specs, options.get("bg"))
    except ValueError:
        return False
    first = _image_size(split.paths[0])
    if first is None or 3 * first[0] * first[1] * len(split) > MEMORY_AUTO_BYTES:
        return False
    sizes = {_image_size(p) for p in split.paths} - {None}
    return sizes == {first}


def resolve_loader(name: str, device_type: str, split: Split, specs: list[ViewSpec],
                   **options) -> str:
    """``auto``: DALI on CUDA when it is installed; otherwise the memory loader when the set
    fits (see ``_memory_fits``), else torchvision. The training log names the choice."""
    if name != "auto":
        return name
    if device_type == "cuda" and importlib.util.find_spec("nvidia.dali") is not None:
        return "dali"
    return "memory" if _memory_fits(split, specs, options) else "torch"


def build_train_loader(name: str, split: Split, specs: list[ViewSpec], *, batch_size: int,
                       workers: int, seed: int, rank: int = 0, world: int = 1,
                       device_type: str = "cpu", **options):
    """``name`` is ``memory``, ``torch`` or ``dali``; ``options`` are pipeline-specific (e.g.
    background masks)."""
    common = dict(batch_size=batch_size, workers=workers, seed=seed, rank=rank, world=world)
    if name == "memory":
        from fastssl.pipelines.memory import MemoryTrainLoader

        return MemoryTrainLoader(split, specs, device_type=device_type, **common, **options)
    if name == "torch":
        from fastssl.pipelines.torch_loader import TorchTrainLoader

        return TorchTrainLoader(split, specs, **common, **options)
    if name == "dali":
        from fastssl.pipelines.dali import DaliTrainLoader

        return DaliTrainLoader(split, specs, device_type=device_type, **common, **options)
    raise ValueError(f"unknown loader '{name}' (choose from {', '.join(LOADERS)})")

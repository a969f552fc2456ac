"""One loader interface for the training loop, whichever pipeline produces the batches.

Every loader is built from a :class:`LoaderSpec` and satisfies :class:`TrainLoader`: ``len``
(steps per epoch), ``epoch(e, start_batch=0)`` (an iterator of ``fastssl.batch.Batch``: image
``views`` global crops first, ``labels``, and BG_Swaps' extra views when on), ``corrupt_count``
and ``pipelines`` (DALI's, for the profiler).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

from fastssl.config import LOADERS
from fastssl.data.layout import Split, image_size, is_video
from fastssl.pipelines.background import BgOptions
from fastssl.pipelines.loader import LoaderSpec, TrainLoader
from fastssl.pipelines.memory import MemoryTrainLoader, check_specs
from fastssl.pipelines.torch_loader import TorchTrainLoader
from fastssl.pipelines.video import FallbackVideoLoader
from fastssl.pipelines.views import ViewSpec

__all__ = ["LoaderSpec", "TrainLoader", "available_loaders", "build_train_loader",
           "dali_available", "resolve_loader"]

# ``auto`` on the CPU decodes sets up to this size into memory (the embedded sets are ~60 MiB)
MEMORY_AUTO_BYTES = 2 * 2**30


def dali_available() -> bool:
    return importlib.util.find_spec("nvidia.dali") is not None


def _image_size(path) -> tuple[int, int] | None:
    try:
        return image_size(path)
    except (OSError, ValueError):
        return None  # unreadable: the loader reports it, not this check


def _memory_fits(split: Split, specs: Sequence[ViewSpec], bg: BgOptions | None) -> bool:
    """Whether ``auto`` may pick the memory loader: it implements the views and background mode,
    the decoded set is at most ``MEMORY_AUTO_BYTES`` and all images have one size."""
    try:
        check_specs(specs, bg)
    except ValueError:
        return False
    first = _image_size(split.paths[0])
    if first is None or 3 * first[0] * first[1] * len(split) > MEMORY_AUTO_BYTES:
        return False
    sizes = {_image_size(p) for p in split.paths} - {None}
    return sizes == {first}


def resolve_loader(name: str, device_type: str, split: Split, specs: Sequence[ViewSpec],
                   bg: BgOptions | None = None) -> str:
    """``auto``: DALI on CUDA when it is installed; otherwise the memory loader when the set
    fits (see ``_memory_fits``), else torchvision. The training log names the choice."""
    if name != "auto":
        return name
    if split.paths and is_video(split.paths[0]):
        return "video"
    if device_type == "cuda" and dali_available():
        return "dali"
    return "memory" if _memory_fits(split, specs, bg) else "torch"


def available_loaders(spec: LoaderSpec) -> list[str]:
    """The loaders that can make ``spec``'s batches on this machine."""
    if spec.clip is not None:
        return ["video"]
    names = ["memory"] if _memory_fits(spec.split, spec.views, spec.bg) else []
    return names + ["torch"] + (["dali"] if dali_available() else [])


def build_train_loader(name: str, spec: LoaderSpec, *, stats: bool = False) -> TrainLoader:
    """``name`` is ``memory``, ``torch`` or ``dali``; ``stats`` turns on DALI's executor
    statistics (the profiler's)."""
    if name == "memory":
        return MemoryTrainLoader(spec)
    if name == "torch":
        return TorchTrainLoader(spec)
    if name == "video":  # DALI when installed (CPU VP9 / NVDEC), else the FFmpeg fallback
        if not dali_available():
            return FallbackVideoLoader(spec)
        from fastssl.pipelines.video_dali import DaliVideoLoader

        return DaliVideoLoader(spec)
    if name == "dali":
        if not dali_available():
            raise ValueError("--loader dali needs nvidia-dali (pip install nvidia-dali-cuda130)")
        from fastssl.pipelines.dali import DaliTrainLoader  # optional dependency, slow import

        return DaliTrainLoader(spec, stats=stats)
    raise ValueError(f"unknown loader '{name}' (choose from {', '.join(LOADERS)})")

"""Per-operator costs of the torchvision loader (each transform timed alone, per sample, one
thread) and DALI's executor statistics; DALI's per-operator costs are in ``dali_ops``."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms import v2 as T

from fastssl.pipelines import TrainLoader
from fastssl.pipelines.torch_loader import view_transform
from fastssl.pipelines.views import ViewSpec


def torch_operator_costs(paths: Sequence[Path], specs: Sequence[ViewSpec], *,
                         samples: int = 32) -> list[dict]:
    """Per-sample CPU cost of each torchvision operator (decode, crop, jitter, ...), measured
    in this process on ``samples`` images: where one loader worker spends its time."""
    def name(t) -> str:
        if isinstance(t, T.RandomApply):
            return "+".join(type(x).__name__ for x in t.transforms)
        return type(t).__name__

    torch.manual_seed(0)
    paths = list(paths)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker
    try:
        counts = Counter(specs)  # identical views (SwAV's local crops) are timed once
        return _time_transforms(paths[:samples], [(view_transform(s).transforms, n)
                                                  for s, n in counts.items()], name)
    finally:
        torch.set_num_threads(threads)


def _time_transforms(paths: list, pipelines: list[tuple[list, int]],
                     name: Callable[[object], str]) -> list[dict]:
    """Per-operator time of each (transforms, how many views use them) on ``paths``."""
    costs: dict[str, float] = {}
    with torch.inference_mode():
        for p in paths:
            t = time.perf_counter()
            with Image.open(p) as im:
                image = T.functional.pil_to_tensor(im.convert("RGB"))
            costs["decode (PIL)"] = costs.get("decode (PIL)", 0.0) + time.perf_counter() - t
            for ops, count in pipelines:
                x = image
                for op in ops:
                    t = time.perf_counter()
                    x = op(x)
                    costs[name(op)] = (costs.get(name(op), 0.0)
                                       + count * (time.perf_counter() - t))
    total = sum(costs.values()) or 1.0
    rows = [{"name": k, "ms_per_sample": 1000 * v / len(paths), "share": v / total}
            for k, v in costs.items()]
    return sorted(rows, key=lambda r: -r["ms_per_sample"])


def dali_executor_statistics(loader: TrainLoader) -> dict | None:
    """DALI's per-operator executor statistics of the loader's current pipelines.

    DALI 2.4 reports per-operator output memory (``real_memory_size``, ``reserved_memory_size``,
    ...) when the pipeline was built with ``enable_memory_stats=True`` and
    ``exec_dynamic=False`` (``build_train_loader(..., stats=True)``); it has no per-operator
    timing API (timing is in its NVTX ranges, seen with Nsight Systems). Returns None when
    nothing is available.
    """
    pipes = loader.pipelines
    out = {}
    for i, pipe in enumerate(pipes):
        try:
            stats = pipe.executor_statistics()
        except Exception:  # noqa: BLE001 - optional diagnostics, any DALI error means "none"
            continue
        for op, values in (stats or {}).items():
            out[op if len(pipes) == 1 else f"{i}/{op}"] = {
                k: [int(x) for x in v] if isinstance(v, (list, tuple)) else v
                for k, v in values.items()}
    return out or None

"""Dataset layout, validation and the embedded (generated or bundled) data sets."""

from __future__ import annotations

import torch.distributed as dist

from fastssl.data.layout import DatasetIndex, scan
from fastssl.data.synth import default_dataset
from fastssl.distributed import is_distributed


def dataset_index(data: str, rank: int = 0) -> DatasetIndex:
    """The index of ``data``, or of the embedded shapes set when it is empty (generated once, by
    rank 0 while the other processes wait)."""
    if not data and rank == 0:
        default_dataset()
    if is_distributed():
        dist.barrier()
    return scan(data or default_dataset())

"""fastssl: high-throughput self-supervised pretraining for PyTorch.

Kept import-light on purpose: ``import fastssl.kernels`` must need only torch and triton, so the
public functions below import what they need when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

__version__ = "0.1.0"


def load_backbone(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """A backbone written by ``fastssl export`` (in eval mode) and the preprocessing it was
    trained with (resize, centre crop, mean, std); see ``fastssl.export``."""
    from fastssl.export import load_backbone as load

    return load(path)

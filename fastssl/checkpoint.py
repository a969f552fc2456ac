"""Atomic checkpoints: everything a killed run needs to resume exactly where it stopped."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

# Version of the checkpoint layout (the keys below and what they hold). A checkpoint without a
# "format" key predates the field and has layout 1.
FORMAT_VERSION = 1

def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(obj: Any, path: str | Path) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``: a reader
    (or a crash) sees either the old checkpoint or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # a truncated or foreign file
        raise ValueError(f"cannot read checkpoint {path}: {e}") from None


def check(state: Any, path: str | Path, required: tuple[str, ...] = ("model", "config")) -> None:
    """One-line ``ValueError`` naming ``path`` unless ``state`` is a checkpoint of this layout
    version holding ``required``."""
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a fastssl checkpoint (it holds a "
                         f"{type(state).__name__}, not a dict)")
    version = state.get("format", 1)
    if version != FORMAT_VERSION:
        raise ValueError(f"checkpoint {path} has format version {version} (written by fastssl "
                         f"{state.get('fastssl_version', 'unknown')}); this fastssl reads "
                         f"version {FORMAT_VERSION}")
    missing = [key for key in required if key not in state]
    if missing:
        raise ValueError(f"{path} is not a fastssl checkpoint (no {', '.join(map(repr, missing))})")

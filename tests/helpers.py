"""Shared test helpers: tiny data sets and CLI runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fastssl.data.synth import synth_shapes

TINY = ["--backbone=small_cnn", "--crop_size=16", "--batch_size=16", "--workers=0",
        "--proj_hidden_dim=32", "--proj_dim=16", "--knn_k=5", "--progress=false"]


def tiny_shapes(root: Path, per_class: int = 8) -> Path:
    """A 10-class shapes set with ``per_class`` train and 2 val images of 32 px."""
    return synth_shapes(root / "shapes", train_per_class=per_class, val_per_class=2, size=32)


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of CLI runs in tests: one intra-op thread (reproducible reductions)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", **extra}


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300,
            env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastssl.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd, env=cli_env(**(env or {})))

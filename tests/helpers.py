"""Shared test helpers: tiny data sets and CLI runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from fastssl.config import load_preset
from fastssl.data.synth import synth_shapes
from fastssl.methods import Method, MethodContext, build_method, get_method, resolve_config
from fastssl.pipelines import LoaderSpec, build_train_loader

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


def make_method(name: str = "simclr", *, config: str | None = None, steps_per_epoch: int = 5,
                world_size: int = 1, inputs: tuple[str, ...] = ("views", "labels"),
                seed: int = 0, **overrides) -> tuple:
    """``(cfg, method)`` built as ``fastssl.train.setup`` does, from a preset and overrides."""
    preset = load_preset(config) if config else None
    if config is None:
        overrides = {"method": name, **overrides}
    cfg = resolve_config(preset, overrides)
    ctx = MethodContext.from_config(cfg, steps_per_epoch=steps_per_epoch,
                                    inputs={*inputs, *get_method(cfg.method).inputs},
                                    world_size=world_size)
    torch.manual_seed(seed)
    model: Method = build_method(cfg, ctx)
    return cfg, model


def make_loader(name: str, split, views, **kw):
    """``build_train_loader`` from a split, its view specs and ``LoaderSpec`` keywords."""
    return build_train_loader(name, LoaderSpec(split, tuple(views), **kw))

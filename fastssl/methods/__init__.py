"""Method registry: ``METHODS``, ``get_method(name)``, ``build_method(cfg, ctx)`` and the config
resolution that needs the methods' ``Args`` (``resolve_config``, ``config_from_dict``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastssl import checkpoint
from fastssl.batch import Batch
from fastssl.config import (
    Config,
    ConfigError,
    from_dict,
    help_text,
    load_preset,
    parse_overrides,
    resolve,
)
from fastssl.methods.av_contrastive import AVContrastive
from fastssl.methods.barlow_twins import BarlowTwins
from fastssl.methods.base import Method, MethodContext, Outputs
from fastssl.methods.byol import BYOL
from fastssl.methods.elo import Elo
from fastssl.methods.mocov2 import MoCoV2
from fastssl.methods.mocov3 import MoCoV3
from fastssl.methods.simclr import SimCLR, SimCLRv2
from fastssl.methods.simsiam import SimSiam
from fastssl.methods.swav import SwAV

__all__ = ["METHODS", "Batch", "Method", "MethodContext", "Outputs", "build_method",
           "config_from_dict", "get_method", "load_method", "options_help", "resolve_config"]

METHODS: dict[str, type[Method]] = {
    cls.name: cls
    for cls in (SimCLR, SimCLRv2, BYOL, SimSiam, BarlowTwins, SwAV, MoCoV2, MoCoV3,
                AVContrastive, Elo)
}


def get_method(name: str) -> type[Method]:
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown method '{name}' (choose from {', '.join(sorted(METHODS))})") \
            from None


def build_method(cfg: Config, ctx: MethodContext) -> Method:
    return get_method(cfg.method)(cfg.args, ctx)


def resolve_config(preset: dict[str, Any] | None = None,
                   overrides: dict[str, Any] | None = None) -> Config:
    """``fastssl.config.resolve`` over the registered methods."""
    return resolve(preset, overrides, METHODS)


def options_help(tokens: list[str]) -> str:
    """Every option of ``Config`` and of the method that ``tokens`` (command-line options, maybe
    with ``--config PRESET``) choose, for ``--help``."""
    overrides = parse_overrides([t for t in tokens if t not in ("-h", "--help")])
    preset = load_preset(overrides["config"]) if "config" in overrides else {}
    method = str(overrides.get("method", preset.get("method", Config.method)))
    cls = get_method(method)
    return help_text(cls.Args, method, cls.config_defaults)


def load_method(path: str | Path) -> tuple[Method, Config]:
    """The method of a ``fastssl train`` checkpoint (in one process, on the CPU) and its config;
    one-line errors for a file that is not a checkpoint of this format."""
    state = checkpoint.load(path)
    checkpoint.check(state, path)
    cfg = config_from_dict(state["config"])
    ctx = MethodContext.from_config(cfg, steps_per_epoch=1,
                                    inputs={*get_method(cfg.method).inputs, "labels"})
    model = build_method(cfg, ctx)
    model.load_state_dict(state["model"])
    return model, cfg


def config_from_dict(d: dict[str, Any]) -> Config:
    """A config saved with ``Config.to_dict`` (e.g. in a checkpoint)."""
    return from_dict(d, METHODS)

"""Method registry: ``METHODS``, ``get_method(name)``, ``build_method(cfg, ctx)`` and the config
resolution that needs the methods' ``Args`` (``resolve_config``, ``config_from_dict``)."""

from __future__ import annotations

from typing import Any

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
from fastssl.methods.mocov2 import MoCoV2
from fastssl.methods.mocov3 import MoCoV3
from fastssl.methods.simclr import SimCLR, SimCLRv2
from fastssl.methods.simsiam import SimSiam
from fastssl.methods.swav import SwAV

__all__ = ["METHODS", "Batch", "Method", "MethodContext", "Outputs", "build_method",
           "config_from_dict", "get_method", "options_help", "resolve_config"]

METHODS: dict[str, type[Method]] = {
    cls.name: cls
    for cls in (SimCLR, SimCLRv2, BYOL, SimSiam, BarlowTwins, SwAV, MoCoV2, MoCoV3,
                AVContrastive)
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


def config_from_dict(d: dict[str, Any]) -> Config:
    """A config saved with ``Config.to_dict`` (e.g. in a checkpoint)."""
    return from_dict(d, METHODS)

"""Method registry: ``get_method(name)`` and ``build_method(cfg)``."""

from __future__ import annotations

from fastssl.methods.barlow_twins import BarlowTwins
from fastssl.methods.base import Method
from fastssl.methods.byol import BYOL
from fastssl.methods.mocov2 import MoCoV2
from fastssl.methods.mocov3 import MoCoV3
from fastssl.methods.simclr import SimCLR, SimCLRv2
from fastssl.methods.simsiam import SimSiam
from fastssl.methods.swav import SwAV

METHODS: dict[str, type[Method]] = {
    cls.name: cls
    for cls in (SimCLR, SimCLRv2, BYOL, SimSiam, BarlowTwins, SwAV, MoCoV2, MoCoV3)
}


def get_method(name: str) -> type[Method]:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method '{name}' (choose from {', '.join(sorted(METHODS))})") \
            from None


def build_method(cfg) -> Method:
    return get_method(cfg.method)(cfg)

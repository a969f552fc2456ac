"""Method registry: ``get_method(name)`` and ``build_method(cfg)``."""

from __future__ import annotations

from fastssl.methods.base import Method
from fastssl.methods.simclr import SimCLR

METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (SimCLR,)}


def get_method(name: str) -> type[Method]:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method '{name}' (choose from {', '.join(sorted(METHODS))})") \
            from None


def build_method(cfg) -> Method:
    return get_method(cfg.method)(cfg)

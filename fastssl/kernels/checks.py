"""Up-front argument checks of the public losses, shared by every backend.

Each check raises ``ValueError("<function>: <argument> ... got <value>, needs <requirement>")``
before any backend runs, so a wrong call fails the same way on CPU, GPU and under
``torch.compile`` (the checks read only shapes, dtypes, devices and Python scalars).
"""

from __future__ import annotations

import math

import torch


def matrix(fn: str, name: str, x: object, min_rows: int = 1) -> torch.Tensor:
    """``x`` is a floating-point tensor of shape rows×D with rows >= min_rows and D >= 1."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{fn}: {name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{fn}: {name} must be 2-D (rows × features), got shape "
                         f"{tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{fn}: {name} must have a floating dtype, got {x.dtype}")
    if x.shape[0] < min_rows or x.shape[1] < 1:
        need = f"at least {min_rows} row{'s' if min_rows > 1 else ''} and 1 feature"
        raise ValueError(f"{fn}: {name} is empty or too small, got shape {tuple(x.shape)}, "
                         f"needs {need}")
    return x


def same_shape(fn: str, names: tuple[str, str], a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{fn}: {names[1]} must have the shape of {names[0]} "
                         f"{tuple(a.shape)}, got {tuple(b.shape)}")


def same_device(fn: str, tensors: dict[str, torch.Tensor]) -> None:
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        listed = ", ".join(f"{n} on {d}" for n, d in devices.items())
        raise ValueError(f"{fn}: all tensors must be on one device, got {listed}")


def positive(fn: str, name: str, value: object) -> float:
    """A finite real number > 0 (bool is not a number here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{fn}: {name} must be a float, got {type(value).__name__} {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{fn}: {name} must be finite and > 0, got {value!r}")
    return float(value)


def non_negative(fn: str, name: str, value: object) -> float:
    """A finite real number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{fn}: {name} must be a float, got {type(value).__name__} {value!r}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{fn}: {name} must be finite and >= 0, got {value!r}")
    return float(value)


def count(fn: str, name: str, value: object, minimum: int) -> int:
    """An int >= minimum."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{fn}: {name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{fn}: {name} must be >= {minimum}, got {value}")
    return value


def flag(fn: str, name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{fn}: {name} must be a bool, got {type(value).__name__} {value!r}")
    return value

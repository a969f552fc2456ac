"""Typed run configuration.

Resolution order: ``Config`` defaults (small, CPU-friendly) -> the method's ``config_defaults`` ->
a YAML preset (``--config``) -> ``--key=value`` overrides. Keys that are not ``Config`` fields
belong to the chosen method's ``Args`` dataclass (its paper hyper-parameters). Unknown keys and
values of the wrong type are rejected with a one-line error naming the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fastssl.pipelines import LOADERS

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(ValueError):
    """A bad key or value in a preset or override."""


@dataclass
class Config:
    # run
    method: str = "simclr"
    data: str = ""  # dataset root; "" = the embedded shapes set (generated once, cached)
    out: str = "runs/latest"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    compile: str = "auto"  # auto (on for CUDA) | on | off
    deterministic: bool = False
    # NHWC model and views: faster convolutions (oneDNN on CPU: ~30% per step on small_cnn;
    # tensor cores on CUDA)
    channels_last: bool = True
    resume: bool = False
    # data
    # auto | memory | dali | torch (auto: dali on CUDA when installed, else memory when the
    # decoded set fits in 2 GiB, its images have one size and the views allow it, else torch)
    loader: str = "auto"
    workers: int = 2  # DataLoader workers / DALI threads
    batch_size: int = 256  # global batch (split over processes)
    views: str = ""  # augmentation preset; "" = the method's
    crop_size: int = 32
    global_crops: int = 2
    global_scale: tuple[float, float] = (0.2, 1.0)
    local_crops: int = 0
    local_crop_size: int = 16
    local_scale: tuple[float, float] = (0.05, 0.2)
    # background augmentation (Ryali et al. 2021; fastssl.pipelines.background): none | rm |
    # random | swaps, its probability, an optional directory of background images, and what to
    # do for an image without a usable mask in DIR/masks/ (error | skip: keep its background)
    bg_mode: str = "none"
    bg_p: float = 0.5
    bg_bank: str = ""
    bg_missing_mask: str = "error"
    # model
    backbone: str = "small_cnn"  # small_cnn | resnet18 | resnet50 | vit_s | vit_b
    small_stem: bool = True  # 3x3 stride-1 stem without max-pool for small images
    sync_bn: bool = False
    # optimisation
    # the defaults are sized for `make demo` (SimCLR, small_cnn, shapes set): about 4 minutes of
    # training on 2 CPU cores; the paper settings are in configs/
    epochs: int = 20
    optimizer: str = "adamw"  # sgd | adamw | lars
    lr: float = 2e-3  # base learning rate, scaled by lr_scaling
    lr_scaling: str = "linear"  # linear (lr * B / 256) | sqrt (lr * sqrt(B)) | none
    weight_decay: float = 1e-6
    momentum: float = 0.9
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.2  # the cosine schedule ends at lr * min_lr_ratio
    clip_grad: float = 0.0  # 0 = off
    # logging and evaluation
    log_every: int = 10
    eval_every: int = 10  # epochs; 0 = only at the end
    knn_k: int = 200
    knn_temperature: float = 0.07
    checkpoint_every: int = 0  # epochs between periodic copies of last.pt; 0 = off
    progress: bool = True
    # the method's own hyper-parameters (instance of its Args dataclass)
    args: Any = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "args"}
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}
        if self.args is not None:
            out.update(_plain(dataclasses.asdict(self.args)))
        return out


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def coerce(key: str, value: Any, typ: Any) -> Any:
    """Check ``value`` against the annotation ``typ`` (strings from the command line are parsed)."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        last = None
        for t in typing.get_args(typ):
            try:
                return coerce(key, value, t)
            except ConfigError as e:
                last = e
        raise last  # type: ignore[misc]
    if typ is type(None):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        raise ConfigError(f"config key '{key}': expected null, got {value!r}")
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.strip("()[] ").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or len(value) != len(typing.get_args(typ)):
            raise ConfigError(f"config key '{key}': expected {len(typing.get_args(typ))} values, "
                              f"got {value!r}")
        return tuple(coerce(key, v, t) for v, t in zip(value, typing.get_args(typ), strict=True))
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0",
                                                        "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"config key '{key}': expected true/false, got {value!r}")
    if typ is int:
        if isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        try:
            return int(str(value))
        except ValueError:
            raise ConfigError(f"config key '{key}': expected an integer, got {value!r}") from None
    if typ is float:
        if isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}") from None
    if typ is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
    raise ConfigError(f"config key '{key}': unsupported type {typ}")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def parse_overrides(tokens: list[str]) -> dict[str, str]:
    """Command-line options to overrides: ``--key=value``, ``--key value`` and a bare ``--flag``
    (``true``); dashes in keys become underscores.

    ``["--lr=0.1", "--epochs", "3", "--resume"]``
    -> ``{"lr": "0.1", "epochs": "3", "resume": "true"}``
    """
    out, i = {}, 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--") or tok == "--" or tok.startswith("--="):
            raise ConfigError(f"unexpected argument '{tok}' (options are --key=value)")
        key, sep, value = tok[2:].partition("=")
        if not sep:
            if i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
                value = tokens[i + 1]
                i += 1
            else:
                value = "true"
        out[key.replace("-", "_")] = value
        i += 1
    return out


def load_preset(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.exists() and (CONFIG_DIR / f"{path}.yaml").exists():
        p = CONFIG_DIR / f"{path}.yaml"
    if not p.is_file():
        raise ConfigError(f"config preset not found: {path}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of config keys")
    return data


def resolve(preset: dict[str, Any] | None = None,
            overrides: dict[str, Any] | None = None) -> Config:
    """Build the typed config for a run (see the module docstring for the order)."""
    from fastssl.methods import get_method  # late import: methods import models, not config

    layers = [preset or {}, overrides or {}]
    method = Config.method
    for layer in layers:
        method = str(layer.get("method", method))
    cls = get_method(method)
    general = _hints(Config)
    args_hints = _hints(cls.Args)
    values: dict[str, Any] = {}
    args_values: dict[str, Any] = {}
    for layer in [cls.config_defaults, *layers]:
        for key, value in layer.items():
            if key == "args":
                raise ConfigError("config key 'args' is reserved")
            if key in general:
                values[key] = coerce(key, value, general[key])
            elif key in args_hints:
                args_values[key] = coerce(key, value, args_hints[key])
            else:
                raise ConfigError(f"unknown config key '{key}' (not a general key nor one of "
                                  f"method '{method}': {', '.join(sorted(args_hints)) or 'none'})")
    values["method"] = method
    cfg = Config(**values)
    cfg.args = cls.Args(**args_values)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    choices = {
        "device": ("auto", "cpu", "cuda"),
        "compile": ("auto", "on", "off"),
        "loader": LOADERS,
        "optimizer": ("sgd", "adamw", "lars"),
        "lr_scaling": ("linear", "sqrt", "none"),
        "bg_mode": ("none", "rm", "random", "swaps"),
        "bg_missing_mask": ("error", "skip"),
    }
    for key, allowed in choices.items():
        if getattr(cfg, key) not in allowed:
            raise ConfigError(f"config key '{key}': {getattr(cfg, key)!r} is not one of "
                              f"{', '.join(allowed)}")
    for key in ("batch_size", "epochs", "crop_size", "global_crops", "log_every"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"config key '{key}' must be >= 1, got {getattr(cfg, key)}")
    for key in ("global_scale", "local_scale"):
        lo, hi = getattr(cfg, key)
        if not 0 < lo <= hi <= 1:
            raise ConfigError(f"config key '{key}' must satisfy 0 < min <= max <= 1, got {lo, hi}")
    if not 0 <= cfg.bg_p <= 1:
        raise ConfigError(f"config key 'bg_p' must be in [0, 1], got {cfg.bg_p}")


def save(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def from_dict(d: dict[str, Any]) -> Config:
    """Rebuild a config saved with ``to_dict`` (e.g. from a checkpoint)."""
    return resolve(d)

"""Typed run configuration.

Resolution order: ``Config`` defaults (small, CPU-friendly) -> the method's ``config_defaults`` ->
a YAML preset (``--config``) -> ``--key=value`` overrides. Keys that are not ``Config`` fields
belong to the chosen method's ``Args`` dataclass (its paper hyper-parameters). Unknown keys and
values of the wrong type are rejected with a one-line error naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(ValueError):
    """A bad key or value in a preset or override."""


def opt(default: Any, help: str) -> Any:
    """A config field with its one-line description (shown by ``--help``)."""
    return field(default=default, metadata={"help": help})


LOADERS = ("auto", "memory", "dali", "torch", "video")
COLOUR_RECIPES = ("sequential", "twist")  # fastssl.pipelines.colour
BG_MODES = ("none", "rm", "random", "swaps")

# ``--help`` groups: (title, first field of the group), in declaration order
GROUPS = (("run", "method"), ("data", "loader"), ("background augmentation", "bg_mode"),
          ("model", "backbone"), ("optimisation", "epochs"),
          ("logging and evaluation", "log_every"))


@dataclass
class Config:
    # run
    method: str = opt("simclr", "method to train (fastssl train --method NAME --help: its options)")
    data: str = opt("", "dataset root; empty = the embedded shapes set (generated once, cached)")
    out: str = opt("runs/latest", "run directory: metrics, checkpoints, config")
    seed: int = opt(0, "random seed (weights, epoch order, views)")
    device: str = opt("auto", "auto | cpu | cuda")
    compile: str = opt("auto", "torch.compile the step: auto (on for CUDA) | on | off")
    threads: int = opt(0, "CPU intra-op threads of each training process; 0 = auto (on CPU: "
                       "the cores left after the loader's workers, at least 1)")
    deterministic: bool = opt(False, "deterministic algorithms (bit-exact resume on one machine)")
    # NHWC model and views: faster convolutions (oneDNN on CPU: ~30% per step on small_cnn;
    # tensor cores on CUDA)
    channels_last: bool = opt(True, "NHWC model and views (faster convolutions)")
    resume: bool = opt(False, "continue from OUT/checkpoints/last.pt")
    # data
    loader: str = opt("auto", "auto | memory | dali | torch | video (auto: video for a video set; "
                      "dali on CUDA, else memory when the decoded set fits in 2 GiB with one "
                      "image size, else torch)")
    workers: int = opt(2, "DataLoader workers / DALI threads")
    batch_size: int = opt(256, "global batch (split over processes)")
    views: str = opt("", "augmentation preset; empty = the method's")
    crop_size: int = opt(32, "global crop side (px)")
    global_crops: int = opt(2, "global crops per image")
    global_scale: tuple[float, float] = opt((0.2, 1.0), "global crop area range")
    local_crops: int = opt(0, "local crops per image (multi-crop)")
    local_crop_size: int = opt(16, "local crop side (px)")
    local_scale: tuple[float, float] = opt((0.05, 0.2), "local crop area range")
    crop_antialias: bool = opt(True, "antialiased crop resampling (torchvision, DALI); false = "
                               "plain bilinear (sharper views), the same in every loader")
    colour_jitter: str = opt("sequential", "colour jitter recipe, the same in every loader: "
                             "sequential (brightness, contrast about the mean grey, saturation, "
                             "hue; each step clamped) | twist (DALI's color_twist: one affine map)")
    clip_frames: int = opt(8, "frames per video clip (T)")
    clip_stride: int = opt(2, "source frames between a clip's frames")
    # background augmentation (Ryali et al. 2021; fastssl.pipelines.background)
    bg_mode: str = opt("none", "background augmentation: none | rm | random | swaps | auto (the "
                       "method's mode measured on the cluttered shapes set, Method.bg_mode_auto)")
    bg_p: float = opt(-1.0, "probability of the background change per view; -1 = the mode's "
                      "default (pipelines/background.py DEFAULT_P)")
    bg_bank: str = opt("", "foreground-free backgrounds (fastssl data backgrounds) or any "
                       "directory of background images; empty = filled on the fly")
    bg_missing_mask: str = opt("error", "an image without a mask in DIR/masks/: error | skip")
    # model
    backbone: str = opt("small_cnn",
                         "small_cnn | tiny_cnn | resnet18 | resnet34 | resnet50 | vit_s | vit_b")
    small_stem: bool = opt(True, "3x3 stride-1 stem without max-pool for small images")
    sync_bn: bool = opt(False, "global BatchNorm statistics under DDP")
    # optimisation: the defaults are sized for `make demo` (SimCLR, small_cnn, shapes set): about
    # 4 minutes of training on 2 CPU cores; the paper settings are in configs/
    epochs: int = opt(20, "training epochs")
    optimizer: str = opt("adamw", "sgd | adamw | lars")
    lr: float = opt(2e-3, "base learning rate, scaled by lr_scaling")
    lr_scaling: str = opt("linear", "linear (lr * B / 256) | sqrt (lr * sqrt(B)) | none")
    weight_decay: float = opt(1e-6, "weight decay")
    momentum: float = opt(0.9, "SGD / LARS momentum")
    warmup_epochs: float = opt(1.0, "linear warm-up (epochs)")
    min_lr_ratio: float = opt(0.2, "the cosine schedule ends at lr * min_lr_ratio")
    clip_grad: float = opt(0.0, "gradient norm clipping; 0 = off")
    # logging and evaluation
    log_every: int = opt(10, "steps between metric lines")
    eval_every: int = opt(10, "epochs between kNN evaluations; 0 = only at the end, -1 = never")
    knn_k: int = opt(200, "kNN neighbours")
    knn_temperature: float = opt(0.07, "kNN vote temperature")
    checkpoint_every: int = opt(0, "epochs between periodic copies of last.pt; 0 = off")
    progress: bool = opt(True, "progress output (a bar on a terminal, else one line per log)")
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


def unknown_key(key: str, known: Iterable[str], where: str) -> ConfigError:
    """The one-line error for an unknown key, with a suggestion when one is close."""
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.75)
    hint = f"; did you mean --{close[0]}?" if close else " (see --help)"
    return ConfigError(f"unknown option --{key} for {where}{hint}")


def resolve(preset: dict[str, Any] | None, overrides: dict[str, Any] | None,
            methods: Mapping[str, Any]) -> Config:
    """Build the typed config for a run (see the module docstring for the order); ``methods``
    maps method names to their classes (``fastssl.methods.METHODS``): the config reads their
    ``Args`` dataclass and ``config_defaults``."""
    layers = [preset or {}, overrides or {}]
    method = Config.method
    for layer in layers:
        method = str(layer.get("method", method))
    if method not in methods:
        raise ConfigError(f"unknown method '{method}' (choose from {', '.join(sorted(methods))})")
    cls = methods[method]
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
                raise unknown_key(key, [*general, *args_hints], f"method '{method}'")
    values["method"] = method
    if values.get("bg_mode") == "auto":
        values["bg_mode"] = _auto_bg_mode(method, methods)
    cfg = Config(**values)
    cfg.args = cls.Args(**args_values)
    validate(cfg)
    return cfg


def _auto_bg_mode(method: str, methods: Mapping[str, Any]) -> str:
    """The background mode measured best for ``method`` (its class's ``bg_mode_auto``)."""
    mode = methods[method].bg_mode_auto
    if not mode:
        measured = ", ".join(f"{n} ({c.bg_mode_auto})" for n, c in sorted(methods.items())
                             if c.bg_mode_auto)
        raise ConfigError(f"config key 'bg_mode': auto has no measured mode for method "
                          f"'{method}' (it has for {measured}); choose rm, random or swaps")
    return mode


def help_text(args_cls: type | None = None, method: str = "",
              defaults: Mapping[str, Any] | None = None) -> str:
    """Every option of ``Config`` (grouped as declared) and of a method's ``Args``: name, type,
    default (the method's ``defaults`` first) and the description given with the field."""
    firsts = dict((first, title) for title, first in GROUPS)
    lines: list[str] = []
    sections: list[tuple[type, dict[str, str]]] = [(Config, firsts)]
    if args_cls is not None and dataclasses.fields(args_cls):
        sections.append((args_cls, {dataclasses.fields(args_cls)[0].name:
                                    f"method '{method}'"}))
    for cls, titles in sections:
        hints = _hints(cls)
        for f in dataclasses.fields(cls):
            if f.name == "args":
                continue
            if f.name in titles:
                lines.append(f"\n{titles[f.name]}:")
            typ = getattr(hints[f.name], "__name__", str(hints[f.name])).replace("typing.", "")
            default = (defaults or {}).get(f.name, f.default)
            lines.append(f"  --{f.name} {typ} (default: {default!r})  "
                         f"{f.metadata.get('help', '')}".rstrip())
    return "\n".join(lines).lstrip("\n")


def validate(cfg: Config) -> None:
    choices = {
        "device": ("auto", "cpu", "cuda"),
        "compile": ("auto", "on", "off"),
        "loader": LOADERS,
        "optimizer": ("sgd", "adamw", "lars"),
        "lr_scaling": ("linear", "sqrt", "none"),
        "bg_mode": (*BG_MODES, "auto"),
        "bg_missing_mask": ("error", "skip"),
        "colour_jitter": COLOUR_RECIPES,
    }
    for key, allowed in choices.items():
        if getattr(cfg, key) not in allowed:
            raise ConfigError(f"config key '{key}': {getattr(cfg, key)!r} is not one of "
                              f"{', '.join(allowed)}")
    for key in ("batch_size", "epochs", "crop_size", "global_crops", "log_every", "clip_frames",
                "clip_stride"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"config key '{key}' must be >= 1, got {getattr(cfg, key)}")
    for key in ("global_scale", "local_scale"):
        lo, hi = getattr(cfg, key)
        if not 0 < lo <= hi <= 1:
            raise ConfigError(f"config key '{key}' must satisfy 0 < min <= max <= 1, got {lo, hi}")
    for key in ("threads", "workers"):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"config key '{key}' must be >= 0, got {getattr(cfg, key)}")
    if not (0 <= cfg.bg_p <= 1 or cfg.bg_p == -1):
        raise ConfigError(f"config key 'bg_p' must be in [0, 1] or -1, got {cfg.bg_p}")


def save(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def from_dict(d: dict[str, Any], methods: Mapping[str, Any]) -> Config:
    """Rebuild a config saved with ``to_dict`` (e.g. from a checkpoint)."""
    return resolve(d, None, methods)

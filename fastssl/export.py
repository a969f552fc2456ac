"""``fastssl export``: the pretrained backbone alone, in a file that loads into torchvision.

``export_backbone(CKPT, FILE)`` writes FILE, the online (query) encoder's backbone as a state
dict (``torch.save`` or safetensors), and ``FILE.json`` beside it, the sidecar: how to build the
model the weights load into with ``strict=True``, the preprocessing the backbone was trained
with, and where it came from (method, steps, kNN, fastssl version). Momentum / target encoders,
heads, queues and the optimiser stay behind.

- ResNets load into ``torchvision.models.resnetXX()`` with ``fc = Identity()``; for the small-image
  stem the sidecar also replaces ``conv1`` (3x3, stride 1) and ``maxpool`` (Identity).
- ViTs (``vit_s``, ``vit_b``) load into ``torchvision.models.VisionTransformer(...)`` with
  ``heads = Identity()``; MoCo v3's frozen patch projection and sin-cos positions are ordinary
  weights in the file.
- ``small_cnn`` has no torchvision counterpart: the file holds the state dict of
  ``fastssl.models.backbones.small_cnn`` (fastssl's own format).

``load_backbone(FILE)`` rebuilds the model from the sidecar and returns it with the
preprocessing.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from fastssl import __version__
from fastssl.checkpoint import check as check_checkpoint
from fastssl.checkpoint import load as load_checkpoint
from fastssl.data.stats import MEAN, STD
from fastssl.metrics import read as read_metrics
from fastssl.models import backbones

SIDECAR_VERSION = 1  # layout of the sidecar below
FORMATS = ("torch", "safetensors")


def sidecar_path(weights: str | Path) -> Path:
    """``FILE.json`` beside ``FILE`` (the full name is kept, so ``backbone.pt`` and
    ``backbone.safetensors`` exported side by side keep one sidecar each)."""
    weights = Path(weights)
    return weights.with_name(weights.name + ".json")


def _layer(type_: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """A ``torch.nn`` layer as data: ``getattr(torch.nn, type)(*args, **kwargs)``."""
    return {"type": type_, "args": list(args), "kwargs": kwargs}


def _model_spec(name: str, net: nn.Module) -> tuple[dict[str, Any], nn.Module]:
    """How to build the model the weights load into, read off fastssl's backbone ``net``, and the
    module whose state dict is exported."""
    if isinstance(net, torchvision.models.ResNet):
        replace: dict[str, dict[str, Any]] = {}
        if isinstance(net.maxpool, nn.Identity):  # the small-image stem (see backbones._resnet)
            c = net.conv1
            replace["conv1"] = _layer("Conv2d", c.in_channels, c.out_channels, c.kernel_size[0],
                                      stride=c.stride[0], padding=c.padding[0],
                                      bias=c.bias is not None)
            replace["maxpool"] = _layer("Identity")
        replace["fc"] = _layer("Identity")
        return {"library": "torchvision", "builder": name, "kwargs": {}, "replace": replace}, net
    if isinstance(net, backbones.ViT):
        vit = net.net
        kwargs = {"image_size": vit.image_size, "patch_size": vit.patch_size,
                  "num_layers": len(vit.encoder.layers),
                  "num_heads": vit.encoder.layers[0].num_heads, "hidden_dim": vit.hidden_dim,
                  "mlp_dim": vit.mlp_dim}
        return {"library": "torchvision", "builder": "VisionTransformer", "kwargs": kwargs,
                "replace": {"heads": _layer("Identity")}}, vit
    # small_cnn: its first conv has ``width`` output channels
    width = next(m for m in net.modules() if isinstance(m, nn.Conv2d)).out_channels
    return {"library": "fastssl", "builder": "small_cnn", "kwargs": {"width": width},
            "replace": {}}, net


def _call(fn: str, args: list[Any], kwargs: dict[str, Any]) -> str:
    return f"{fn}({', '.join([*map(repr, args), *(f'{k}={v!r}' for k, v in kwargs.items())])})"


def model_code(spec: dict[str, Any]) -> str:
    """The Python lines that build ``model`` as ``spec`` says (for people and for the docs)."""
    if spec["library"] == "torchvision":
        lines = ["import torch, torchvision",
                 "model = " + _call(f"torchvision.models.{spec['builder']}", [], spec["kwargs"])]
    else:
        lines = ["import torch",
                 f"from fastssl.models.backbones import {spec['builder']}",
                 "model = " + _call(spec["builder"], [], spec["kwargs"])]
    lines += [f"model.{name} = " + _call(f"torch.nn.{layer['type']}", layer["args"],
                                         layer["kwargs"])
              for name, layer in spec["replace"].items()]
    return "\n".join(lines)


def build_model(spec: dict[str, Any]) -> nn.Module:
    """The (untrained) model that a sidecar's ``model`` entry describes."""
    library = {"torchvision": torchvision.models, "fastssl": backbones}.get(spec["library"])
    builder = getattr(library, spec["builder"], None)
    if builder is None:
        raise ValueError(f"sidecar names an unknown model builder {spec['library']}."
                         f"{spec['builder']}")
    net = builder(**spec["kwargs"])
    for name, layer in spec["replace"].items():
        setattr(net, name, getattr(nn, layer["type"])(*layer["args"], **layer["kwargs"]))
    return net


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def _knn(ckpt: Path, step: int) -> tuple[float | None, int | None]:
    """The last kNN top-1 logged at or before ``step`` in ``<run>/metrics.jsonl`` (the run folder
    holds ``checkpoints/``), with its step; ``(None, None)`` when there is none."""
    path = ckpt.parent.parent / "metrics.jsonl"
    if ckpt.parent.name != "checkpoints" or not path.is_file():
        return None, None
    try:
        records = read_metrics(path)
    except ValueError as e:
        raise ValueError(f"cannot read {path}: {e}") from None
    evals = [r for r in records if "knn_top1" in r and r["step"] <= step]
    return (_finite(evals[-1]["knn_top1"]), evals[-1]["step"]) if evals else (None, None)


def _some(label: str, keys: list[str]) -> str:
    shown = f" ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})" if keys else ""
    return f"{len(keys)} {label}{shown}"


def _backbone_of(path: Path, state: dict[str, Any]) -> tuple[nn.Module, int, dict[str, Any]]:
    """fastssl's backbone module for the checkpoint's config, holding its trained weights, its
    feature dimension and the config."""
    cfg = state["config"]
    try:
        name, small_stem, crop_size = cfg["backbone"], cfg["small_stem"], cfg["crop_size"]
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path}: its config has no {e}") from None
    try:
        net, dim = backbones.build_backbone(name, small_stem=small_stem, image_size=crop_size)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    if not isinstance(state["model"], dict):
        raise ValueError(f"{path}: its 'model' is a {type(state['model']).__name__}, not a "
                         "state dict")
    prefix = "backbone."  # the online / query encoder; momentum copies live under other names
    weights = {k[len(prefix):]: v for k, v in state["model"].items() if k.startswith(prefix)}
    try:
        result = net.load_state_dict(weights, strict=False)
    except RuntimeError as e:  # shape mismatches
        detail = " ".join(str(e).split())
        raise ValueError(f"{path}: its backbone weights do not fit {name}: {detail}") from None
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{path}: its backbone weights do not fit {name}: "
                         f"{_some('missing', result.missing_keys)}, "
                         f"{_some('unexpected', result.unexpected_keys)}")
    return net, dim, cfg


def export_backbone(checkpoint: str | Path, out: str | Path, fmt: str = "torch") -> Path:
    """Write the backbone of ``checkpoint`` to ``out`` (``fmt``: torch | safetensors) and its
    sidecar to ``sidecar_path(out)``; return ``out``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format '{fmt}' (choose from {', '.join(FORMATS)})")
    path, out = Path(checkpoint), Path(out)
    if out.resolve() == path.resolve():
        raise ValueError(f"--out {out} is the checkpoint itself: choose another file")
    state = load_checkpoint(path)
    check_checkpoint(state, path)
    net, dim, cfg = _backbone_of(path, state)
    spec, exported = _model_spec(cfg["backbone"], net)
    weights = {k: v.detach().contiguous() for k, v in exported.state_dict().items()}
    build_model(spec).load_state_dict(weights, strict=True)  # the sidecar builds what loads
    knn, knn_step = _knn(path, state.get("step", -1))
    sidecar = {
        "fastssl_export": SIDECAR_VERSION,
        "weights": out.name,
        "file_format": fmt,
        "model": {**spec, "code": model_code(spec)},
        "method": cfg.get("method"),
        "backbone": cfg["backbone"],
        "small_stem": cfg["small_stem"],
        "feature_dim": dim,
        "crop_size": cfg["crop_size"],
        # what evaluation fed the backbone (fastssl.pipelines.torch_loader.eval_transform)
        "preprocessing": {"resize": cfg["crop_size"], "center_crop": cfg["crop_size"],
                          "interpolation": "bilinear", "antialias": True,
                          "scale": "pixel values / 255, then (x - mean) / std",
                          "mean": list(MEAN), "std": list(STD)},
        "training_steps": state.get("step"),
        "epochs": state.get("epoch"),
        "knn_top1": knn,
        "knn_top1_step": knn_step,
        "knn_top1_init": _finite(state.get("knn_top1_init")),
        "fastssl_version": {"trained": state.get("fastssl_version"), "exported": __version__},
        "checkpoint": str(path.resolve()),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(weights, out, metadata={"format": "pt"})
    else:
        torch.save(weights, out)
    sidecar_path(out).write_text(json.dumps(sidecar, indent=2) + "\n")
    return out


def read_sidecar(weights: str | Path) -> dict[str, Any]:
    path = sidecar_path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"no sidecar {path} beside {weights} (write both with "
                                "fastssl export)")
    try:
        sidecar = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"cannot read sidecar {path}: {e}") from None
    if not isinstance(sidecar, dict) or sidecar.get("fastssl_export") != SIDECAR_VERSION:
        raise ValueError(f"{path} is not a fastssl export sidecar of version {SIDECAR_VERSION}")
    return sidecar


def load_backbone(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The exported backbone at ``path`` (in eval mode; call ``.train()`` to fine-tune) and the
    preprocessing it was trained with (``sidecar["preprocessing"]``)."""
    path = Path(path)
    sidecar = read_sidecar(path)
    if sidecar["file_format"] == "safetensors":
        from safetensors.torch import load_file

        weights = load_file(path)
    else:
        weights = torch.load(path, map_location="cpu", weights_only=True)
    net = build_model(sidecar["model"])
    net.load_state_dict(weights, strict=True)
    return net.eval(), sidecar["preprocessing"]


def main(argv: list[str]) -> int:
    """``fastssl export --checkpoint CKPT --out FILE [--format torch|safetensors]``."""
    p = argparse.ArgumentParser(
        prog="fastssl export",
        description="Write a checkpoint's backbone alone (loadable into torchvision) and a JSON "
                    "sidecar FILE.json beside it.")
    p.add_argument("--checkpoint", required=True, help="e.g. runs/latest/checkpoints/last.pt")
    p.add_argument("--out", required=True, help="the weights file to write")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="default: safetensors when FILE ends in .safetensors, else torch")
    a = p.parse_args(argv)
    fmt = a.format or ("safetensors" if a.out.endswith(".safetensors") else "torch")
    out = export_backbone(a.checkpoint, a.out, fmt)
    s = read_sidecar(out)
    knn = "" if s["knn_top1"] is None else f", knn_top1 {s['knn_top1']:.2f}"
    print(f"wrote the {s['backbone']} backbone of a {s['method']} run (step "
          f"{s['training_steps']}{knn}) to {out} and its sidecar to {sidecar_path(out)}")
    load = (f"safetensors.torch.load_file({str(out)!r})" if fmt == "safetensors"
            else f"torch.load({str(out)!r})")
    if s["model"]["library"] == "fastssl":
        print(f"{s['backbone']} has no torchvision counterpart: the file is in fastssl's own "
              f"format (a state dict of fastssl.models.backbones.{s['model']['builder']})")
    print("load it with:")
    lines = s["model"]["code"].splitlines()
    if fmt == "safetensors":
        lines.insert(1, "import safetensors.torch")
    for line in [*lines, f"model.load_state_dict({load})"]:
        print(f"    {line}")
    print(f"or: model, preprocessing = fastssl.load_backbone({str(out)!r})")
    return 0

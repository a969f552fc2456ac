"""``fastssl export`` / ``fastssl.load_backbone``: the exported backbone loads with strict=True into
the torchvision model the sidecar describes and gives the method's ``embed`` features; momentum
copies, heads and queues stay behind; bad checkpoints give one-line errors naming the file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import load_file
from torch import nn
from torchvision.transforms import v2 as T

import fastssl
from fastssl import checkpoint
from fastssl.export import export_backbone, main, read_sidecar, sidecar_path
from fastssl.methods import resolve_config
from fastssl.pipelines.torch_loader import eval_transform
from fastssl.pipelines.views import MEAN, STD
from tests import helpers
from tests.helpers import tiny_shapes

SMALL_HEADS = {"proj_hidden_dim": 32, "proj_dim": 16}
FAMILIES = {  # method -> its small options and the name of its momentum copy ("" = none)
    "simclr": ({}, ""),
    "mocov2": ({"queue_size": 32, "bn_splits": 2}, "key_encoder"),
    "byol": ({"pred_hidden_dim": 32}, "target"),
    "swav": ({"n_prototypes": 12, "queue_length": 32}, ""),
}
RESNET_CROP = 16
DOC = Path(__file__).resolve().parent.parent / "docs" / "export.md"


def make_method(method: str, **overrides) -> tuple[dict, nn.Module]:
    """The one place these tests construct a method: its resolved config (as checkpoints hold it)
    and the module."""
    cfg, model = helpers.make_method(method, **overrides)
    return cfg.to_dict(), model


def randomise_(module: nn.Module, seed: int) -> None:
    """Give every parameter and floating buffer (BatchNorm statistics too) new values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.75 if t.ndim <= 1
                        else torch.randn(t.shape, generator=g) * t.std().clamp(min=0.02))


def write_checkpoint(run: Path, config: dict, model: nn.Module, **extra) -> Path:
    """A checkpoint as ``fastssl.train`` saves it (channels-last weights, as the loop trains)."""
    model.to(memory_format=torch.channels_last)
    state = {"model": model.state_dict(),
             "optimizer": torch.optim.SGD(model.parameters(), lr=0.1).state_dict(),
             "step": 7, "epoch": 1, "config": config, "rng": checkpoint.rng_state(),
             "knn_top1_init": 10.0, **extra}
    path = run / "checkpoints" / "last.pt"
    checkpoint.save_atomic(state, path)
    return path


def torchvision_resnet18(sidecar: dict) -> nn.Module:
    """The issue's recipe: ``resnet18()``, ``fc = Identity()``, then the sidecar's stem changes."""
    model = torchvision.models.resnet18()
    model.fc = nn.Identity()
    for name, layer in sidecar["model"]["replace"].items():
        setattr(model, name, getattr(nn, layer["type"])(*layer["args"], **layer["kwargs"]))
    return model


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


@pytest.mark.parametrize("method", sorted(FAMILIES))
def test_resnet18_export_loads_strictly_into_torchvision_and_gives_embed(method, tmp_path):
    options, momentum = FAMILIES[method]
    config, model = make_method(method, backbone="resnet18", crop_size=RESNET_CROP,
                                **SMALL_HEADS, **options)
    randomise_(model.backbone, seed=1)
    if momentum:  # the momentum copy differs from the online encoder: exporting it would show
        randomise_(getattr(model, momentum), seed=2)
    ckpt = write_checkpoint(tmp_path / "run", config, model)
    out = export_backbone(ckpt, tmp_path / "backbone.pt")

    sidecar = read_sidecar(out)
    weights = torch.load(out, weights_only=True)
    tv = torchvision_resnet18(sidecar)
    tv.load_state_dict(weights, strict=True)
    images = torch.randn(4, 3, RESNET_CROP, RESNET_CROP)
    model.eval()
    tv.eval()
    assert max_diff(tv(images), model.embed(images)) < 1e-5
    online = {k: v for k, v in model.state_dict().items() if k.startswith("backbone.")}
    assert len(weights) == len(online)
    if momentum:
        copy = model.state_dict()[f"{momentum}.0.conv1.weight"]
        assert not torch.equal(weights["conv1.weight"], copy)
        assert torch.equal(weights["conv1.weight"], online["backbone.conv1.weight"])


def test_sidecar_stem_is_the_small_image_stem_and_its_code_builds_the_model(tmp_path):
    for small_stem in (True, False):
        config, model = make_method("simclr", backbone="resnet18", small_stem=small_stem,
                                    **SMALL_HEADS)
        ckpt = write_checkpoint(tmp_path / f"run{small_stem}", config, model)
        out = export_backbone(ckpt, tmp_path / f"stem{small_stem}.pt")
        spec = read_sidecar(out)["model"]
        stem = {"conv1": {"type": "Conv2d", "args": [3, 64, 3],
                          "kwargs": {"stride": 1, "padding": 1, "bias": False}},
                "maxpool": {"type": "Identity", "args": [], "kwargs": {}}}
        assert spec["replace"] == {**(stem if small_stem else {}),
                                   "fc": {"type": "Identity", "args": [], "kwargs": {}}}
        namespace: dict = {}
        exec(spec["code"], namespace)  # the lines printed for people build what loads
        namespace["model"].load_state_dict(torch.load(out, weights_only=True), strict=True)


def test_vit_export_loads_into_torchvision_vision_transformer(tmp_path):
    crop = 32
    config, model = make_method("mocov3", backbone="vit_s", crop_size=crop, proj_layers=2,
                                pred_hidden_dim=32, **SMALL_HEADS)
    randomise_(model.momentum_encoder, seed=2)
    ckpt = write_checkpoint(tmp_path / "run", config, model)
    out = export_backbone(ckpt, tmp_path / "vit.pt")

    weights = torch.load(out, weights_only=True)
    frozen = model.backbone.net
    assert torch.equal(weights["conv_proj.weight"], frozen.conv_proj.weight)  # frozen, included
    assert torch.equal(weights["encoder.pos_embedding"], frozen.encoder.pos_embedding)
    tv = torchvision.models.VisionTransformer(image_size=crop, patch_size=4, num_layers=12,
                                              num_heads=6, hidden_dim=384, mlp_dim=1536)
    tv.heads = nn.Identity()
    tv.load_state_dict(weights, strict=True)
    assert read_sidecar(out)["model"]["kwargs"] == {
        "image_size": crop, "patch_size": 4, "num_layers": 12, "num_heads": 6,
        "hidden_dim": 384, "mlp_dim": 1536}
    images = torch.randn(2, 3, crop, crop)
    model.eval()
    assert max_diff(tv.eval()(images), model.embed(images)) < 1e-5
    assert not torch.equal(weights["conv_proj.weight"],
                           model.momentum_encoder[0].net.conv_proj.weight)
    net, _ = fastssl.load_backbone(out)
    assert max_diff(net(images), model.embed(images)) < 1e-5


def test_safetensors_round_trip_matches_the_torch_file(tmp_path):
    config, model = make_method("byol", backbone="resnet18", crop_size=RESNET_CROP,
                                pred_hidden_dim=32, **SMALL_HEADS)
    randomise_(model.backbone, seed=1)
    ckpt = write_checkpoint(tmp_path / "run", config, model)
    pt = export_backbone(ckpt, tmp_path / "b.pt")
    st = export_backbone(ckpt, tmp_path / "b.safetensors", fmt="safetensors")
    a, b = torch.load(pt, weights_only=True), load_file(st)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    net, _ = fastssl.load_backbone(st)
    images = torch.randn(3, 3, RESNET_CROP, RESNET_CROP)
    assert max_diff(net(images), model.eval().embed(images)) < 1e-5


def test_sidecar_round_trip_and_knn_from_the_run(tmp_path):
    config, model = make_method("simclr", backbone="resnet18", crop_size=RESNET_CROP,
                                **SMALL_HEADS)
    run = tmp_path / "run"
    ckpt = write_checkpoint(run, config, model, fastssl_version="0.0.9")
    records = [{"step": 0, "epoch": 0, "knn_top1_init": 10.0},
               {"step": 7, "epoch": 1, "loss": 3.2, "lr": 0.1, "images_per_s": 5.0},
               {"step": 7, "epoch": 1, "knn_top1": 42.5},
               {"step": 9, "epoch": 1.3, "knn_top1": 50.0}]  # after the checkpoint: not its kNN
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    out = export_backbone(ckpt, tmp_path / "exp" / "backbone.pt")

    assert sidecar_path(out) == tmp_path / "exp" / "backbone.pt.json"
    sidecar = json.loads(sidecar_path(out).read_text())
    assert {k: sidecar[k] for k in ("method", "backbone", "small_stem", "crop_size",
                                    "feature_dim", "training_steps", "epochs", "knn_top1",
                                    "knn_top1_step", "knn_top1_init", "fastssl_version",
                                    "file_format", "weights")} == {
        "method": "simclr", "backbone": "resnet18", "small_stem": True, "crop_size": RESNET_CROP,
        "feature_dim": 512, "training_steps": 7, "epochs": 1, "knn_top1": 42.5,
        "knn_top1_step": 7, "knn_top1_init": 10.0,
        "fastssl_version": {"trained": "0.0.9", "exported": fastssl.__version__},
        "file_format": "torch", "weights": "backbone.pt"}
    net, pre = fastssl.load_backbone(out)
    assert pre == sidecar["preprocessing"] and not net.training
    assert (pre["mean"], pre["std"]) == (list(MEAN), list(STD))
    # the preprocessing described is the one evaluation used
    image = torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8)
    described = T.Compose([T.Resize(pre["resize"], antialias=pre["antialias"]),
                           T.CenterCrop(pre["center_crop"]),
                           T.ToDtype(torch.float32, scale=True), T.Normalize(pre["mean"],
                                                                             pre["std"])])
    assert torch.equal(described(image), eval_transform(RESNET_CROP)(image))

    documented = json.loads(DOC.read_text().split("```json\n")[1].split("```")[0])
    assert documented.keys() == sidecar.keys()
    for key in ("model", "preprocessing", "fastssl_version"):
        assert documented[key].keys() == sidecar[key].keys()

    (run / "metrics.jsonl").unlink()
    again = read_sidecar(export_backbone(ckpt, tmp_path / "again.pt"))
    assert again["knn_top1"] is None and again["knn_top1_step"] is None


def test_small_cnn_from_a_real_run_exports_in_fastssl_format(tmp_path, capsys):
    from fastssl.train import train

    data = tiny_shapes(tmp_path, per_class=4)
    cfg = resolve_config(None, {"method": "simclr", "data": str(data), "out": str(tmp_path / "run"),
                         "backbone": "small_cnn", "crop_size": 16, "batch_size": 8, "epochs": 1,
                         "workers": 0, "knn_k": 5, "progress": False, "compile": "off",
                         "device": "cpu", **SMALL_HEADS})
    result = train(cfg)
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    out = tmp_path / "small.pt"
    assert main(["--checkpoint", str(ckpt), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "small_cnn has no torchvision counterpart" in printed and "fastssl's own" in printed

    sidecar = read_sidecar(out)
    assert sidecar["model"]["library"] == "fastssl"
    assert sidecar["model"]["builder"] == "small_cnn"
    assert sidecar["knn_top1"] == pytest.approx(result.knn_top1)
    assert sidecar["training_steps"] == result.steps
    state = checkpoint.load(ckpt)
    _, model = make_method(**state["config"])
    model.load_state_dict(state["model"])
    net, _ = fastssl.load_backbone(out)
    images = torch.randn(3, 3, 16, 16)
    assert max_diff(net(images), model.eval().embed(images)) < 1e-5


def test_cli_format_follows_the_suffix(tmp_path, capsys):
    config, model = make_method("simclr", backbone="resnet18", **SMALL_HEADS)
    ckpt = write_checkpoint(tmp_path / "run", config, model)
    assert main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "b.safetensors")]) == 0
    assert read_sidecar(tmp_path / "b.safetensors")["file_format"] == "safetensors"
    assert "safetensors.torch.load_file(" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown export format 'onnx'"):
        export_backbone(ckpt, tmp_path / "b.onnx", fmt="onnx")
    with pytest.raises(ValueError, match="is the checkpoint itself"):
        main(["--checkpoint", str(ckpt), "--out", str(ckpt)])
    assert checkpoint.load(ckpt).keys() >= {"model", "optimizer"}


def _bad(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / "bad.pt"
    if kind == "text":
        path.write_text("not a checkpoint")
        return path
    if kind == "tensor":
        torch.save(torch.zeros(3), path)
        return path
    config, model = make_method("simclr", backbone="resnet18", **SMALL_HEADS)
    state = {"model": model.state_dict(), "config": config, "step": 1}
    if kind == "no_model":
        del state["model"]
    elif kind == "model_not_a_dict":
        state["model"] = model
    elif kind == "future":
        state["format"] = checkpoint.FORMAT_VERSION + 1
    elif kind == "unknown_backbone":
        state["config"] = {**config, "backbone": "resnet101"}
    elif kind == "missing_key":
        del state["model"]["backbone.layer4.1.bn2.weight"]
    elif kind == "wrong_shape":
        state["config"] = {**config, "small_stem": False}  # 7x7 stem expected, 3x3 saved
    torch.save(state, path)
    return path


@pytest.mark.parametrize("kind, message", [
    ("text", "cannot read checkpoint"),
    ("tensor", "is not a fastssl checkpoint (it holds a Tensor"),
    ("no_model", "is not a fastssl checkpoint (no 'model')"),
    ("model_not_a_dict", "its 'model' is a SimCLR, not a state dict"),
    ("future", f"has format version {checkpoint.FORMAT_VERSION + 1} (written by fastssl "
               f"unknown); this fastssl reads version {checkpoint.FORMAT_VERSION}"),
    ("unknown_backbone", "unknown backbone 'resnet101'"),
    ("missing_key", "do not fit resnet18: 1 missing (layer4.1.bn2.weight), 0 unexpected"),
    ("wrong_shape", "do not fit resnet18: Error(s) in loading state_dict"),
])
def test_bad_checkpoints_give_one_line_errors_naming_the_file(tmp_path, kind, message):
    path = _bad(tmp_path, kind)
    with pytest.raises(ValueError) as e:
        export_backbone(path, tmp_path / "out.pt")
    assert message in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out.pt").exists()


def test_checkpoint_without_format_is_version_one(tmp_path):
    checkpoint.check({"model": {}, "config": {}}, tmp_path / "x.pt")
    checkpoint.check({"model": {}, "config": {}, "format": 1}, tmp_path / "x.pt")


def test_load_backbone_is_lazy_and_kernels_stay_import_light():
    code = ("import sys, fastssl, fastssl.kernels; "
            "assert callable(fastssl.load_backbone); "
            "heavy = [m for m in ('torchvision', 'fastssl.export', 'safetensors') "
            "if m in sys.modules]; assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)

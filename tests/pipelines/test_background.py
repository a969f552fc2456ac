"""Background augmentation: compositing exactness (DALI CPU graph and the tensor path of the
memory and torchvision loaders), foreground-free backgrounds, BG_Swaps' pair through every
loader, mask errors and the skip policy, config validation, and a BG_Swaps training smoke run."""

from __future__ import annotations

import importlib.util
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from fastssl.batch import SWAPS_SHIFT
from fastssl.config import ConfigError
from fastssl.data.backgrounds import FILLS, dilated, foreground_free
from fastssl.data.layout import DataError, scan
from fastssl.methods import resolve_config
from fastssl.pipelines.background import DEFAULT_P, BgOptions, resolve_masks, tensor_background
from tests.helpers import make_loader
from tests.pipelines.conftest import DALI_GPU

HAS_DALI = importlib.util.find_spec("nvidia.dali") is not None
dali = [pytest.mark.dali, pytest.mark.skipif(not HAS_DALI, reason="nvidia.dali is not installed")]

H, W = 12, 16


def constructed(seed: int):
    """Two random images, their (stand-in) foreground-free backgrounds, and masks: 255 on the
    left part, 0 elsewhere, with one soft column."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (2, H, W, 3), dtype=np.uint8)
    backgrounds = rng.integers(0, 256, (2, H, W, 3), dtype=np.uint8)
    masks = np.zeros((2, H, W, 1), np.uint8)
    masks[0, :, :6] = 255
    masks[1, :, :9] = 255
    masks[:, :, 10] = 100  # soft edge: strictly between the two sources
    return images, masks, backgrounds


def check(out, fg, mask, bg):
    m = mask[..., 0]
    assert np.array_equal(out[m == 255], fg[m == 255])
    assert np.array_equal(out[m == 0], bg[m == 0])
    soft = out[m == 100].astype(int)
    lo, hi = np.minimum(fg, bg)[m == 100], np.maximum(fg, bg)[m == 100]
    assert np.all((soft >= lo) & (soft <= hi))


def run_dali_background(mode: str, gpu: bool = False):
    from nvidia.dali import fn, pipeline_def, types

    from fastssl.pipelines.dali_augment import apply_background

    images, masks, backgrounds = constructed(0)

    @pipeline_def(enable_conditionals=True)
    def pipe():
        img = fn.external_source(source=lambda: list(images), batch=True, layout="HWC")
        msk = fn.external_source(source=lambda: list(masks), batch=True, layout="HWC")
        bgs = fn.external_source(source=lambda: list(backgrounds), batch=True, layout="HWC")
        shapes = img.shape(dtype=types.INT64)  # on the CPU, as peek_image_shape in the loader
        if gpu:
            img, msk, bgs = img.gpu(), msk.gpu(), bgs.gpu()
        out, extra = apply_background(img, msk, bgs, shapes, mode=mode, p=1.0, batch_size=2)
        return (out, *extra)

    p = pipe(batch_size=2, num_threads=1, device_id=0 if gpu else None, seed=0)
    p.build()
    outs = [o.as_cpu() if gpu else o for o in p.run()]
    return images, masks, backgrounds, [[np.array(o[i]) for i in range(2)] for o in outs]


def run_tensor_background(mode: str):
    images, masks, backgrounds = constructed(0)
    chw = lambda x: torch.from_numpy(x).permute(0, 3, 1, 2)  # noqa: E731
    out, extra = tensor_background(chw(images), chw(masks), chw(backgrounds), mode=mode,
                                   apply=torch.ones(2, dtype=torch.bool),
                                   partner=torch.tensor([1, 0]))
    return images, masks, backgrounds, [list(x.permute(0, 2, 3, 1).numpy())
                                         for x in (out, *extra)]


@pytest.mark.parametrize("mode", ["rm", "random", "swaps"])
@pytest.mark.parametrize("device", ["dali-cpu", "tensor", pytest.param("dali-gpu",
                                                                       marks=DALI_GPU)])
def test_composite_exact(mode, device):
    """``tensor`` is the memory and torchvision loaders' path; DALI's partner of sample i is
    sample i + 1 of the batch, the tensor path's is given (the other one here)."""
    if device.startswith("dali") and not HAS_DALI:
        pytest.skip("nvidia.dali is not installed")
    if device.startswith("dali"):
        images, masks, backgrounds, outs = run_dali_background(mode, gpu=device == "dali-gpu")
    else:
        images, masks, backgrounds, outs = run_tensor_background(mode)
    grey = np.full_like(images[0], 128)
    for i in range(2):
        j = 1 - i  # the partner
        if mode == "rm":
            check(outs[0][i], images[i], masks[i], grey)
        elif mode == "random":  # the partner's foreground-free background
            check(outs[0][i], images[i], masks[i], backgrounds[j])
        else:
            assert np.array_equal(outs[0][i], images[i])  # the anchor views are unchanged
            check(outs[1][i], images[i], masks[i], backgrounds[j])  # extra positive
            check(outs[2][i], images[j], masks[j], backgrounds[i])  # hard negative


@pytest.mark.parametrize("fill", FILLS)
@pytest.mark.parametrize("margin", [0, 2])
def test_foreground_free_holds_no_pixel_of_the_dilated_mask(fill, margin):
    """Foreground (255, 0, 255) and its edge ring (0, 255, 0, inside the dilation) are colours
    the background (channels in 20-200) cannot make, so any of their pixels would show."""
    rng = np.random.default_rng(1)
    image = rng.integers(20, 201, (40, 48, 3), dtype=np.uint8)
    mask = np.zeros((40, 48), np.uint8)
    mask[10:26, 12:30] = 255
    hole = dilated(mask, margin)
    image[hole] = (0, 255, 0)
    image[mask == 255] = (255, 0, 255)
    out = foreground_free(image, mask, margin=margin, fill=fill)
    assert out[..., :2].max() <= 200  # neither colour (nor a blend reaching them) is left
    assert np.array_equal(out[~hole], image[~hole])  # the background is kept as it was
    assert hole.sum() > (mask == 255).sum() if margin else np.array_equal(hole, mask == 255)


def test_mask_errors_name_the_file(shapes_dir, tmp_path):
    import shutil

    root = tmp_path / "d"
    shutil.copytree(shapes_dir, root)
    index = scan(root)
    first, second = index.train.paths[0], index.train.paths[1]
    index.mask_path(first).unlink()
    Image.new("L", (7, 5)).save(index.mask_path(second))  # wrong size
    opts = BgOptions("rm", 1.0, mask_root=root)
    with pytest.raises(DataError, match=str(index.mask_path(first))):
        resolve_masks(index.train, opts)
    index.mask_path(first).write_bytes(index.mask_path(index.train.paths[2]).read_bytes())
    with pytest.raises(DataError, match=f"{index.mask_path(second)} is 7x5"):
        resolve_masks(index.train, opts)
    index.mask_path(first).unlink()
    masks, skipped = resolve_masks(index.train, BgOptions("rm", 1.0, missing_mask="skip",
                                                          mask_root=root))
    assert skipped == 2 and masks[0] is None and masks[1] is None and masks[2] is not None


def test_config_fields():
    cfg = resolve_config(overrides={"bg_mode": "swaps", "bg_p": "0.3"})
    assert cfg.bg_mode == "swaps" and cfg.bg_p == 0.3
    from fastssl.pipelines.background import bg_probability

    assert bg_probability(resolve_config(overrides={"bg_mode": "rm"})) == DEFAULT_P["rm"]
    with pytest.raises(ConfigError, match="bg_mode"):
        resolve_config(overrides={"bg_mode": "paste"})
    with pytest.raises(ConfigError, match="bg_p"):
        resolve_config(overrides={"bg_p": "1.5"})


def test_auto_picks_the_methods_measured_mode():
    assert resolve_config(overrides={"method": "simclr", "bg_mode": "auto"}).bg_mode == "swaps"
    assert resolve_config(overrides={"method": "mocov2", "bg_mode": "auto"}).bg_mode == "swaps"
    assert resolve_config(overrides={"method": "swav", "bg_mode": "auto"}).bg_mode == "random"
    with pytest.raises(ConfigError, match="auto has no measured mode for method 'byol'.*simclr"):
        resolve_config(overrides={"method": "byol", "bg_mode": "auto"})


IDENTITY = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, gray_p=0.0)


def pixels(view: torch.Tensor) -> torch.Tensor:
    """Undo the normalisation: (B, 3, H, W) float -> uint8-valued float."""
    from fastssl.pipelines.views import MEAN, STD

    mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    return ((view * std + mean) * 255).round()


@pytest.mark.parametrize("name,device", [("dali", "cpu"), ("torch", "cpu"), ("memory", "cpu"),
                                         pytest.param("dali", "cuda", marks=DALI_GPU)])
def test_loader_rm_and_skip(shapes_dir, tmp_path, name, device, caplog):
    """Through the whole loader with an identity view: BG_RM with p=1 greys every background
    pixel and keeps every foreground pixel; an image without a mask (skip) is unchanged. On the
    GPU, images and masks are decoded by the "mixed" decoder and composited there."""
    if name == "dali" and not HAS_DALI:
        pytest.skip("nvidia.dali is not installed")
    import shutil

    from fastssl.pipelines.views import ViewSpec

    root = tmp_path / "d"
    shutil.copytree(shapes_dir, root)
    index = scan(root)
    for p in index.train.paths:  # lossless images so that pixels can be compared exactly
        Image.open(p).save(p.with_suffix(".png"))
        p.unlink()
    index = scan(root)
    index.mask_path(index.train.paths[3]).unlink()
    spec = ViewSpec(32, **IDENTITY)
    with caplog.at_level(logging.WARNING):
        ld = make_loader(name, index.train, [spec], batch_size=8,
                         workers=0 if name == "torch" else 1, device_type=device,
                         bg=BgOptions("rm", 1.0, missing_mask="skip", mask_root=root))
    assert (ld.dataset if name == "torch" else ld).bg_skipped == 1
    assert "background augmentation skipped for 1" in caplog.text
    by_label = {}
    for b in ld.epoch(0):
        for v, y in zip(pixels(b["views"][0].cpu()), b["labels"].tolist(), strict=True):
            by_label.setdefault(y, []).append(v)
    # map outputs back to files: same class, compare against the candidates of that class
    matched = 0
    for i, path in enumerate(index.train.paths):
        img = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"))).permute(2, 0, 1)
        mp = index.mask_path(path)
        if mp.exists():
            m = torch.from_numpy(np.asarray(Image.open(mp)))[None].expand_as(img)
            expected = torch.where(m == 255, img, torch.full_like(img, 128)).float()
        else:
            expected = img.float()
        cands = by_label.get(index.train.labels[i], [])
        if any(((c - expected).abs() <= 1).float().mean() > 0.99 for c in cands):
            matched += 1
    # every image of the epoch (the incomplete last batch is dropped) is found with its
    # foreground kept and background grey (<= 1 level: float normalisation round trip)
    assert matched >= len(ld) * 8


@pytest.mark.slow
@pytest.mark.parametrize("method,loader", [("simclr", "dali" if HAS_DALI else "torch"),
                                           ("mocov2", "memory")])
def test_train_with_bg_swaps(shapes_dir, tmp_path, method, loader):
    """SimCLR and MoCo v2 train on the BG_Swaps pair (a few steps)."""
    from fastssl.train import train

    cfg = resolve_config(overrides={"data": str(shapes_dir), "out": str(tmp_path / "run"),
                             "epochs": "1", "batch_size": "16", "bg_mode": "swaps",
                             "eval_every": "-1", "progress": "false", "loader": loader,
                             "method": method, "proj_hidden_dim": "64", "proj_dim": "32",
                             "crop_size": "16"})
    result = train(cfg)
    assert result.steps == len(scan(shapes_dir).train) // 16
    assert np.isfinite(result.final_loss)


def palette_set(root, n: int = 8, side: int = 24):
    """``n`` lossless images whose backgrounds (channels 20-200) cannot make a foreground colour:
    image i's foreground is a square of (255, 20 + 25 i, 0)."""
    rng = np.random.default_rng(2)
    for i in range(n):
        image = rng.integers(20, 201, (side, side, 3), dtype=np.uint8)
        mask = np.zeros((side, side), np.uint8)
        y, x = rng.integers(0, side - 10, 2)
        mask[y:y + 9, x:x + 9] = 255
        image[mask == 255] = (255, 20 + 25 * i, 0)
        for folder, arr in (("train", image), ("masks/train", mask), ("val", image)):
            (root / folder / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(root / folder / f"c{i % 2}" / f"im{i}.png")
    return scan(root)


def foregrounds(view: torch.Tensor) -> set[int]:
    """The image ids whose foreground colour appears in a (de-normalised) view."""
    x = pixels(view[None])[0]
    g = x[1][x[0] >= 250]
    return {round((v - 20) / 25) for v in g.tolist()}


@pytest.mark.parametrize("name", ["memory", "torch", pytest.param("dali", marks=dali)])
def test_swaps_pair_through_the_loader(tmp_path, name):
    """The hard negative shows the partner's foreground (the sample ``SWAPS_SHIFT`` further in
    the batch, as the methods assume) and no pixel of the anchor's; the extra positive shows the
    anchor's foreground and no other (backgrounds filled on the fly)."""
    from fastssl.pipelines.views import ViewSpec

    index = palette_set(tmp_path)
    ld = make_loader(name, index.train, [ViewSpec(24, **IDENTITY)] * 2, batch_size=4,
                     workers=0 if name == "torch" else 1,
                     bg=BgOptions("swaps", 1.0, mask_root=tmp_path))
    seen = 0
    for b in ld.epoch(0):
        ids = [foregrounds(anchor) for anchor in b["views"][0]]
        assert all(len(a) == 1 for a in ids)
        for i, (pos, neg) in enumerate(zip(b["bg_positive"], b["bg_negative"], strict=True)):
            assert foregrounds(pos) == ids[i]
            assert foregrounds(neg) == ids[(i + SWAPS_SHIFT) % 4] != ids[i]
            seen += 1
    assert seen == len(ld) * 4 > 0

"""The in-memory loader: each batched view op against torchvision, determinism, sharding, errors,
and which loader ``auto`` picks."""

from dataclasses import replace

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from fastssl.data.layout import scan
from fastssl.pipelines import resolve_loader
from fastssl.pipelines.background import BgOptions
from fastssl.pipelines.memory import augment, crop_boxes
from fastssl.pipelines.views import MEAN, STD, ViewSpec, view_specs
from tests.helpers import make_loader
from tests.pipelines.conftest import HAS_DALI

# every random op off: the view is the image itself (normalised)
IDENTITY = ViewSpec(16, (1.0, 1.0), (1.0, 1.0), flip_p=0.0, jitter_p=0.0, gray_p=0.0)


def _images(n=6, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


def _unnormalise(x):
    return x * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)


def _view(images, spec, seed=0):
    return _unnormalise(augment(images, spec, torch.Generator().manual_seed(seed)))


def test_identity_view_is_the_image():
    x = _images()
    torch.testing.assert_close(_view(x, IDENTITY), x.float() / 255, atol=1e-5, rtol=0)


def test_downscaling_resamples_as_torchvision():
    x = _images(size=32)
    want = TF.resize(x.float(), [16, 16], antialias=True) / 255
    torch.testing.assert_close(_view(x, IDENTITY), want, atol=1e-4, rtol=0)
    # plain bilinear at 2x: every output pixel is the mean of its 2x2 block
    sharp = _view(x, replace(IDENTITY, antialias=False))
    torch.testing.assert_close(sharp, torch.nn.functional.avg_pool2d(x.float(), 2) / 255,
                               atol=1e-5, rtol=0)


def test_flip_grey_solarize_blur_match_torchvision():
    x = _images()
    ref = x.float() / 255
    torch.testing.assert_close(_view(x, replace(IDENTITY, flip_p=1.0)), ref.flip(3),
                               atol=1e-5, rtol=0)
    grey = _view(x, replace(IDENTITY, gray_p=1.0))
    torch.testing.assert_close(grey, TF.rgb_to_grayscale(ref, 3), atol=2e-3, rtol=0)
    solar = _view(x, replace(IDENTITY, solarize_p=1.0))
    torch.testing.assert_close(solar, TF.solarize(x, 128).float() / 255, atol=1e-5, rtol=0)
    spec = replace(IDENTITY, blur_p=1.0, blur_sigma=(1.0, 1.0))
    want = TF.gaussian_blur(ref, [spec.blur_kernel] * 2, [1.0, 1.0])
    torch.testing.assert_close(_view(x, spec), want, atol=1e-4, rtol=0)


def test_colour_jitter_keeps_range_and_hue_keeps_luma():
    x = _images(n=64)
    jittered = _view(x, replace(IDENTITY, jitter_p=1.0, jitter=(0.8, 0.8, 0.8, 0.2)))
    assert jittered.min() >= -1e-5 and jittered.max() <= 1 + 1e-5
    assert not torch.allclose(jittered, x.float() / 255, atol=1e-2)
    # hue alone rotates chroma around the grey axis: luma is unchanged where nothing clips
    mid = (x // 4 + 96).to(torch.uint8)  # colours in [96, 159]: a 0.5-turn rotation stays in range
    hue = _view(mid, replace(IDENTITY, jitter_p=1.0, jitter=(0.0, 0.0, 0.0, 0.5)))
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    torch.testing.assert_close((hue * luma).sum(1), (mid.float() / 255 * luma).sum(1),
                               atol=2e-3, rtol=0)
    assert not torch.allclose(hue, mid.float() / 255, atol=1e-2)


def test_crop_boxes_respect_scale_and_image():
    spec = ViewSpec(16, (0.25, 0.5))
    boxes = crop_boxes(4000, 40, 60, spec, torch.Generator().manual_seed(0))
    assert torch.equal(boxes, boxes.round())  # whole pixels, as torchvision
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 60).all() and (boxes[:, 3] <= 40).all()
    area = w * h / (40 * 60)
    assert area.max() <= 0.52 and area.min() >= 0.23  # the scale range, up to rounding
    assert 0.35 < area.mean() < 0.4
    # nothing fits (area 1 at a 4:3 image with aspect 1): torchvision's centred fallback
    full = crop_boxes(8, 30, 40, ViewSpec(16, (1.0, 1.0), (1.0, 1.0)),
                      torch.Generator().manual_seed(0))
    assert torch.equal(full, torch.tensor([[5.0, 0.0, 35.0, 30.0]]).expand(8, 4))


def test_loader_determinism_shards_and_views(shapes_dir):
    index = scan(shapes_dir)
    specs = view_specs("swav", crop_size=24, global_crops=2, global_scale=(0.14, 1.0),
                       local_crops=2, local_crop_size=12)
    loader = make_loader("memory", index.train, specs, batch_size=8, workers=2, seed=3)
    assert len(loader) == 10 and loader.corrupt_count == 0
    batches = [(b["views"], b["labels"]) for b in loader.epoch(1)]
    views, labels = batches[0]
    assert [tuple(v.shape) for v in views] == [(8, 3, 24, 24)] * 2 + [(8, 3, 12, 12)] * 2
    resumed = next(loader.epoch(1, start_batch=4))["views"]
    for a, b in zip(batches[4][0], resumed, strict=True):
        torch.testing.assert_close(a, b)
    assert not torch.equal(views[0], views[1])  # two different views of the same images
    shards = [make_loader("memory", index.train, specs, batch_size=4, workers=1, seed=3, rank=r,
                                world=2) for r in range(2)]
    seen = [y for s in shards for b in s.epoch(1) for y in b["labels"].tolist()]
    assert sorted(seen) == sorted(y for _, ys in batches for y in ys.tolist())


def test_corrupt_file_is_counted_and_replaced(tmp_path, shapes_dir, caplog):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(shapes_dir, root)
    index = scan(root)
    bad = index.train.paths[5]
    bad.write_bytes(bad.read_bytes()[:40])
    loader = make_loader("memory", index.train, [IDENTITY], batch_size=8, workers=1, seed=0)
    assert loader.corrupt_count == 1 and str(bad) in caplog.text
    assert len(loader.images) == len(index.train)


def test_unsupported_options_and_mixed_sizes_are_errors(tmp_path, shapes_dir):
    from PIL import Image

    index = scan(shapes_dir)
    strong = view_specs("strong", crop_size=16, global_crops=1, global_scale=(0.2, 1.0))
    with pytest.raises(ValueError, match="RandAugment"):
        make_loader("memory", index.train, strong, batch_size=8, workers=1, seed=0)
    odd = tmp_path / "odd"
    for split, size in (("train", 16), ("train", 20), ("val", 16)):
        (odd / split / "a").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (size, size)).save(odd / split / "a" / f"{size}.png")
    with pytest.raises(ValueError, match="one size"):
        make_loader("memory", scan(odd).train, [IDENTITY], batch_size=1, workers=1, seed=0)
    assert resolve_loader("auto", "cpu", scan(odd).train, [IDENTITY]) == "torch"


def test_auto_picks_memory_on_cpu_when_it_can(shapes_dir):
    split = scan(shapes_dir).train
    simclr = view_specs("simclr", crop_size=16, global_crops=2, global_scale=(0.2, 1.0))
    strong = view_specs("strong", crop_size=16, global_crops=1, global_scale=(0.2, 1.0))
    assert resolve_loader("auto", "cpu", split, simclr) == "memory"
    assert resolve_loader("auto", "cpu", split, strong) == "torch"
    assert resolve_loader("auto", "cpu", split, simclr, bg=BgOptions("swaps")) == "memory"
    assert resolve_loader("auto", "cuda", split, simclr) == ("dali" if HAS_DALI else "memory")
    assert resolve_loader("torch", "cpu", split, simclr) == "torch"

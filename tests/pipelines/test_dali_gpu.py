"""The DALI loader on the GPU against the same loader on the CPU: SwAV multi-crop views come out
on the device with the CPU run's shapes, and nvJPEG ("mixed") decodes the JPEG set to the
pixels libjpeg-turbo gives (same seeded epoch order, identity views, so samples line up).
Skipped without a GPU; `pytest -m "gpu and dali"` runs them (benchmarks/gpu_suite.sh)."""

from __future__ import annotations

import torch

from fastssl.data.layout import scan
from fastssl.pipelines.views import STD, ViewSpec, view_specs
from tests.helpers import make_loader
from tests.pipelines.conftest import DALI_GPU

pytestmark = DALI_GPU

SWAV = dict(crop_size=32, global_crops=2, global_scale=(0.14, 1.0), local_crops=6,
            local_crop_size=16)


def epoch(split, specs, device: str, batch_size: int = 8) -> list:
    """``(views, labels)`` of every batch of epoch 0."""
    ld = make_loader("dali", split, specs, batch_size=batch_size, workers=2, device_type=device)
    return [(b["views"], b["labels"]) for b in ld.epoch(0)]


def test_multicrop_views_on_the_gpu(shapes_dir):
    split = scan(shapes_dir).train
    specs = view_specs("swav", **SWAV)
    gpu, cpu = epoch(split, specs, "cuda"), epoch(split, specs, "cpu")
    assert len(gpu) == len(cpu) == len(split) // 8
    for (gv, gl), (cv, cl) in zip(gpu, cpu, strict=True):
        assert all(v.is_cuda and v.dtype == torch.float32 for v in gv)
        assert [v.shape for v in gv] == [v.shape for v in cv]
        assert torch.equal(gl.cpu(), cl)  # the same samples in the same order
    views = torch.cat([x.flatten() for views, _ in gpu for x in views])
    assert torch.isfinite(views).all() and -1.5 < views.mean() < 1.5


def test_nvjpeg_decodes_like_the_cpu(shapes_dir):
    """Identity views (whole image, no flip or colour ops) of the 32 px JPEGs: decoders may
    differ by rounding in the IDCT and chroma upsampling (a level or two at some pixels); a
    wrong colour conversion, channel order or a misplaced crop would be tens of levels."""
    split = scan(shapes_dir).train
    spec = ViewSpec(32, (1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, gray_p=0.0)
    std = torch.tensor(STD)[:, None, None]  # normalised difference -> pixel levels
    diffs = []
    for (gv, _), (cv, _) in zip(epoch(split, [spec], "cuda"), epoch(split, [spec], "cpu"),
                                strict=True):
        diffs.append(((gv[0].cpu() - cv[0]) * std * 255).abs())
    d = torch.cat(diffs)
    assert d.mean() < 1.5, d.mean()
    assert torch.quantile(d.flatten(), 0.99) < 8


def test_blur_and_solarize_views_on_the_gpu(shapes_dir):
    """BYOL's asymmetric views (blur always / solarize 0.2) build and run on the GPU."""
    split = scan(shapes_dir).train
    specs = view_specs("byol", crop_size=32, global_crops=2, global_scale=(0.08, 1.0))
    batches = epoch(split, specs, "cuda", batch_size=16)
    assert len(batches) == len(split) // 16
    assert all(v.is_cuda and v.shape == (16, 3, 32, 32) for views, _ in batches for v in views)

"""The DALI loader on CPU: multi-crop shapes, sharding counts, resume, bad files, presets."""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import replace

import pytest
import torch

from fastssl.data.layout import Split, scan
from fastssl.pipelines.batches import epoch_batches
from fastssl.pipelines.views import view_specs
from tests.helpers import make_loader

pytestmark = [pytest.mark.dali, pytest.mark.skipif(
    importlib.util.find_spec("nvidia.dali") is None, reason="nvidia.dali is not installed")]


def loader(split, specs, **kw):
    kw.setdefault("batch_size", 8)
    return make_loader("dali", split, specs, workers=2, **kw)


def pairs(batches) -> list:
    """``(views, labels)`` of every batch."""
    return [(b["views"], b["labels"]) for b in batches]


SWAV = dict(crop_size=32, global_crops=2, global_scale=(0.14, 1.0), local_crops=3,
            local_crop_size=16)


def test_multicrop_shapes_and_dtypes(shapes_dir):
    split = scan(shapes_dir).train
    ld = loader(split, view_specs("swav", **SWAV))
    assert len(ld) == len(split) // 8
    batches = pairs(ld.epoch(0))
    assert len(batches) == len(ld)
    views, labels = batches[0]
    assert [tuple(v.shape) for v in views] == [(8, 3, 32, 32)] * 2 + [(8, 3, 16, 16)] * 3
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in views)
    assert labels.dtype == torch.long and labels.shape == (8,)
    # normalised: roughly zero-mean, unit-scale (ImageNet statistics on synthetic colours)
    assert -1.5 < views[0].mean() < 1.5 and 0.3 < views[0].std() < 2.0
    # the crops of one sample differ (independent randomness per view)
    assert not torch.equal(views[0], views[1])


def test_sharding_counts_two_ranks(shapes_dir):
    """Two shards: every sample at most once per epoch, equal steps, only the incomplete last
    global batch left out, and the same order as the torchvision loader."""
    base = scan(shapes_dir).train
    n = 76  # 76 = 4 global batches of 16 + 12 left out
    split = Split("train", base.paths[:n], list(range(n)))  # label = sample id
    specs = view_specs("simclr", crop_size=16, global_crops=2, global_scale=(0.2, 1.0))
    for epoch in (0, 1):
        seen = []
        for rank in (0, 1):
            ld = loader(split, specs, rank=rank, world=2)
            ids = [labels.tolist() for _, labels in pairs(ld.epoch(epoch))]
            assert len(ids) == len(ld) == 4
            assert ids == epoch_batches(n, 8, seed=0, epoch=epoch, rank=rank, world=2)
            seen += sum(ids, [])
        assert len(seen) == len(set(seen)) == 64


def test_resume_replays_exactly(shapes_dir):
    split = scan(shapes_dir).train
    specs = view_specs("byol", crop_size=16, global_crops=2, global_scale=(0.08, 1.0))
    full = pairs(loader(split, specs).epoch(1))
    resumed = pairs(loader(split, specs).epoch(1, start_batch=3))
    assert len(resumed) == len(full) - 3
    for (va, la), (vb, lb) in zip(full[3:], resumed, strict=True):
        assert torch.equal(la, lb) and all(torch.equal(a, b) for a, b in zip(va, vb, strict=True))
    other_epoch = pairs(loader(split, specs).epoch(2))
    assert not torch.equal(other_epoch[0][0][0], full[0][0][0])


def test_corrupt_files_are_replaced_and_counted(shapes_dir, tmp_path, caplog):
    split = scan(shapes_dir).train
    paths = list(split.paths[:32])
    data = paths[0].read_bytes()
    truncated = tmp_path / "truncated.jpg"  # caught by the up-front completeness check
    truncated.write_bytes(data[: len(data) // 2])
    # signature and end marker intact, garbage inside: only the decoder notices (mid-epoch)
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"\xff\xd8\xff" + bytes(range(256)) * 8 + b"\xff\xd9")
    paths[5], paths[20] = truncated, garbage
    bad = Split("train", paths, list(range(32)))
    specs = view_specs("simclr", crop_size=16, global_crops=2, global_scale=(0.2, 1.0))
    ld = loader(bad, specs)
    with caplog.at_level(logging.WARNING):
        batches = pairs(ld.epoch(0))
    assert len(batches) == len(ld) == 4
    assert ld.corrupt_count == 2
    assert str(truncated) in caplog.text and str(garbage) in caplog.text
    # replaced deterministically: a second epoch (and a second loader) see the same batches
    again = pairs(loader(bad, specs).epoch(0))
    assert all(torch.equal(a[0][0], b[0][0]) for a, b in zip(batches, again, strict=True))


@pytest.mark.parametrize("name", ["dali", "torch"])
def test_strong_preset_shapes(shapes_dir, name):
    split = scan(shapes_dir).train
    specs = view_specs("strong", crop_size=24, global_crops=1, global_scale=(0.08, 1.0))
    assert specs[0].randaugment == (2, 9) and specs[0].scale_jitter == (0.5, 2.0)
    ld = make_loader(name, split, specs, batch_size=8, workers=0 if name == "torch" else 2)
    views, labels = pairs(ld.epoch(0))[0]
    assert [tuple(v.shape) for v in views] == [(8, 3, 24, 24)]
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in views)
    # scale jitter pads with zeros (black) when the image shrinks below the crop
    strong = replace(specs[0], scale_jitter=(0.5, 0.5), randaugment=(0, 0))
    ld = make_loader(name, split, [strong], batch_size=8, workers=0 if name == "torch" else 2)
    v = next(iter(ld.epoch(0)))["views"][0]
    black = (torch.tensor([0.0, 0, 0]) - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor(
        [0.229, 0.224, 0.225])
    padded = (v - black[None, :, None, None]).abs().amax(1) < 1e-3
    assert padded.float().mean() > 0.5  # a 12 px image inside 24 px: 3/4 of the crop is padding

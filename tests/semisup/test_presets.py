"""Augmentation strengths S1-S4 (Zoph et al. 2020) on every loader that implements them."""

import importlib.util

import pytest
import torch

from fastssl.data.layout import scan
from fastssl.pipelines import resolve_loader
from fastssl.pipelines.views import view_specs
from tests.helpers import make_loader, tiny_shapes


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    return scan(tiny_shapes(tmp_path_factory.mktemp("data"), per_class=1)).train


def _spec(preset):
    return view_specs(preset, crop_size=16, global_crops=1, global_scale=(0.2, 1.0))


def test_presets_add_one_augmentation_each():
    s1, s2, s3, s4 = (_spec(f"s{i}")[0] for i in range(1, 5))
    assert (s1.flip_p, s1.jitter_p, s1.gray_p, s1.blur_p, s1.solarize_p) == (0.5, 0, 0, 0, 0)
    assert not s1.autoaugment and s1.randaugment == (0, 0) and s1.scale_jitter == (0, 0)
    assert s2.autoaugment and s2.scale_jitter == (0, 0)
    assert s3.autoaugment and s3.scale_jitter == (0.5, 2.0)
    assert not s4.autoaugment and s4.randaugment == (2, 30) and s4.scale_jitter == (0.5, 2.0)


def test_memory_loader_takes_s1_only(split):
    assert resolve_loader("auto", "cpu", split, _spec("s1")) == "memory"
    assert resolve_loader("auto", "cpu", split, _spec("s2")) == "torch"
    with pytest.raises(ValueError, match="AutoAugment"):
        make_loader("memory", split, _spec("s2"), batch_size=4, workers=0)


@pytest.mark.parametrize("loader", [
    "torch", pytest.param("dali", marks=[pytest.mark.dali, pytest.mark.skipif(
        importlib.util.find_spec("nvidia.dali") is None, reason="nvidia.dali is not installed")])])
@pytest.mark.parametrize("preset", ["s3", "s4"])
def test_strong_presets_make_views(split, loader, preset):
    ld = make_loader(loader, split, _spec(preset), batch_size=5, workers=0 if loader == "torch"
                     else 1)
    views = next(iter(ld.epoch(0)))["views"]
    assert [tuple(v.shape) for v in views] == [(5, 3, 16, 16)]
    assert torch.isfinite(views[0]).all() and views[0].std() > 0

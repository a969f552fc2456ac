"""The torchvision fallback loader and the epoch order every loader shares."""

import pytest
import torch

from fastssl.data.layout import scan
from fastssl.pipelines.batches import epoch_batches
from fastssl.pipelines.memory import augment
from fastssl.pipelines.torch_loader import view_transform
from fastssl.pipelines.views import ViewSpec, view_specs
from tests.helpers import make_loader, tiny_shapes


def test_epoch_batches_shard_without_overlap():
    one = epoch_batches(100, 8, seed=0, epoch=3, rank=0, world=1)
    shards = [epoch_batches(100, 4, seed=0, epoch=3, rank=r, world=2) for r in range(2)]
    assert len(one) == 12 and all(len(b) == 8 for b in one)
    assert len(shards[0]) == len(shards[1]) == 12
    merged = [a + b for a, b in zip(*shards, strict=True)]  # the global batch is split by rank
    assert merged == one
    seen = [i for b in one for i in b]
    assert len(seen) == len(set(seen)) == 96
    assert epoch_batches(100, 8, seed=0, epoch=4) != one  # reshuffled every epoch


def test_batch_larger_than_dataset_is_an_error():
    import pytest

    with pytest.raises(ValueError, match="larger than the dataset"):
        epoch_batches(10, 8, seed=0, epoch=0, world=2)


def test_views_shapes_and_determinism(tmp_path):
    index = scan(tiny_shapes(tmp_path, per_class=4))
    specs = view_specs("swav", crop_size=24, global_crops=2, global_scale=(0.14, 1.0),
                       local_crops=3, local_crop_size=12)
    loader = make_loader("torch", index.train, specs, batch_size=8, workers=0, seed=1)
    assert len(loader) == 5
    first = next(loader.epoch(0))
    views, labels = first["views"], first["labels"]
    assert [tuple(v.shape) for v in views] == [(8, 3, 24, 24)] * 2 + [(8, 3, 12, 12)] * 3
    assert all(v.dtype == torch.float32 for v in views) and labels.shape == (8,)
    # same (seed, epoch, sample) -> same views, whatever the worker count or start batch
    with_workers = make_loader("torch", index.train, specs, batch_size=8, workers=2, seed=1)
    second = list(with_workers.epoch(0))[1]
    resumed = next(loader.epoch(0, start_batch=1))
    for a, b in zip(second["views"], resumed["views"], strict=True):
        torch.testing.assert_close(a, b)
    # the workers persist across epochs, and the next epoch is a new draw
    assert with_workers._loader.persistent_workers
    assert not torch.equal(list(with_workers.epoch(1))[1]["views"][0], second["views"][0])


def test_loader_leaves_the_global_rng_untouched(tmp_path):
    index = scan(tiny_shapes(tmp_path, per_class=2))
    specs = view_specs("simclr", crop_size=16, global_crops=2, global_scale=(0.2, 1.0))
    loader = make_loader("torch", index.train, specs, batch_size=4, workers=0, seed=0)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    list(loader.epoch(0))  # workers=0: the views are made in this process
    assert torch.equal(torch.get_rng_state(), state)


def test_corrupt_file_is_reported_skipped_and_counted(tmp_path, caplog):
    root = tiny_shapes(tmp_path, per_class=2)
    index = scan(root)
    bad = index.train.paths[3]
    bad.write_bytes(bad.read_bytes()[:40])  # a truncated JPEG
    specs = view_specs("simclr", crop_size=16, global_crops=2, global_scale=(0.2, 1.0))
    loader = make_loader("torch", index.train, specs, batch_size=4, workers=0, seed=0)
    batches = list(loader.epoch(0))
    assert len(batches) == len(loader) == 5
    assert loader.corrupt_count == 1
    assert str(bad) in caplog.text


@pytest.mark.parametrize("ops", [{"gray_p": 1.0}, {"blur_p": 1.0}, {"solarize_p": 1.0},
                                 {"gray_p": 1.0, "blur_p": 1.0}])
def test_deterministic_ops_equal_the_memory_loaders(ops):
    """With the crop the whole image, the torchvision view of greyscale, blur and solarize is the
    memory loader's: no uint8 rounding between the operators (on uint8, torchvision truncates
    greyscale, half a level darker on average: 8e-3 after normalising). What remains is
    torchvision's greyscale weights (0.2989 against ``colour.LUMA``'s 0.299): under 5e-4."""
    spec = ViewSpec(16, (1.0, 1.0), (1.0, 1.0), flip_p=0.0, jitter_p=0.0, blur_sigma=(1.0, 1.0),
                    **{"gray_p": 0.0, **ops})
    x = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8,
                      generator=torch.Generator().manual_seed(0))
    want = augment(x, spec, torch.Generator().manual_seed(0))
    torch.testing.assert_close(torch.stack([view_transform(spec)(im) for im in x]), want,
                               atol=1e-3, rtol=0)

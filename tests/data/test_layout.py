import numpy as np
import pytest
from PIL import Image

from fastssl.data.layout import DataError, scan
from fastssl.data.synth import SHAPES, render_shape, synth_digits
from tests.helpers import tiny_shapes


def test_shapes_layout_and_masks(tmp_path):
    root = tiny_shapes(tmp_path, per_class=3)
    index = scan(root)
    assert index.classes == sorted(SHAPES)
    assert len(index.train) == 30 and len(index.val) == 20 and not index.holdout
    for p in index.train.paths + index.val.paths:
        mask = np.asarray(Image.open(index.mask_path(p)))
        assert mask.shape == (32, 32) and set(np.unique(mask)) <= {0, 255}
        assert 0.02 < (mask == 255).mean() < 0.8


def test_rendered_mask_is_exact():
    image, mask = render_shape(np.random.default_rng(1), 0, 48)
    fg = image[mask == 255]
    assert (fg.max(0).astype(int) - fg.min(0) <= 70).all()  # one shaded colour inside the mask


def test_holdout_without_val(tmp_path):
    root = tiny_shapes(tmp_path, per_class=10)
    import shutil

    shutil.rmtree(root / "val")
    index = scan(root)
    assert index.holdout
    assert len(index.val) == 20 and len(index.train) == 80  # 20% held out, per class
    assert not set(index.val.paths) & set(index.train.paths)
    assert sorted(set(index.val.labels)) == list(range(10))


@pytest.mark.parametrize("build, message", [
    (lambda r: r / "nope", "dataset directory not found"),
    (lambda r: r, "no train/ folder"),
    (lambda r: (r / "train").mkdir() or r, "no class folders"),
    (lambda r: (r / "train" / "a").mkdir(parents=True) or r, "no images"),
])
def test_bad_layouts_name_the_path(tmp_path, build, message):
    root = build(tmp_path)
    with pytest.raises(DataError, match=message) as err:
        scan(root)
    assert "\n" not in str(err.value) and str(tmp_path) in str(err.value)


def test_digits_export(tmp_path):
    index = scan(synth_digits(tmp_path / "digits", size=16))
    assert index.classes == [str(d) for d in range(10)]
    assert len(index.train) + len(index.val) == 1797
    assert Image.open(index.train.paths[0]).size == (16, 16)


def test_raw_pixels_carry_little_class_signal(tmp_path):
    """kNN on raw pixels is near chance (10%): the class is in the shape, not the colours."""
    import torch

    from fastssl.eval.knn import knn_top1

    index = scan(tiny_shapes(tmp_path, per_class=30))

    def load(split):
        x = torch.stack([torch.from_numpy(np.asarray(Image.open(p), dtype=np.float32)).flatten()
                         for p in split.paths])
        return x - x.mean(1, keepdim=True), torch.tensor(split.labels)

    acc = knn_top1(*load(index.train), *load(index.val), k=20)
    assert acc < 30.0

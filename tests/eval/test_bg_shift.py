"""The background-shift variants are built exactly from the masks, and the kNN report has every
variant and gap."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fastssl.data.backgrounds import foreground_free
from fastssl.data.layout import scan
from fastssl.eval.bg_shift import bg_shift_knn, partners, shifted_split
from tests.helpers import tiny_shapes


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return scan(tiny_shapes(tmp_path_factory.mktemp("bgshift"), per_class=2))


def arrays(index, i: int) -> tuple[np.ndarray, np.ndarray]:
    path = index.val.paths[i]
    return (np.asarray(Image.open(path).convert("RGB")),
            np.asarray(Image.open(index.mask_path(path)).convert("L")))


@pytest.mark.parametrize("shift", ["only_fg", "mixed_same", "mixed_rand"])
def test_variants_are_built_exactly_from_the_masks(shapes, shift):
    out = shifted_split(shapes.val, shapes.root, shift, seed=3)
    source = partners(shapes.val.labels, shift, torch.Generator().manual_seed(3))
    for i, x in enumerate(out):
        image, mask = arrays(shapes, i)
        got = x.permute(1, 2, 0).numpy()
        fg = mask == 255
        assert fg.any() and np.array_equal(got[fg], image[fg])
        if shift == "only_fg":
            assert (got[~fg] == 0).all()
            continue
        j = source[i]
        assert j != i
        if shift == "mixed_same":
            assert shapes.val.labels[j] == shapes.val.labels[i]
        background = foreground_free(*arrays(shapes, j))
        assert np.array_equal(got[mask == 0], background[mask == 0])


def test_report_has_every_variant_and_gap(shapes):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten())
    res = bg_shift_knn(net, shapes, ["only_fg", "mixed_same", "mixed_rand"], crop_size=16, k=5,
                       temperature=0.07, device=torch.device("cpu"), workers=0)
    assert set(res) == {"original", "only_fg", "mixed_same", "mixed_rand", "gap[only_fg]",
                        "gap[mixed_same]", "gap[mixed_rand]", "bg_gap"}
    assert res["gap[mixed_rand]"] == pytest.approx(res["original"] - res["mixed_rand"])
    with pytest.raises(ValueError, match="bg_shift"):
        shifted_split(shapes.val, shapes.root, "only_bg")

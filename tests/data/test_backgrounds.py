"""``fastssl data backgrounds``: the bank holds every masked image's foreground-free background
in the masks' layout, and the loaders read it (per image, no pool) through ``--bg_bank``."""

from __future__ import annotations

import numpy as np
from PIL import Image

from fastssl.data.backgrounds import BANK, bank_path, foreground_free, main
from fastssl.data.layout import scan
from fastssl.data.synth import synth_shapes
from fastssl.pipelines.background import BgOptions, resolve_backgrounds


def test_bank_layout_content_and_use(tmp_path, capsys):
    root = synth_shapes(tmp_path / "s", train_per_class=1, val_per_class=1, size=32,
                        clutter="high")
    index = scan(root)
    assert main([str(root), "--fill", "inpaint"]) == 0
    assert "10 written (inpaint, margin 2 px)" in capsys.readouterr().out
    bank = root / BANK
    for path in index.train.paths:
        image = np.asarray(Image.open(path).convert("RGB"))
        mask = np.asarray(Image.open(index.mask_path(path)))
        stored = np.asarray(Image.open(bank_path(bank, root, path)))
        assert np.array_equal(stored, foreground_free(image, mask, fill="inpaint"))
    assert not (bank / "val").exists()  # train only unless --splits says otherwise
    own, pool = resolve_backgrounds(index.train, BgOptions("random", bank=str(bank),
                                                           mask_root=root))
    assert own == [bank_path(bank, root, p) for p in index.train.paths] and pool == []
    # a directory of arbitrary backgrounds is a pool; each image's own is filled on the fly
    own, pool = resolve_backgrounds(index.val, BgOptions("random", bank=str(bank / "train"),
                                                         mask_root=root))
    assert own == [None] * len(index.val) and len(pool) == len(index.train)

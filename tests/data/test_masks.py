"""`fastssl data masks`: GrabCut with a centre prior against the shapes set's exact masks, the
user-module path, and the coverage report."""

from __future__ import annotations

import shutil

import numpy as np
from PIL import Image

from fastssl.data.layout import scan
from fastssl.data.masks import coverage, main
from fastssl.data.synth import synth_shapes


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a >= 128, b >= 128
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_grabcut_masks_on_shapes(tmp_path, capsys):
    exact = synth_shapes(tmp_path / "exact", train_per_class=8, val_per_class=2, size=64)
    data = tmp_path / "nomasks"
    shutil.copytree(exact, data, ignore=shutil.ignore_patterns("masks"))
    assert main([str(data)]) == 0
    report = capsys.readouterr().out
    assert "100 written" in report and "foreground fraction mean" in report
    index = scan(data)
    scores = [iou(np.asarray(Image.open(index.mask_path(p))),
                  np.asarray(Image.open(exact / index.mask_path(p).relative_to(data))))
              for p in index.train.paths + index.val.paths]
    mean_iou = float(np.mean(scores))
    summary = (f"GrabCut (centre prior) IoU vs exact shapes masks: mean {mean_iou:.3f}, "
               f"median {np.median(scores):.3f} over {len(scores)} images")
    # off-centre shapes on cluttered backgrounds: GrabCut is far from exact but informative
    # (the centre-prior rectangle itself scores about 0.2: shapes cover ~16% of the image)
    rect = np.zeros((64, 64), np.uint8)
    rect[3:61, 3:61] = 255
    baseline = np.mean([iou(rect, np.asarray(Image.open(exact / index.mask_path(p)
                                                        .relative_to(data))))
                        for p in index.train.paths])
    with capsys.disabled():  # reported with -s
        print(f"\n{summary}; centre-rectangle baseline {baseline:.3f}")
    assert mean_iou > 0.45 and mean_iou > baseline + 0.2
    # existing masks are kept unless --overwrite
    assert main([str(data)]) == 0
    assert "0 written" in capsys.readouterr().out


def test_module_masks(tmp_path, monkeypatch, capsys):
    exact = synth_shapes(tmp_path / "exact", train_per_class=1, val_per_class=1, size=32)
    data = tmp_path / "d"
    shutil.copytree(exact, data, ignore=shutil.ignore_patterns("masks"))
    (tmp_path / "toyseg.py").write_text(
        "import torch\n"
        "class Left(torch.nn.Module):\n"
        "    def forward(self, x):  # (1, 2, h, w) class logits at half resolution\n"
        "        h, w = x.shape[-2] // 2, x.shape[-1] // 2\n"
        "        out = torch.zeros(1, 2, h, w)\n"
        "        out[:, 1] = -1.0\n"
        "        out[:, 1, :, : w // 2] = 1.0\n"
        "        return {'out': out}\n"
        "def make():\n"
        "    return Left()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main([str(data), "--module", "toyseg:make"]) == 0
    assert "median 0.500" in capsys.readouterr().out
    m = np.asarray(Image.open(scan(data).mask_path(scan(data).train.paths[0])))
    assert m.shape == (32, 32) and (m[:, :16] == 255).all() and (m[:, 16:] == 0).all()


def test_coverage_counts():
    s = coverage([0.0, 1.0, 0.25, 0.5])
    assert s["empty"] == 1 and s["full"] == 1 and s["median_fg"] == 0.375

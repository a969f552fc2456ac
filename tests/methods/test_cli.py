"""``fastssl train --method NAME`` end to end (one short epoch) for every registered method."""

from __future__ import annotations

import json

import pytest

from fastssl.cli import main
from fastssl.data.synth import synth_shapes
from fastssl.methods import METHODS

TINY = ["--backbone=small_cnn", "--crop_size=16", "--local_crop_size=8", "--batch_size=16",
        "--workers=0", "--proj_hidden_dim=32", "--proj_dim=16", "--knn_k=5", "--progress=false",
        "--log_every=1"]
EXTRA = {
    "byol": ["--pred_hidden_dim=32"],
    "simsiam": ["--pred_hidden_dim=8"],
    "mocov3": ["--pred_hidden_dim=32"],
    "swav": ["--n_prototypes=12", "--queue_length=32", "--queue_start_epoch=0"],
    "mocov2": ["--queue_size=64"],
}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return synth_shapes(root / "shapes", train_per_class=8, val_per_class=2, size=32)


@pytest.mark.parametrize(  # image methods (the video methods have their own tests)
    "name", sorted(n for n, c in METHODS.items() if "views" in c.inputs))
def test_cli_train_one_epoch(name, tiny_data, tmp_path, capsys):
    out = tmp_path / name
    rc = main(["train", "--method", name, "--data", str(tiny_data), "--epochs", "1",
               "--out", str(out), *TINY, *EXTRA.get(name, [])])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert rc == 0, last
    assert last.startswith("knn_top1=")
    assert (out / "checkpoints" / "last.pt").is_file() and (out / "config.yaml").is_file()
    records = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 5  # 80 images / 16 per batch
    assert all(abs(v) < 1e6 for v in losses)
    assert any("knn_top1" in r for r in records)

"""``fastssl eval``: evaluate a checkpoint's frozen backbone (kNN or linear probe)."""

from __future__ import annotations

from fastssl import checkpoint
from fastssl.config import from_dict
from fastssl.data.layout import scan
from fastssl.eval.features import extract
from fastssl.eval.knn import knn_top1
from fastssl.eval.linear import linear_top1
from fastssl.methods import build_method
from fastssl.pipelines.torch_loader import eval_loader


def evaluate_checkpoint(path: str, protocol: str, *, data: str | None = None,
                        device: str = "auto", workers: int = 2) -> float:
    from fastssl.train import dataset_index, resolve_device

    state = checkpoint.load(path)
    cfg = from_dict(state["config"])
    dev = resolve_device(device)
    model = build_method(cfg)
    model.load_state_dict(state["model"])
    model.to(dev).eval()
    index = scan(data) if data else dataset_index(cfg, rank=0)
    train = extract(model.embed, eval_loader(index.train, cfg.crop_size, workers=workers), dev)
    test = extract(model.embed, eval_loader(index.val, cfg.crop_size, workers=workers), dev)
    if protocol == "knn":
        return knn_top1(*train, *test, k=cfg.knn_k, temperature=cfg.knn_temperature)
    return linear_top1(*train, *test)

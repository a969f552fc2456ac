"""One search candidate: a short ``fastssl train --method elo`` run with its weights, scored by
the Zipf-KL fitness of its RGB embeddings of the unlabelled train clips, plus kNN top-1 on the
held-out split when the data has labels.

The scoring clips (the centre clip of every train and held-out video, no augmentation) are the
same for every candidate: they are decoded once per search into ``OUT/eval_clips.pt``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch

from fastssl.checkpoint import save_atomic
from fastssl.config import Config
from fastssl.data import dataset_index
from fastssl.distributed import resolve_device
from fastssl.elo.fitness import zipf_fitness
from fastssl.elo.report import Result
from fastssl.elo.search import SearchSpec
from fastssl.eval.knn import knn_top1
from fastssl.eval.run import features
from fastssl.methods import Method, load_method, resolve_config
from fastssl.pipelines.clips import clip_spec
from fastssl.train import train

# proxy runs: a short, small run (the options of fastssl train override these)
PROXY_DEFAULTS: dict[str, Any] = {"epochs": 1, "batch_size": 32, "crop_size": 16,
                                  "clip_frames": 4, "lr": 0.02, "warmup_epochs": 0.0,
                                  "workers": 1, "knn_k": 20}


def proxy_config(spec: SearchSpec, weights: dict[str, float], out: Path) -> Config:
    """The run config of one candidate: inline weights, so its checkpoint needs no file."""
    inline = ",".join(f"{t}={w:.6g}" for t, w in weights.items())
    return resolve_config(None, {**PROXY_DEFAULTS, **spec.train, "method": "elo",
                                 "data": spec.data, "out": str(out), "seed": spec.seed,
                                 "elo_weights": inline, "eval_every": -1, "progress": False})


def scoring_clips(spec: SearchSpec, cfg: Config) -> dict[str, torch.Tensor]:
    """Centre clips and labels of the train and held-out splits (decoded once per search)."""
    path = Path(spec.out) / "eval_clips.pt"
    if path.exists():
        return torch.load(path)
    print(f"decoding the centre clips of {cfg.data} for scoring (once per search: {path})",
          file=sys.stderr, flush=True)
    (train_x, train_y), (val_x, val_y) = features(
        lambda x: x, dataset_index(cfg.data), crop_size=cfg.crop_size, workers=cfg.workers,
        device=torch.device("cpu"), clip=clip_spec(cfg))
    clips = {"train": train_x, "train_labels": train_y, "val": val_x, "val_labels": val_y}
    save_atomic(clips, path)
    return clips


@torch.no_grad()
def embed(model: Method, x: torch.Tensor, device: torch.device,
          batch: int = 64) -> torch.Tensor:
    model.eval()
    return torch.cat([model.embed(x[i:i + batch].to(device)).float().cpu()
                      for i in range(0, len(x), batch)])


def evaluate_candidate(spec: SearchSpec, weights: dict[str, float], folder: Path) -> Result:
    """Train the proxy of ``weights`` in ``folder/run`` and score it."""
    t0 = time.time()
    cfg = proxy_config(spec, weights, folder / "run")
    clips = scoring_clips(spec, cfg)
    train(cfg)
    model, _ = load_method(folder / "run" / "checkpoints" / "last.pt")
    device = resolve_device(cfg.device)
    model.to(device)
    train_feats = embed(model, clips["train"], device)
    result: Result = {"fitness": zipf_fitness(train_feats, spec.k, spec.s, seed=spec.seed),
                      "knn": None}
    labels = clips["train_labels"]
    if len(clips["val"]) and int(labels.max()) > int(labels.min()):
        result["knn"] = knn_top1(train_feats, labels, embed(model, clips["val"], device),
                                 clips["val_labels"], k=cfg.knn_k,
                                 temperature=cfg.knn_temperature)
    result["seconds"] = time.time() - t0
    return result

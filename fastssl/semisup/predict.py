"""Predictions of a classifier on a split: top-1 on the held-out images and the teacher's
pseudo-labels."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastssl.config import Config
from fastssl.data.layout import DatasetIndex, Split
from fastssl.methods.base import Method
from fastssl.pipelines.torch_loader import eval_loader
from fastssl.semisup.models import Classifier

PSEUDO_MODES = ("soft", "hard")


@torch.no_grad()
def probabilities(model: Classifier, split: Split, *, crop_size: int, workers: int,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax outputs (N, C) on the evaluation view (resize + centre crop) of every image of
    ``split``, in order, and the split's labels (N,); evaluation mode meanwhile."""
    was_training = model.training
    model.eval()
    probs, labels = [], []
    try:
        for images, y in eval_loader(split, crop_size, workers=workers):
            probs.append(F.softmax(model.logits(images.to(device)).float(), dim=1).cpu())
            labels.append(y)
    finally:
        model.train(was_training)
    return torch.cat(probs), torch.cat(labels)


def top1(model: Method, index: DatasetIndex, cfg: Config, device: torch.device) -> float:
    """Top-1 accuracy (%) on the held-out split (``fastssl.train.Task.evaluate``)."""
    if not isinstance(model, Classifier):
        raise TypeError(f"top-1 needs a classifier, got {type(model).__name__}")
    probs, labels = probabilities(model, index.val, crop_size=cfg.crop_size,
                                  workers=cfg.workers, device=device)
    return 100.0 * (probs.argmax(1) == labels).float().mean().item()


def pseudo_targets(probs: torch.Tensor, labelled: torch.Tensor, mode: str,
                   threshold: float) -> torch.Tensor:
    """Pseudo-label distributions (N, C) from teacher probabilities (N, C): the probabilities
    (``soft``) or their one-hot argmax (``hard``) for every image that is not ``labelled`` (N,)
    and whose top probability is at least ``threshold``; zero rows for the others."""
    if mode not in PSEUDO_MODES:
        raise ValueError(f"--pseudo: {mode!r} is not one of {', '.join(PSEUDO_MODES)}")
    conf, top = probs.max(1)
    keep = (conf >= threshold) & ~labelled
    targets = probs if mode == "soft" else F.one_hot(top, probs.shape[1]).to(probs.dtype)
    return targets * keep[:, None].to(probs.dtype)

"""The method interface the training loop relies on (and nothing else).

A method is an ``nn.Module`` that owns its backbone, heads and loss:

- ``forward(views, step) -> dict`` with at least ``"loss"`` (scalar tensor); other entries are
  scalar tensors logged as metrics. ``views`` is a list of image batches (global crops first).
  Do not branch on ``step`` in ``forward``: it is compiled; step-dependent state (EMA momentum,
  queue switch-on) is updated in the hooks below.
- ``before_optimizer_step(step, total_steps)``: gradient surgery (e.g. frozen prototypes).
- ``on_train_step_end(step, total_steps)``: EMA / queue / prototype updates, outside the graph.
- ``param_groups(cfg)``: optimiser parameter groups (LARS / weight-decay exclusion flags and
  per-group learning-rate factors are read by ``fastssl.optim``).
- ``embed(images)``: backbone features used for evaluation.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import nn

from fastssl.config import Config
from fastssl.models.backbones import build_backbone


@dataclasses.dataclass
class NoArgs:
    """A method without hyper-parameters of its own."""


class Method(nn.Module):
    name: ClassVar[str] = ""
    views: ClassVar[str] = "simclr"  # default augmentation preset (fastssl.pipelines.views)
    Args: ClassVar[type] = NoArgs
    # overrides of general Config defaults that make sense for this method (e.g. multi-crop)
    config_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.backbone, self.feat_dim = build_backbone(
            cfg.backbone, small_stem=cfg.small_stem, image_size=cfg.crop_size
        )

    def forward(self, views: list[torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def before_optimizer_step(self, step: int, total_steps: int) -> None:
        """Called after backward, before the optimiser step."""

    def on_train_step_end(self, step: int, total_steps: int) -> None:
        """Called after the optimiser step."""

    def param_groups(self, cfg: Config) -> list[dict[str, Any]]:
        """One group for every trainable parameter; biases and norm weights flagged for exclusion
        from weight decay and LARS adaptation (as the papers do)."""
        return split_decay(self.named_parameters())

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)


def split_decay(named_params, **group_options: Any) -> list[dict[str, Any]]:
    """Two groups: weights (decay, LARS) and biases / norm parameters (``exclude=True``)."""
    regular, excluded = [], []
    for _, p in named_params:
        if p.requires_grad:
            (excluded if p.ndim <= 1 else regular).append(p)
    groups = [
        {"params": regular, "exclude": False, **group_options},
        {"params": excluded, "exclude": True, **group_options},
    ]
    return [g for g in groups if g["params"]]


def fixed_predictor_lr_groups(model: nn.Module, fixed: bool) -> list[dict[str, Any]]:
    """``split_decay`` groups for every parameter outside ``model.predictor``, then for the
    predictor, whose learning rate is kept at its initial value (no warm-up, no decay) when
    ``fixed`` (SimSiam's recipe: the predictor stays near its optimum as the encoder changes)."""
    rest = [(n, p) for n, p in model.named_parameters() if not n.startswith("predictor.")]
    return split_decay(rest) + split_decay(model.predictor.named_parameters(), fixed_lr=fixed)

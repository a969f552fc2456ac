"""The method contract the training loop relies on (and nothing else).

A method is an ``nn.Module`` built from its ``Args`` dataclass and a :class:`MethodContext`
(backbone spec, world size, steps per epoch, total steps, the inputs the loader delivers). It owns
its backbone, heads and loss:

- ``inputs``: the named inputs it needs from a ``fastssl.batch.Batch`` (image ``views`` today;
  video clips, optical flow and audio spectrograms are further names). The loop checks them
  against what the loader provides before training.
- ``forward(batch) -> dict`` with at least ``"loss"`` (scalar tensor). Other 0-dim entries are
  logged as metrics; every entry is handed to the hooks (e.g. MoCo v2's keys to enqueue). The
  forward is compiled: it must not read Python state that changes between steps.
- ``before_optimizer_step(outputs, step)``: gradient surgery (e.g. frozen prototypes).
- ``on_train_step_end(outputs, step)``: EMA / queue / prototype updates, outside the graph.
- ``param_groups(cfg)``: optimiser parameter groups (LARS / weight-decay exclusion flags and
  per-group learning-rate factors are read by ``fastssl.optim``).
- ``embed(images)``: backbone features used for evaluation.

Buffers (queues) are sized globally, never per process, so checkpoints do not depend on the
world size.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import nn

from fastssl.batch import Batch
from fastssl.config import Config
from fastssl.models.backbones import build_backbone

Outputs = dict[str, torch.Tensor]


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    name: str = "small_cnn"
    small_stem: bool = True
    image_size: int = 32


@dataclasses.dataclass(frozen=True)
class MethodContext:
    """What a method may know about the run besides its own ``Args``."""

    backbone: BackboneSpec = BackboneSpec()
    steps_per_epoch: int = 1
    total_steps: int = 1
    world_size: int = 1
    inputs: frozenset[str] = frozenset({"views", "labels"})
    sync_bn: bool = False
    compute_dtype: torch.dtype = torch.float32  # the autocast dtype (queues are stored in it)

    @classmethod
    def from_config(cls, cfg: Config, *, steps_per_epoch: int, inputs: Iterable[str],
                    world_size: int = 1,
                    compute_dtype: torch.dtype = torch.float32) -> MethodContext:
        return cls(BackboneSpec(cfg.backbone, cfg.small_stem, cfg.crop_size), steps_per_epoch,
                   cfg.epochs * steps_per_epoch, world_size, frozenset(inputs), cfg.sync_bn,
                   compute_dtype)


@dataclasses.dataclass
class NoArgs:
    """A method without hyper-parameters of its own."""


class Method(nn.Module):
    name: ClassVar[str] = ""
    views: ClassVar[str] = "simclr"  # default augmentation preset (fastssl.pipelines.views)
    inputs: ClassVar[tuple[str, ...]] = ("views",)
    Args: ClassVar[type] = NoArgs
    # overrides of general Config defaults that make sense for this method (e.g. multi-crop)
    config_defaults: ClassVar[dict[str, Any]] = {}
    # what ``--bg_mode auto`` picks: the background mode that helped this method most on the
    # cluttered shapes set (benchmarks/results/background-batch64-cpu.md); "" = none measured
    bg_mode_auto: ClassVar[str] = ""

    def __init__(self, args: Any, ctx: MethodContext) -> None:
        super().__init__()
        missing = set(self.inputs) - ctx.inputs
        if missing:
            raise ValueError(f"method '{self.name}' needs the inputs {sorted(missing)}, which "
                             f"the loader does not provide (it provides {sorted(ctx.inputs)})")
        self.ctx = ctx
        spec = ctx.backbone
        self.backbone, self.feat_dim = build_backbone(spec.name, small_stem=spec.small_stem,
                                                      image_size=spec.image_size)

    def forward(self, batch: Batch) -> Outputs:
        raise NotImplementedError

    def before_optimizer_step(self, outputs: Outputs, step: int) -> None:
        """Called after backward, before the optimiser step."""

    def on_train_step_end(self, outputs: Outputs, step: int) -> None:
        """Called after the optimiser step."""

    def param_groups(self, cfg: Config) -> list[dict[str, Any]]:
        """One group for every trainable parameter; biases and norm weights flagged for exclusion
        from weight decay and LARS adaptation (as the papers do)."""
        return split_decay(self.named_parameters())

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)


def split_decay(named_params: Iterable[tuple[str, nn.Parameter]],
                **group_options: Any) -> list[dict[str, Any]]:
    """Two groups: weights (decay, LARS) and biases / norm parameters (``exclude=True``)."""
    regular: list[nn.Parameter] = []
    excluded: list[nn.Parameter] = []
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
    predictor = model.get_submodule("predictor")
    return split_decay(rest) + split_decay(predictor.named_parameters(), fixed_lr=fixed)

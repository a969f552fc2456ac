"""BYOL (Grill et al. 2020): an online network predicts a slowly moving target network.

Online: backbone -> projector (4096-BN-ReLU-256) -> predictor (4096-BN-ReLU-256). Target: an EMA
copy of backbone + projector whose momentum follows tau = 1 - (1 - tau_base)(cos(pi k/K) + 1)/2,
updated after each optimiser step. Loss: 2 - 2 cos(p_online(v1), z_target(v2)), symmetrised.
Augmentations are asymmetric (``byol`` preset: blur 1.0 / 0.1, solarize 0 / 0.2).

Two options from SimSiam, both off as in the paper, which the CPU learning benchmark turns on (see
benchmarks/learning.py): ``proj_last_bn`` ends the projector with BatchNorm without affine
parameters (as SimSiam's and MoCo v3's projectors do), so the target's outputs are centred and
scaled per dimension over the batch; ``fixed_predictor_lr`` keeps the predictor's learning rate
at its initial value while the encoder's is scheduled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fastssl.batch import Batch
from fastssl.config import Config, opt
from fastssl.kernels import negative_cosine
from fastssl.methods.base import Method, MethodContext, Outputs, fixed_predictor_lr_groups
from fastssl.models.ema import cosine_momentum, ema_update_, momentum_copy
from fastssl.models.heads import mlp


@dataclass
class BYOLArgs:
    proj_hidden_dim: int = opt(4096, "projector hidden width")
    proj_dim: int = opt(256, "projector output width")
    pred_hidden_dim: int = opt(4096, "predictor hidden width")
    tau_base: float = opt(0.996, "target momentum at step 0, cosine to 1 at the end")
    proj_last_bn: bool = opt(
        False, "BatchNorm (no affine) on the projector output; not in the paper")
    fixed_predictor_lr: bool = opt(False, "predictor lr not scheduled (SimSiam); not in the paper")


class BYOL(Method):
    name = "byol"
    views = "byol"
    Args = BYOLArgs

    def __init__(self, args: BYOLArgs, ctx: MethodContext) -> None:
        super().__init__(args, ctx)
        a = args
        self.tau_base = a.tau_base
        self.fixed_predictor_lr = a.fixed_predictor_lr
        self.projector = mlp([self.feat_dim, a.proj_hidden_dim, a.proj_dim],
                             last_bn=a.proj_last_bn, last_bn_affine=False)
        self.predictor = mlp([a.proj_dim, a.pred_hidden_dim, a.proj_dim])
        self.target = momentum_copy(self.online())
        self.momentum = self.tau_base  # the value used by the last update (logged by tests)

    def online(self) -> nn.Sequential:
        """Backbone + projector (built on the fly: no second registration of the modules)."""
        return nn.Sequential(self.backbone, self.projector)

    def forward(self, batch: Batch) -> Outputs:
        views = batch["views"]
        # each view is its own BatchNorm batch, as in the official implementation
        p1, p2 = (self.predictor(self.projector(self.backbone(v))) for v in views[:2])
        with torch.no_grad():
            t1, t2 = (self.target(v) for v in views[:2])
        # 2 - 2cos per direction; negative_cosine is -mean(cos) with stop-gradient on the target
        loss = 4 + 2 * (negative_cosine(p1, t2) + negative_cosine(p2, t1))
        return {"loss": loss}

    def param_groups(self, cfg: Config) -> list[dict[str, Any]]:
        return fixed_predictor_lr_groups(self, self.fixed_predictor_lr)

    def on_train_step_end(self, outputs: Outputs, step: int) -> None:
        self.momentum = cosine_momentum(self.tau_base, step, self.ctx.total_steps)
        ema_update_(self.target, self.online(), self.momentum)


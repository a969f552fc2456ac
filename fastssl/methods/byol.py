"""BYOL (Grill et al. 2020): an online network predicts a slowly moving target network.

Online: backbone -> projector (4096-BN-ReLU-256) -> predictor (4096-BN-ReLU-256). Target: an EMA
copy of backbone + projector whose momentum follows tau = 1 - (1 - tau_base)(cos(pi k/K) + 1)/2,
updated after each optimiser step. Loss: 2 - 2 cos(p_online(v1), z_target(v2)), symmetrised.
Augmentations are asymmetric (``byol`` preset: blur 1.0 / 0.1, solarize 0 / 0.2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fastssl.config import Config
from fastssl.kernels import negative_cosine
from fastssl.methods.base import Method
from fastssl.models.ema import cosine_momentum, ema_update_, momentum_copy
from fastssl.models.heads import mlp


@dataclass
class BYOLArgs:
    proj_hidden_dim: int = 4096
    proj_dim: int = 256
    pred_hidden_dim: int = 4096
    tau_base: float = 0.996  # target momentum at step 0, cosine to 1 at the end


class BYOL(Method):
    name = "byol"
    views = "byol"
    Args = BYOLArgs

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        a: BYOLArgs = cfg.args
        self.tau_base = a.tau_base
        self.projector = mlp([self.feat_dim, a.proj_hidden_dim, a.proj_dim])
        self.predictor = mlp([a.proj_dim, a.pred_hidden_dim, a.proj_dim])
        self.target = momentum_copy(self.online())
        self.momentum = self.tau_base  # the value used by the last update (logged by tests)

    def online(self) -> nn.Sequential:
        """Backbone + projector (built on the fly: no second registration of the modules)."""
        return nn.Sequential(self.backbone, self.projector)

    def forward(self, views: list[torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        # each view is its own BatchNorm batch, as in the official implementation
        p1, p2 = (self.predictor(self.projector(self.backbone(v))) for v in views[:2])
        with torch.no_grad():
            t1, t2 = (self.target(v) for v in views[:2])
        # 2 - 2cos per direction; negative_cosine is -mean(cos) with stop-gradient on the target
        loss = 4 + 2 * (negative_cosine(p1, t2) + negative_cosine(p2, t1))
        return {"loss": loss}

    def on_train_step_end(self, step: int, total_steps: int) -> None:
        self.momentum = cosine_momentum(self.tau_base, step, total_steps)
        ema_update_(self.target, self.online(), self.momentum)


"""MoCo v3 (Chen, Xie & He 2021): in-batch contrastive learning with a momentum encoder.

Query: backbone -> projector -> predictor; key: momentum copy of backbone + projector, momentum
following a cosine schedule from ``ema_momentum`` (0.99) to 1. Loss ctr(q1, k2) + ctr(q2, k1), each
InfoNCE over the keys of the global batch scaled by 2τ. Heads as in the official code (bias-free
linear layers): ResNet projector 2 layers 2048 -> 4096 -> 256 with a final BN without affine,
ViT projector 3 layers; predictor 256 -> 4096 -> 256. The ViT backbones already carry the frozen
random patch projection and the fixed 2D sin-cos position embedding (``fastssl.models``).

Under DDP the queries are gathered with gradient and the keys without, and every process computes
the loss of the global batch, so loss and gradients equal the single-process ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fastssl.batch import Batch
from fastssl.config import opt
from fastssl.distributed import gather, gather_with_grad
from fastssl.kernels import info_nce
from fastssl.methods.base import Method, MethodContext, Outputs
from fastssl.models.ema import cosine_momentum, ema_update_, momentum_copy
from fastssl.models.heads import mlp


@dataclass
class MoCoV3Args:
    proj_hidden_dim: int = opt(4096, "projector hidden width")
    proj_dim: int = opt(256, "projector output width")
    pred_hidden_dim: int = opt(4096, "predictor hidden width")
    proj_layers: int = opt(
        0, "projector layers; 0 = the paper's choice: 3 for ViT, 2 for the others")
    ema_momentum: float = opt(0.99, "momentum encoder: value at step 0, cosine schedule to 1")
    temperature: float = opt(1.0, "InfoNCE temperature (paper: 1.0 for ResNet-50, 0.2 for ViT)")


class MoCoV3(Method):
    name = "mocov3"
    views = "byol"
    Args = MoCoV3Args

    def __init__(self, args: MoCoV3Args, ctx: MethodContext) -> None:
        super().__init__(args, ctx)
        a = args
        self.m_base, self.temperature = a.ema_momentum, a.temperature
        layers = a.proj_layers or (3 if ctx.backbone.name.startswith("vit") else 2)
        dims = [self.feat_dim] + [a.proj_hidden_dim] * (layers - 1) + [a.proj_dim]
        self.projector = mlp(dims, bias=False, last_bn=True, last_bn_affine=False)
        self.predictor = mlp([a.proj_dim, a.pred_hidden_dim, a.proj_dim], bias=False)
        self.momentum_encoder = momentum_copy(self.base_encoder())
        self.momentum = self.m_base  # the value used by the last update

    def base_encoder(self) -> nn.Sequential:
        """Backbone + projector (built on the fly: no second registration of the modules)."""
        return nn.Sequential(self.backbone, self.projector)

    def _ctr(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return info_nce(gather_with_grad(q), gather(k), temperature=self.temperature) \
            * (2 * self.temperature)

    def forward(self, batch: Batch) -> Outputs:
        views = batch["views"][:2]
        q1, q2 = (self.predictor(self.projector(self.backbone(v))) for v in views)
        with torch.no_grad():
            k1, k2 = (self.momentum_encoder(v) for v in views)
        return {"loss": self._ctr(q1, k2) + self._ctr(q2, k1)}

    def on_train_step_end(self, outputs: Outputs, step: int) -> None:
        self.momentum = cosine_momentum(self.m_base, step, self.ctx.total_steps)
        ema_update_(self.momentum_encoder, self.base_encoder(), self.momentum)

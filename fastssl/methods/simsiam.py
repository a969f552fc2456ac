"""SimSiam (Chen & He 2021): a predictor on one branch, stop-gradient on the other.

Projector: three layers of 2048 with BN (the last one BN without affine and without ReLU);
predictor: bottleneck 2048 -> 512 -> 2048. Loss: symmetric negative cosine
0.5 (D(p1, sg(z2)) + D(p2, sg(z1))). The predictor's learning rate is kept fixed (not scheduled),
as the paper recommends (``fixed_lr`` parameter group).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastssl.batch import Batch
from fastssl.config import Config, opt
from fastssl.kernels import negative_cosine
from fastssl.methods.base import Method, MethodContext, Outputs, fixed_predictor_lr_groups
from fastssl.models.heads import mlp


@dataclass
class SimSiamArgs:
    proj_hidden_dim: int = opt(2048, "projector hidden width")
    proj_dim: int = opt(2048, "projector output width")
    pred_hidden_dim: int = opt(512, "predictor bottleneck width")
    fixed_predictor_lr: bool = opt(True, "predictor lr kept at its initial value (not scheduled)")


class SimSiam(Method):
    name = "simsiam"
    views = "mocov2"  # SimSiam uses MoCo v2's augmentations
    Args = SimSiamArgs

    def __init__(self, args: SimSiamArgs, ctx: MethodContext) -> None:
        super().__init__(args, ctx)
        a = args
        self.fixed_predictor_lr = a.fixed_predictor_lr
        # official code: bias-free hidden layers; output Linear then BN(affine=False)
        self.projector = mlp([self.feat_dim, a.proj_hidden_dim, a.proj_hidden_dim, a.proj_dim],
                             last_bn=True, last_bn_affine=False, bias=False)
        self.predictor = mlp([a.proj_dim, a.pred_hidden_dim, a.proj_dim])

    def forward(self, batch: Batch) -> Outputs:
        # one BatchNorm batch per view
        z1, z2 = (self.projector(self.backbone(v)) for v in batch["views"][:2])
        p1, p2 = self.predictor(z1), self.predictor(z2)
        loss = 0.5 * (negative_cosine(p1, z2) + negative_cosine(p2, z1))  # z detached inside
        return {"loss": loss}

    def param_groups(self, cfg: Config) -> list[dict[str, Any]]:
        return fixed_predictor_lr_groups(self, self.fixed_predictor_lr)

"""Barlow Twins (Zbontar et al. 2021): make the cross-correlation of two views the identity.

Projector 8192-8192-8192 without biases. The loss standardises each view's embedding over the
batch (BatchNorm without affine: biased variance, eps 1e-5), forms C = z1nᵀ z2n / N and returns
Σ(1 - C_ii)² + λ Σ_{i≠j} C_ij². Under DDP the embeddings are gathered with gradient first, so the
statistics and C are those of the global batch and the loss equals the single-process loss on the
concatenated batch. LARS with a separate (much smaller) learning rate for biases and BN
parameters (``bias_lr_ratio`` = 0.0048 / 0.2 in the paper).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastssl.batch import Batch
from fastssl.config import Config, opt
from fastssl.distributed import gather_with_grad
from fastssl.kernels import barlow_twins_loss
from fastssl.methods.base import Method, MethodContext, Outputs, split_decay
from fastssl.models.heads import mlp


@dataclass
class BarlowTwinsArgs:
    proj_hidden_dim: int = opt(8192, "projector hidden width")
    proj_dim: int = opt(8192, "projector output width")
    lambd: float = opt(0.0051, "weight of the off-diagonal terms")
    bias_lr_ratio: float = opt(0.024, "lr of biases / BN parameters relative to weights")


class BarlowTwins(Method):
    name = "barlow_twins"
    views = "byol"  # the paper uses BYOL's asymmetric augmentations
    Args = BarlowTwinsArgs

    def __init__(self, args: BarlowTwinsArgs, ctx: MethodContext) -> None:
        super().__init__(args, ctx)
        a = args
        self.lambd = a.lambd
        self.bias_lr_ratio = a.bias_lr_ratio
        self.projector = mlp([self.feat_dim, a.proj_hidden_dim, a.proj_hidden_dim, a.proj_dim],
                             bias=False)

    def forward(self, batch: Batch) -> Outputs:
        # one BatchNorm batch per view
        z1, z2 = (self.projector(self.backbone(v)) for v in batch["views"][:2])
        loss = barlow_twins_loss(gather_with_grad(z1), gather_with_grad(z2), lambd=self.lambd)
        return {"loss": loss}

    def param_groups(self, cfg: Config) -> list[dict[str, Any]]:
        groups = split_decay(self.named_parameters())
        for g in groups:
            if g["exclude"]:
                g["lr_scale"] = self.bias_lr_ratio
        return groups

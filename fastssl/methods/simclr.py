"""SimCLR (Chen et al. 2020) and SimCLR v2's deeper head (Chen et al. 2020b).

Both views go through the backbone in one batch (BatchNorm sees both, as in the official code);
negatives are the other 2N-2 embeddings of the global batch, gathered with gradient across
processes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fastssl.config import Config
from fastssl.distributed import gather_with_grad
from fastssl.kernels import info_nce, nt_xent
from fastssl.methods.base import Method
from fastssl.models.heads import mlp


@dataclass
class SimCLRArgs:
    temperature: float = 0.5
    proj_hidden_dim: int = 2048
    proj_dim: int = 128
    # 2 = SimCLR v1 (Linear-BN-ReLU-Linear); 3 = v2 (two hidden layers, BN on the output too)
    head_layers: int = 2
    # projection-head layers kept on top of the backbone by ``embed`` (0 = backbone features);
    # SimCLR v2 fine-tunes from the first layer of its 3-layer head
    embed_head_layers: int = 0


class SimCLR(Method):
    name = "simclr"
    views = "simclr"
    Args = SimCLRArgs

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        a: SimCLRArgs = cfg.args
        if a.head_layers < 2:
            raise ValueError(f"head_layers must be >= 2, got {a.head_layers}")
        if not 0 <= a.embed_head_layers < a.head_layers:
            raise ValueError(f"embed_head_layers must be in [0, {a.head_layers}), "
                             f"got {a.embed_head_layers}")
        self.temperature = a.temperature
        self.embed_head_layers = a.embed_head_layers
        dims = [self.feat_dim] + [a.proj_hidden_dim] * (a.head_layers - 1) + [a.proj_dim]
        self.projector = mlp(dims, last_bn=a.head_layers >= 3)
        self.bg_swaps = cfg.bg_mode == "swaps"  # BG_Swaps views come last

    def forward(self, views: list[torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        batch = views[:2] + (views[-2:] if self.bg_swaps else [])
        z1, z2, *swaps = self.projector(self.backbone(torch.cat(batch))).chunk(len(batch))
        loss = nt_xent(gather_with_grad(z1), gather_with_grad(z2), temperature=self.temperature)
        if swaps:  # BG_Swaps (Ryali et al. 2021): anchor fg on another bg is a positive, another
            # fg on the anchor's bg a hard negative (used as extra negatives, no gradient)
            loss = loss + info_nce(z1, swaps[0], queue=swaps[1], temperature=self.temperature)
        return {"loss": loss}

    def encoder(self, head_layers: int | None = None) -> nn.Sequential:
        """Backbone + the first ``head_layers`` head layers (Linear-BN-ReLU each; default
        ``embed_head_layers``): the network SimCLR v2 fine-tunes (``head_layers=1``)."""
        k = self.embed_head_layers if head_layers is None else head_layers
        return nn.Sequential(self.backbone, *self.projector[: 3 * k])

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder()(images)


class SimCLRv2(SimCLR):
    """SimCLR v2: the 3-layer head (BN on every layer, the output too)."""

    name = "simclr_v2"
    config_defaults = {"head_layers": 3}

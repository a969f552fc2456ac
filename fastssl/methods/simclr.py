"""SimCLR (Chen et al. 2020) and SimCLR v2's deeper head (Chen et al. 2020b).

Both views go through the backbone in one batch (BatchNorm sees both, as in the official code);
negatives are the other 2N-2 embeddings of the global batch, gathered with gradient across
processes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fastssl.batch import Batch, own_foreground_negative
from fastssl.config import opt
from fastssl.distributed import gather_with_grad, rank
from fastssl.kernels import nt_xent
from fastssl.methods.base import Method, MethodContext, Outputs
from fastssl.models.heads import mlp


@dataclass
class SimCLRArgs:
    temperature: float = opt(0.5, "NT-Xent temperature")
    proj_hidden_dim: int = opt(2048, "head hidden width")
    proj_dim: int = opt(128, "head output width")
    head_layers: int = opt(2, "2 = SimCLR v1 (Linear-BN-ReLU-Linear); 3 = v2 (BN on every layer)")
    embed_head_layers: int = opt(
        0, "head layers kept on top of the backbone by embed (0 = backbone features)")


def swaps_loss(z1: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
               temperature: float) -> torch.Tensor:
    """BG_Swaps (Ryali et al. 2021) for SimCLR: each anchor against its extra positive (its
    foreground on another background) among every extra positive and every hard negative (another
    foreground on an anchor's background) of the global batch, all with gradient, as SimCLR treats
    every embedding of the batch. (With the hard negatives as a MoCo-style queue without gradient
    the embeddings collapsed within 15 steps on the cluttered set: the pull reached both sides of
    each pair, the push only the anchors.) The one hard negative that shows the anchor's own
    foreground (``own_foreground_negative``) is left out: scored as a negative, it could only be
    told from the extra positive by its background."""
    q = F.normalize(z1, dim=1)
    n = len(q)
    positives, negatives = gather_with_grad(positive), gather_with_grad(negative)
    keys = F.normalize(torch.cat([positives, negatives]), dim=1)
    own = torch.zeros(n, len(keys), dtype=torch.bool, device=q.device)
    start = len(positives) + rank() * n  # this process's hard negatives
    own[:, start:start + n] = own_foreground_negative(n, q.device)
    logits = (q @ keys.T / temperature).masked_fill(own, float("-inf"))
    target = torch.arange(n, device=q.device) + rank() * n
    return F.cross_entropy(logits, target)


class SimCLR(Method):
    name = "simclr"
    views = "simclr"
    bg_mode_auto = "swaps"  # cluttered set, batch 64: kNN 29.1 -> 40.0 (random p 0.5: 34.8)
    Args = SimCLRArgs

    def __init__(self, args: SimCLRArgs, ctx: MethodContext) -> None:
        super().__init__(args, ctx)
        a = args
        if a.head_layers < 2:
            raise ValueError(f"head_layers must be >= 2, got {a.head_layers}")
        if not 0 <= a.embed_head_layers < a.head_layers:
            raise ValueError(f"embed_head_layers must be in [0, {a.head_layers}), "
                             f"got {a.embed_head_layers}")
        self.temperature = a.temperature
        self.embed_head_layers = a.embed_head_layers
        dims = [self.feat_dim] + [a.proj_hidden_dim] * (a.head_layers - 1) + [a.proj_dim]
        self.projector = mlp(dims, last_bn=a.head_layers >= 3)
        self.bg_swaps = {"bg_positive", "bg_negative"} <= ctx.inputs

    def forward(self, batch: Batch) -> Outputs:
        views = batch["views"][:2]
        if self.bg_swaps:
            views += [batch["bg_positive"], batch["bg_negative"]]
        z1, z2, *swaps = self.projector(self.backbone(torch.cat(views))).chunk(len(views))
        loss = nt_xent(gather_with_grad(z1), gather_with_grad(z2), temperature=self.temperature)
        if swaps:
            loss = loss + swaps_loss(z1, swaps[0], swaps[1], self.temperature)
        return {"loss": loss}

    def encoder(self, head_layers: int | None = None) -> nn.Sequential:
        """Backbone + the first ``head_layers`` head layers (Linear-BN-ReLU each; default
        ``embed_head_layers``): the network SimCLR v2 fine-tunes (``head_layers=1``)."""
        k = self.embed_head_layers if head_layers is None else head_layers
        return nn.Sequential(self.backbone, *list(self.projector)[: 3 * k])

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder()(images)


class SimCLRv2(SimCLR):
    """SimCLR v2: the 3-layer head (BN on every layer, the output too)."""

    name = "simclr_v2"
    config_defaults = {"head_layers": 3}

"""SwAV (Caron et al. 2020): swapped prediction of online cluster assignments, with multi-crop.

Backbone -> projector (2048-BN-ReLU-128) -> L2 normalisation -> prototypes (bias-free linear,
3000 outputs, weights re-normalised after every optimiser step and frozen for the first
``freeze_prototypes_iters`` iterations). Codes come from Sinkhorn-Knopp (eps 0.05, 3 iterations)
on the two global crops only, with the sums all-reduced across processes as in the official
code; each code is predicted from every other crop (softmax with temperature 0.1), summed over
those crops / (n_crops - 1), averaged over the two code crops.

Optional queue (small batches): from epoch ``queue_start_epoch``, the last ``queue_length``
global-crop embeddings of the global batch are kept per code crop (newest first), scored by the
current prototypes and prepended to the Sinkhorn input once the queue is full. The queue is
sized globally (checkpoints do not depend on the world size): each process prepends its
1/world slice, so the all-reduced Sinkhorn sums see every queued embedding once, as in the
official code's per-process queues. Whether the queue is in use is decided outside the compiled
graph (``_codes`` runs eagerly), so switching it on costs no recompilation and no host sync.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fastssl.batch import Batch
from fastssl.config import opt
from fastssl.distributed import gather, rank
from fastssl.kernels import sinkhorn_knopp
from fastssl.methods.base import Method, MethodContext, Outputs
from fastssl.models.heads import mlp


@dataclass
class SwAVArgs:
    proj_hidden_dim: int = opt(2048, "projector hidden width")
    proj_dim: int = opt(128, "projector output width")
    n_prototypes: int = opt(3000, "prototypes (clusters)")
    temperature: float = opt(0.1, "softmax temperature of the swapped prediction")
    sinkhorn_eps: float = opt(0.05, "Sinkhorn-Knopp entropy regularisation")
    sinkhorn_iters: int = opt(3, "Sinkhorn-Knopp iterations")
    freeze_prototypes_iters: int = opt(-1, "steps with frozen prototypes; -1 = one epoch")
    queue_length: int = opt(
        0, "queued embeddings per code crop (global); 0 = no queue (paper: 3840 at batch 256)")
    queue_start_epoch: int = opt(15, "epoch from which the queue is filled")


class SwAV(Method):
    name = "swav"
    views = "swav"
    Args = SwAVArgs
    config_defaults = {"local_crops": 2}  # multi-crop on by default (paper: 2 global + 6 local)
    bg_mode_auto = "random"  # cluttered set, batch 64: kNN 28.2 -> 31.5 (p 0.5)
    queue: torch.Tensor

    def __init__(self, args: SwAVArgs, ctx: MethodContext) -> None:
        super().__init__(args, ctx)
        a = self.a = args
        if a.queue_length % ctx.world_size:
            raise ValueError(f"queue_length {a.queue_length} is not divisible by the "
                             f"{ctx.world_size} processes")
        self.projector = mlp([self.feat_dim, a.proj_hidden_dim, a.proj_dim])
        self.prototypes = nn.Linear(a.proj_dim, a.n_prototypes, bias=False)
        self.normalize_prototypes()
        self.freeze_steps = (a.freeze_prototypes_iters if a.freeze_prototypes_iters >= 0
                             else ctx.steps_per_epoch)
        self.queue_start = a.queue_start_epoch * ctx.steps_per_epoch
        self.register_buffer("queue", torch.zeros(2, a.queue_length, a.proj_dim))
        self.queue_filled = 0  # rows filled; Python state read only outside the compiled graph
        self.register_load_state_dict_post_hook(lambda module, keys: module.count_queue_rows())

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))

    @torch.no_grad()
    def count_queue_rows(self) -> None:
        """Recount the filled rows (L2-normalised embeddings are never all zero) after a load."""
        self.queue_filled = int(self.queue[0].abs().sum(1).gt(0).sum())

    def forward(self, batch: Batch) -> Outputs:
        views = batch["views"]
        bs = views[0].shape[0]
        # one backbone call per run of equal-resolution crops (2 global, then the local ones)
        feats, start = [], 0
        for end in range(1, len(views) + 1):
            if end == len(views) or views[end].shape[-1] != views[start].shape[-1]:
                feats.append(self.backbone(torch.cat(views[start:end])))
                start = end
        emb = F.normalize(self.projector(torch.cat(feats)), dim=1)
        scores = self.prototypes(emb)
        n_crops = len(views)
        loss = scores.new_zeros((), dtype=torch.float32)
        for i in range(2):
            q = self._codes(scores[i * bs:(i + 1) * bs].detach(), i)
            for v in range(n_crops):
                if v != i:
                    x = scores[v * bs:(v + 1) * bs].float() / self.a.temperature
                    loss = loss - (q * F.log_softmax(x, dim=1)).sum(dim=1).mean() / (n_crops - 1)
        return {"loss": loss / 2, "embeddings": emb[: 2 * bs].detach()}

    @torch.compiler.disable
    @torch.no_grad()
    def _codes(self, scores: torch.Tensor, crop: int) -> torch.Tensor:
        """Sinkhorn codes of one global crop's batch, this process's queue slice prepended once
        the queue is full (eager: the switch is Python state)."""
        bs, length = scores.shape[0], self.queue.shape[1]
        if length and self.queue_filled >= length:
            n = length // self.ctx.world_size
            mine = self.queue[crop, rank() * n:(rank() + 1) * n]
            scores = torch.cat([self.prototypes(mine), scores])
        return sinkhorn_knopp(scores, self.a.sinkhorn_eps, self.a.sinkhorn_iters,
                              distributed=True)[-bs:]

    def before_optimizer_step(self, outputs: Outputs, step: int) -> None:
        if step < self.freeze_steps:
            self.prototypes.weight.grad = None  # the optimiser skips it (no decay, no momentum)

    @torch.no_grad()
    def on_train_step_end(self, outputs: Outputs, step: int) -> None:
        self.normalize_prototypes()
        length = self.queue.shape[1]
        if length == 0 or step < self.queue_start:
            return
        # the global batch's embeddings, per code crop: (world, 2, b, D) -> (2, world * b, D)
        emb = gather(outputs["embeddings"])
        emb = emb.view(self.ctx.world_size, 2, -1, emb.shape[-1]).transpose(0, 1)
        new = emb.reshape(2, -1, emb.shape[-1]).to(self.queue.dtype)
        n = new.shape[1]
        if n > length:
            raise ValueError(f"SwAV queue_length ({length}) is smaller than the global batch "
                             f"({n})")
        self.queue[:, n:] = self.queue[:, :-n].clone()  # newest first, as in the official code
        self.queue[:, :n] = new
        self.queue_filled = min(length, self.queue_filled + n)

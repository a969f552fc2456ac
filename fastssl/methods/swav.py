"""SwAV (Caron et al. 2020): swapped prediction of online cluster assignments, with multi-crop.

Backbone -> projector (2048-BN-ReLU-128) -> L2 normalisation -> prototypes (bias-free linear,
3000 outputs, weights re-normalised after every optimiser step and frozen for the first
``freeze_prototypes_iters`` iterations). Codes come from Sinkhorn-Knopp (eps 0.05, 3 iterations)
on the two global crops only, with the sums all-reduced across processes as in the official
code; each code is predicted from every other crop (softmax with temperature 0.1), summed over
those crops / (n_crops - 1), averaged over the two code crops.

Optional queue (small batches): from epoch ``queue_start_epoch``, the last ``queue_length``
(global; split over processes) global-crop embeddings are kept per code crop and, once full,
scored by the current prototypes and prepended to the Sinkhorn input. The queue is filled in
``on_train_step_end``; switching it on is a Python flag set there (one recompilation).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fastssl.config import Config
from fastssl.distributed import world_size
from fastssl.kernels import sinkhorn_knopp
from fastssl.methods.base import Method
from fastssl.models.heads import mlp


@dataclass
class SwAVArgs:
    proj_hidden_dim: int = 2048
    proj_dim: int = 128
    n_prototypes: int = 3000
    temperature: float = 0.1
    sinkhorn_eps: float = 0.05
    sinkhorn_iters: int = 3
    freeze_prototypes_iters: int = -1  # -1 = one epoch's worth of iterations
    queue_length: int = 0  # global; 0 = no queue (paper: 3840 for batch 256)
    queue_start_epoch: int = 15


class SwAV(Method):
    name = "swav"
    views = "swav"
    Args = SwAVArgs
    config_defaults = {"local_crops": 2}  # multi-crop on by default (paper: 2 global + 6 local)

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        a: SwAVArgs = cfg.args
        self.a = a
        self.epochs = cfg.epochs
        self.projector = mlp([self.feat_dim, a.proj_hidden_dim, a.proj_dim])
        self.prototypes = nn.Linear(a.proj_dim, a.n_prototypes, bias=False)
        self.normalize_prototypes()
        per_process = a.queue_length // world_size()
        self.register_buffer("queue", torch.zeros(2, per_process, a.proj_dim))
        self.use_queue = False  # set in on_train_step_end once the queue is full
        self._embeddings: torch.Tensor | None = None  # last step's global-crop embeddings

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))

    def forward(self, views: list[torch.Tensor], step: int) -> dict[str, torch.Tensor]:
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
        self._embeddings = emb[: 2 * bs].detach()
        loss = scores.new_zeros((), dtype=torch.float32)
        for i in range(2):
            with torch.no_grad():
                s = scores[i * bs:(i + 1) * bs].detach()
                if self.use_queue:
                    s = torch.cat([self.prototypes(self.queue[i]), s])
                q = sinkhorn_knopp(s, self.a.sinkhorn_eps, self.a.sinkhorn_iters,
                                   distributed=True)[-bs:]
            for v in range(n_crops):
                if v != i:
                    x = scores[v * bs:(v + 1) * bs].float() / self.a.temperature
                    loss = loss - (q * F.log_softmax(x, dim=1)).sum(dim=1).mean() / (n_crops - 1)
        return {"loss": loss / 2}

    def _steps_per_epoch(self, total_steps: int) -> int:
        return max(1, total_steps // self.epochs)

    def before_optimizer_step(self, step: int, total_steps: int) -> None:
        freeze = self.a.freeze_prototypes_iters
        if freeze < 0:
            freeze = self._steps_per_epoch(total_steps)
        if step < freeze:
            self.prototypes.weight.grad = None  # the optimiser skips it (no decay, no momentum)

    @torch.no_grad()
    def on_train_step_end(self, step: int, total_steps: int) -> None:
        self.normalize_prototypes()
        length = self.queue.shape[1]
        if length == 0 or step // self._steps_per_epoch(total_steps) < self.a.queue_start_epoch:
            return
        emb = self._embeddings
        bs = emb.shape[0] // 2
        if bs > length:
            raise ValueError(f"SwAV queue length per process ({length}) is smaller than the "
                             f"batch per process ({bs})")
        # newest first, as in the official code
        self.queue[:, bs:] = self.queue[:, :-bs].clone()
        self.queue[:, :bs] = emb.view(2, bs, -1)
        if not self.use_queue:
            self.use_queue = bool(self.queue[:, -1].any())  # host sync only while filling

"""MoCo v2 (Chen et al. 2020): momentum key encoder and a queue of negatives.

Query encoder: backbone -> MLP head (2048-ReLU-128, no BN, as in the official code). Key encoder:
an EMA copy (constant momentum 0.999) updated after each optimiser step. Loss: InfoNCE with
temperature 0.2 over [positive key, queue of 65536 past keys]. ``symmetric`` (off in the paper;
the ``--symmetric`` option of the official single-GPU CIFAR-10 demo) adds the loss with the views
swapped, ctr(q1, k2) + ctr(q2, k1), and enqueues both keys: twice the signal per step. The
queue is a buffer (no gradient) of L2-normalised keys stored in the compute dtype (normalised and
converted once, at enqueue), updated in ``on_train_step_end`` with the step's keys (returned by
``forward``) gathered from every process, so it is the same on all of them.

BatchNorm: the key batch is shuffled across processes before the key encoder and unshuffled
after (shuffle-BN), so a query and its key never share BatchNorm statistics. With ``sync_bn``
(global statistics) shuffling cannot help and is skipped. In a single process there is no other
device to shuffle with, and one BatchNorm batch lets the current keys share statistics that the
queue's keys lack: the loss then falls by telling "this batch" from "the queue" instead of by
discriminating instances. So a single process emulates ``bn_splits`` devices, as the official
single-GPU CIFAR-10 demo does with its SplitBatchNorm: queries and keys are normalised in groups of
B / bn_splits, and the keys are shuffled between the groups before the key encoder and put back
in order after it.

BG_Swaps (Ryali et al. 2021): when the loader provides ``bg_positive`` / ``bg_negative``, the
keys of the hard negatives (another image's foreground on the anchor's background) join the
queue term of every loss of the step (they are not enqueued), except, for each query, the one
that shows its own foreground (``hard_negative_nce``). The extra positive (the anchor's
foreground on another background) adds two terms: as a key of the first query, and as a query
against the first query's key. With the key term alone, only the momentum encoder ever saw a
composite, and BG_Swaps gained 1.2 kNN points on the cluttered shapes set; with both, 5.8
(``benchmarks/results/background-batch64-cpu.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from fastssl.batch import Batch, own_foreground_negative
from fastssl.config import opt
from fastssl.distributed import gather, rank
from fastssl.kernels import info_nce
from fastssl.methods.base import Method, MethodContext, Outputs
from fastssl.models.ema import ema_update_, momentum_copy
from fastssl.models.heads import mlp


def random_permutation(n: int, device: torch.device) -> torch.Tensor:
    """A uniform random permutation of range(n). Not ``torch.randperm``: indexing a batch with it
    trips inductor's randperm-index pattern under ``torch.compile`` (torch 2.11, "Not all inputs
    to pattern found")."""
    return torch.rand(n, device=device).argsort()


def hard_negative_nce(query: torch.Tensor, key: torch.Tensor, hard: torch.Tensor,
                      queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE with BG_Swaps' hard negatives: logits [q·k, q·hardᵀ, q·queueᵀ]/τ, target 0, as
    ``info_nce`` with the hard negatives (B, D) in front of its queue, except that each query's
    hard negative showing its own foreground (``own_foreground_negative``) is left out. Plain
    PyTorch: the fused kernel takes one set of negatives shared by every query. ``hard`` and
    ``queue`` are L2-normalised and take no gradient."""
    q = F.normalize(query, dim=1)
    k = F.normalize(key, dim=1).to(q.dtype)
    own = own_foreground_negative(len(q), q.device)
    logits = torch.cat([(q * k).sum(1, keepdim=True),
                        (q @ hard.detach().to(q.dtype).T).masked_fill(own, float("-inf")),
                        q @ queue.detach().to(q.dtype).T], 1)
    target = torch.zeros(len(q), dtype=torch.long, device=q.device)
    return F.cross_entropy((logits / temperature).float(), target)


@dataclass
class MoCoV2Args:
    proj_hidden_dim: int = opt(2048, "head hidden width")
    proj_dim: int = opt(128, "head output width")
    queue_size: int = opt(65536, "negative keys in the queue (global)")
    ema_momentum: float = opt(0.999, "key encoder momentum (constant)")
    temperature: float = opt(0.2, "InfoNCE temperature")
    shuffle_bn: bool = opt(
        True, "shuffle-BN under DDP without sync_bn, and over bn_splits groups in one process")
    bn_splits: int = opt(8, "BatchNorm groups emulating devices in a single process (1 = off)")
    symmetric: bool = opt(False, "ctr(q1, k2) + ctr(q2, k1), both keys enqueued (official demo)")


class MoCoV2(Method):
    name = "mocov2"
    views = "mocov2"
    bg_mode_auto = "swaps"  # cluttered set, batch 64: kNN 30.3 -> 36.1 (random p 0.5: 34.9)
    Args = MoCoV2Args
    queue: torch.Tensor
    queue_ptr: torch.Tensor

    def __init__(self, args: MoCoV2Args, ctx: MethodContext) -> None:
        super().__init__(args, ctx)
        a = args
        self.m, self.temperature = a.ema_momentum, a.temperature
        self.symmetric = a.symmetric
        self.shuffle_bn = a.shuffle_bn and not ctx.sync_bn
        if a.bn_splits < 1:
            raise ValueError(f"bn_splits must be >= 1, got {a.bn_splits}")
        self.distributed_shuffle = self.shuffle_bn and ctx.world_size > 1
        self.bn_splits = a.bn_splits if self.shuffle_bn and ctx.world_size == 1 else 1
        self.projector = mlp([self.feat_dim, a.proj_hidden_dim, a.proj_dim], hidden_bn=False)
        self.key_encoder = momentum_copy(self.query_encoder())
        queue = F.normalize(torch.randn(a.queue_size, a.proj_dim), dim=1)
        self.register_buffer("queue", queue.to(ctx.compute_dtype))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.bg_swaps = {"bg_positive", "bg_negative"} <= ctx.inputs

    def query_encoder(self) -> nn.Sequential:
        """Backbone + head (built on the fly: no second registration of the modules)."""
        return nn.Sequential(self.backbone, self.projector)

    def _query(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone(x))

    def _split_bn(self, encoder: Callable[[torch.Tensor], torch.Tensor],
                  x: torch.Tensor) -> torch.Tensor:
        """``encoder`` over ``bn_splits`` groups of the batch (one BatchNorm batch each)."""
        if self.bn_splits == 1:
            return encoder(x)
        if x.shape[0] % self.bn_splits:
            raise ValueError(f"MoCo v2: batch {x.shape[0]} is not divisible by bn_splits "
                             f"{self.bn_splits}")
        return torch.cat([encoder(part) for part in x.chunk(self.bn_splits)])

    @torch.no_grad()
    def _keys_of(self, x: torch.Tensor) -> torch.Tensor:
        if self.bn_splits > 1:  # shuffle-BN between the emulated devices of one process
            perm = random_permutation(x.shape[0], x.device)
            return self._split_bn(self.key_encoder, x[perm])[torch.argsort(perm)]
        if not self.distributed_shuffle:
            return self.key_encoder(x)
        # shuffle-BN (official MoCo): a random permutation of the global batch, broadcast from
        # rank 0; each process encodes its slice of the shuffled batch, then the keys are put
        # back in order.
        x_all = gather(x)
        perm = random_permutation(x_all.shape[0], x.device)
        dist.broadcast(perm, src=0)
        n = x.shape[0]
        mine = perm[rank() * n:(rank() + 1) * n]
        k_all = gather(self.key_encoder(x_all[mine]))
        return k_all[torch.argsort(perm)][rank() * n:(rank() + 1) * n]

    def _nce(self, query: torch.Tensor, key: torch.Tensor,
             hard: torch.Tensor | None) -> torch.Tensor:
        if hard is None:
            return info_nce(query, key, self.queue, temperature=self.temperature,
                            queue_normalized=True)
        return hard_negative_nce(query, key, hard, self.queue, self.temperature)

    def forward(self, batch: Batch) -> Outputs:
        views = batch["views"]
        pairs = [(0, 1), (1, 0)] if self.symmetric else [(0, 1)]
        hard = F.normalize(self._keys_of(batch["bg_negative"]).float(), dim=1) \
            if self.bg_swaps else None
        losses, keys, queries = [], [], []
        for qi, ki in pairs:  # every loss term scores against the queue of earlier steps
            queries.append(self._split_bn(self._query, views[qi]))
            k = self._keys_of(views[ki])
            keys.append(F.normalize(k.float(), dim=1))
            losses.append(self._nce(queries[-1], k, hard))
        if self.bg_swaps:  # the extra positive as a key of the first query, and as a query
            losses.append(self._nce(queries[0], self._keys_of(batch["bg_positive"]), hard))
            losses.append(self._nce(self._split_bn(self._query, batch["bg_positive"]),
                                    keys[0], hard))
        # the keys are enqueued after the step (on_train_step_end)
        return {"loss": torch.stack(losses).sum(), "keys": torch.cat(keys)}

    @torch.no_grad()
    def on_train_step_end(self, outputs: Outputs, step: int) -> None:
        ema_update_(self.key_encoder, self.query_encoder(), self.m)
        keys = gather(outputs["keys"])
        idx = (self.queue_ptr + torch.arange(keys.shape[0], device=keys.device)) % len(self.queue)
        self.queue.index_copy_(0, idx, keys.to(self.queue.dtype))
        self.queue_ptr.add_(keys.shape[0]).remainder_(len(self.queue))

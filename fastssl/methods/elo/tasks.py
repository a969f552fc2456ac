"""ELo's self-supervised tasks, each a small module with its own head (Piergiovanni et al. 2020).

Every task reads the step's shared encodings (:class:`Encoded`: each modality's input, encoder
and features) and returns one scalar loss; the method weighs them (``fastssl.methods.elo``).
Video-like modalities (``rgb``: (B, 3, T, H, W), ``flow``: (B, 2, T, H, W)) have time on axis 2,
``audio`` (B, 1, mels, frames) on axis 3.

- :class:`PredictTask`: L2 reconstruction of the clip's last frame (``horizon=0``) or prediction
  of the next ``horizon`` frames from the first T - horizon.
- :class:`OrderTask`: forward / reversed / shuffled clip, 3-way cross-entropy.
- :class:`ContrastTask`: the same moment across modalities is positive; other videos and the
  same video's other moments (the other RGB views) are negatives; fused ``info_nce``.
- :class:`ViewContrastTask`: RGB only, two moments of a video as positives (a baseline).
- :class:`AlignTask`: aligned versus time-shifted (RGB, modality) pairs, binary cross-entropy.
- :class:`TransferTask`: predict another modality's representation from RGB's (L2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from fastssl.kernels import info_nce
from fastssl.methods.av_contrastive import symmetric_nce
from fastssl.models.heads import mlp

TIME_AXIS = {"rgb": 2, "flow": 2, "audio": 3}
ORDER_CLASSES = ("forward", "reversed", "shuffled")
TARGET_SIZE = 8  # predicted frames are compared at 8 x 8 px: the head stays small


@dataclass
class Encoded:
    """One step's modalities: inputs, encoders and features of the first RGB view (``rgb``),
    the other RGB views (``rgb_others``: other moments of the same videos) and the others."""

    inputs: dict[str, torch.Tensor]
    encoders: dict[str, nn.Module]
    features: dict[str, torch.Tensor]
    rgb_others: list[torch.Tensor] = field(default_factory=list)


def prediction_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error of predicted frames; any matching shapes."""
    return F.mse_loss(pred, target)


def order_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the (B, 3) order logits against labels in {0: forward, 1: reversed,
    2: shuffled}; ln 3 at chance."""
    return F.cross_entropy(logits, labels)


def alignment_loss(aligned: torch.Tensor, shifted: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy: (B,) logits of aligned pairs target 1, of time-shifted pairs 0."""
    logits = torch.cat([aligned, shifted])
    target = torch.cat([torch.ones_like(aligned), torch.zeros_like(shifted)])
    return F.binary_cross_entropy_with_logits(logits, target)


def order_permutations(frames: int) -> torch.Tensor:
    """(3, T) frame orders: forward, reversed and shuffled (even frames, then odd ones: neither
    forward nor reversed for T >= 3)."""
    t = torch.arange(frames)
    shuffled = torch.cat([t[0::2], t[1::2]])
    return torch.stack([t, t.flip(0), shuffled])


class PredictTask(nn.Module):
    """Reconstruct the last frame (``horizon=0``) or predict the next ``horizon`` frames from the
    clip's first T - horizon frames; targets pooled to 8 x 8."""

    def __init__(self, modality: str, feat_dim: int, channels: int, horizon: int) -> None:
        super().__init__()
        if horizon < 0:
            raise ValueError(f"prediction horizon must be >= 0, got {horizon}")
        self.modality, self.horizon = modality, horizon
        self.out_shape = (channels, max(horizon, 1), TARGET_SIZE, TARGET_SIZE)
        self.head = nn.Linear(feat_dim, channels * max(horizon, 1) * TARGET_SIZE ** 2)

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(encoder input, target frames) of a (B, C, T, H, W) clip."""
        if self.horizon == 0:
            return x, x[:, :, -1:]
        if self.horizon >= x.shape[2]:
            raise ValueError(f"cannot predict {self.horizon} frames of a {x.shape[2]}-frame clip")
        t = x.shape[2] - self.horizon
        return x[:, :, :t], x[:, :, t:]

    def forward(self, enc: Encoded) -> torch.Tensor:
        x = enc.inputs[self.modality]
        source, target = self.split(x)
        feats = enc.features[self.modality] if self.horizon == 0 \
            else enc.encoders[self.modality](source)
        target = F.adaptive_avg_pool3d(target, (target.shape[2], TARGET_SIZE, TARGET_SIZE))
        return prediction_loss(self.head(feats).view(-1, *self.out_shape), target)


class OrderTask(nn.Module):
    """Clip ``i`` of the batch is played forward, reversed or shuffled (``i mod 3``: balanced,
    and the loader's order is already random); a linear head names which."""

    def __init__(self, modality: str, feat_dim: int) -> None:
        super().__init__()
        self.modality = modality
        self.head = nn.Linear(feat_dim, len(ORDER_CLASSES))

    def forward(self, enc: Encoded) -> torch.Tensor:
        x = enc.inputs[self.modality]
        labels = torch.arange(x.shape[0], device=x.device) % len(ORDER_CLASSES)
        order = order_permutations(x.shape[2]).to(x.device)[labels]  # (B, T)
        idx = order.view(x.shape[0], 1, -1, 1, 1).expand(-1, x.shape[1], -1, *x.shape[3:])
        return order_loss(self.head(enc.encoders[self.modality](x.gather(2, idx))), labels)


class ContrastTask(nn.Module):
    """RGB and ``modality`` at the same moment are positives. Two fused-InfoNCE terms: the two-way
    cross-modal one (other videos are the negatives: ``symmetric_nce``) and, when the batch has
    other RGB views, modality -> RGB with the other moments as extra negatives (info_nce's
    ``queue``, which holds the hard negatives of the same videos)."""

    def __init__(self, modality: str, rgb_dim: int, dim: int, hidden: int, out: int,
                 temperature: float) -> None:
        super().__init__()
        self.modality, self.temperature = modality, temperature
        self.rgb_head, self.head = mlp([rgb_dim, hidden, out]), mlp([dim, hidden, out])

    def forward(self, enc: Encoded) -> torch.Tensor:
        z_rgb = self.rgb_head(enc.features["rgb"])
        z = self.head(enc.features[self.modality])
        loss = symmetric_nce(z_rgb, z, self.temperature)
        if enc.rgb_others:
            moments = torch.cat([self.rgb_head(f) for f in enc.rgb_others]).detach()
            loss = loss + info_nce(z, z_rgb, queue=moments, temperature=self.temperature)
        return loss


class ViewContrastTask(nn.Module):
    """RGB only: the first two views (other moments of the same video) are positives, other
    videos negatives (clip-level instance discrimination; the baseline without other
    modalities)."""

    def __init__(self, rgb_dim: int, hidden: int, out: int, temperature: float) -> None:
        super().__init__()
        self.temperature = temperature
        self.head = mlp([rgb_dim, hidden, out])

    def forward(self, enc: Encoded) -> torch.Tensor:
        if not enc.rgb_others:
            raise ValueError("contrast:rgb needs two clips per video (--global_crops 2)")
        return symmetric_nce(self.head(enc.features["rgb"]), self.head(enc.rgb_others[0]),
                             self.temperature)


class AlignTask(nn.Module):
    """Is ``modality`` aligned in time with the RGB clip? The shifted pair is the same video's
    RGB at another moment (the second clip, at an independent random time) with the modality.
    Without a second clip, the modality's input is rolled by half its length in time instead,
    which leaves a seam a network can learn to spot."""

    def __init__(self, modality: str, rgb_dim: int, dim: int, hidden: int) -> None:
        super().__init__()
        self.modality = modality
        self.head = mlp([rgb_dim + dim, hidden, 1])

    def forward(self, enc: Encoded) -> torch.Tensor:
        rgb, m = enc.features["rgb"], enc.features[self.modality]
        if enc.rgb_others:
            shifted = torch.cat([enc.rgb_others[0], m], 1)
        else:
            x, axis = enc.inputs[self.modality], TIME_AXIS[self.modality]
            rolled = enc.encoders[self.modality](x.roll(max(1, x.shape[axis] // 2), dims=axis))
            shifted = torch.cat([rgb, rolled], 1)
        aligned = self.head(torch.cat([rgb, m], 1)).squeeze(1)
        return alignment_loss(aligned, self.head(shifted).squeeze(1))


class TransferTask(nn.Module):
    """Predict ``modality``'s features from RGB's (the target is not back-propagated into: the
    modality's network learns from its own tasks, and a shared target would collapse)."""

    def __init__(self, modality: str, rgb_dim: int, dim: int, hidden: int) -> None:
        super().__init__()
        self.modality = modality
        self.head = mlp([rgb_dim, hidden, dim])

    def forward(self, enc: Encoded) -> torch.Tensor:
        return prediction_loss(self.head(enc.features["rgb"]),
                               enc.features[self.modality].detach())

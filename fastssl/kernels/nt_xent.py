"""Fused NT-Xent (SimCLR): the InfoNCE logsumexp kernel with the self-similarity masked.

z = normalise([z1; z2]) (2N×D) plays both query and key of ``contrastive_lse`` with
``exclude_diag=True``; row i's positive is its other view, an O(N·D) dot product done here. The
2N×2N logits are never formed. Gradient math: see ``info_nce.py`` (both kernels run, since queries
and keys are the same tensor; autograd adds the two contributions).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastssl.kernels.info_nce import contrastive_lse


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, *, temperature: float = 0.5) -> torch.Tensor:
    """Fused NT-Xent, same semantics as ``reference.nt_xent``."""
    scale = 1.0 / temperature
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    pos = (z[:n].float() * z[n:].float()).sum(dim=1) * scale
    lse = contrastive_lse(z, z, None, scale, True)
    return (lse - torch.cat([pos, pos])).mean()

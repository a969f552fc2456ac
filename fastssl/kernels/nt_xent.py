"""Fused NT-Xent (SimCLR): the contrastive op of ``info_nce.py`` in its NT_XENT mode.

z = [z1; z2] (2N×D, the one concatenation) plays both query and key: the self-similarity is
excluded and row i's positive is row i ± N, inside the kernels; z's gradient adds the row and
key parts in the backward kernel. The 2N×2N logits are never formed.
"""

from __future__ import annotations

import torch

from fastssl.kernels.info_nce import NT_XENT, contrastive_loss, needs_grad


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, *, temperature: float = 0.5) -> torch.Tensor:
    """Fused NT-Xent, same semantics as ``reference.nt_xent``."""
    z = torch.cat([z1, z2.to(z1.dtype)])
    need = needs_grad(z)
    return contrastive_loss(z, None, None, 1.0 / temperature, NT_XENT, False, need, need)[0]

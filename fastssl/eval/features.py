"""Feature extraction with a frozen encoder."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch


@torch.no_grad()
def extract(embed: Callable[[torch.Tensor], torch.Tensor],
            batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
            device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``embed`` over ``(images, labels)`` batches; float32 features and labels (CPU)."""
    feats, labels = [], []
    for images, y in batches:
        feats.append(embed(images.to(device, non_blocking=True)).float().cpu())
        labels.append(y)
    return torch.cat(feats), torch.cat(labels)

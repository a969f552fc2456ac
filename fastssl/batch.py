"""The named inputs of one training step: what loaders produce and methods consume.

A method declares the names it needs (``Method.inputs``); a loader says which it provides
(``LoaderSpec.provides``); the loop checks one against the other before training. New modalities
(video clips, optical flow, audio spectrograms) are new names here, not new loop code.
"""

from __future__ import annotations

from typing import TypedDict, cast

import torch


class Batch(TypedDict, total=False):
    views: list[torch.Tensor]  # image views (B, 3, H, W), global crops first
    labels: torch.Tensor  # (B,) class indices, used only for evaluation
    bg_positive: torch.Tensor  # BG_Swaps: the anchor's foreground on its partner's background
    bg_negative: torch.Tensor  # BG_Swaps: its partner's foreground on the anchor's background
    clips: list[torch.Tensor]  # video clips (B, 3, T, H, W), one per view
    audio: torch.Tensor  # log-mel dB (B, 1, mels, frames) under clips[0]'s time span
    flow: torch.Tensor  # optical flow (B, 2, T, H, W) in px at clips[0]'s frames


# BG_Swaps' partner of sample i is sample (i + SWAPS_SHIFT) mod B of the process's batch, in every
# loader. So sample i's foreground is in exactly one hard negative, sample i - SWAPS_SHIFT's,
# which a method must not score as a negative of sample i: that would push the anchor away from
# its own foreground, telling the two apart by background alone (see own_foreground_negative).
SWAPS_SHIFT = 1


def swaps_partners(n: int) -> torch.Tensor:
    """The index of each sample's BG_Swaps partner in a batch of ``n``."""
    return (torch.arange(n) + SWAPS_SHIFT) % n


def own_foreground_negative(n: int, device: torch.device | None = None) -> torch.Tensor:
    """(n, n) bool: ``[i, j]`` is True where hard negative j shows sample i's foreground."""
    partner_of = swaps_partners(n).to(device)
    return partner_of[None, :] == torch.arange(n, device=device)[:, None]


def inputs_of(batch: Batch) -> list[torch.Tensor]:
    """The batch's main inputs: image ``views``, else video ``clips`` (one tensor per view)."""
    return batch["views"] if "views" in batch else batch["clips"]


def to_device(batch: Batch, device: torch.device,
              memory_format: torch.memory_format = torch.preserve_format) -> Batch:
    """Every image tensor of ``batch`` on ``device`` (non-blocking) in ``memory_format``."""
    def move(x: torch.Tensor) -> torch.Tensor:
        fmt = memory_format if x.ndim == 4 else torch.preserve_format
        return x.to(device, non_blocking=True, memory_format=fmt)

    out = {k: [move(x) for x in v] if isinstance(v, list) else move(cast(torch.Tensor, v))
           for k, v in batch.items()}
    return cast(Batch, out)

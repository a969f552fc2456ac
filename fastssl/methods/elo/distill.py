"""Distillation of the flow and audio networks into the RGB network (ELo's L_d): L2 between the
activations of chosen blocks, each pair with its own weight.

Activations of different modalities differ in shape (a video block is (B, C, T, H, W), an audio
block (B, C, F, T)), so each is globally average-pooled to (B, C) first; when the channel counts
differ, a linear adapter maps the student's to the teacher's. The teacher's side is detached:
the RGB network learns from the other modality, which learns from its own tasks.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from fastssl.models.video import FrameResidual


def blocks(net: nn.Module) -> list[str]:
    """Names of ``net``'s blocks, in order: the ReLUs closing each conv block of a sequential
    network (``small3d``, ``audio_cnn``), else torchvision's ``layer1`` .. ``layer4``; those of
    the network behind a :class:`FrameResidual` input."""
    if isinstance(net, nn.Sequential) and isinstance(net[0], FrameResidual):
        return [f"1.{name}" for name in blocks(net[1])]
    if isinstance(net, nn.Sequential):
        return [name for name, m in net.named_children() if isinstance(m, nn.ReLU)]
    return [name for name, _ in net.named_children() if name.startswith("layer")]


def block_widths(net: nn.Module, in_shape: tuple[int, ...]) -> list[int]:
    """Channels of every block of ``net`` on a dummy input of shape ``in_shape`` (per sample)."""
    net_was_training = net.training
    net.eval()
    try:
        with torch.no_grad(), tap(net, range(1, len(blocks(net)) + 1)) as acts:
            net(torch.zeros(2, *in_shape))
    finally:
        net.train(net_was_training)
    return [acts[i].shape[1] for i in sorted(acts)]


@contextmanager
def tap(net: nn.Module, layers: Iterable[int]) -> Iterator[dict[int, torch.Tensor]]:
    """Collect the outputs of ``net``'s blocks ``layers`` (1-based) while the context is open."""
    names = blocks(net)
    acts: dict[int, torch.Tensor] = {}
    handles = []
    for i in layers:
        if not 1 <= i <= len(names):
            raise ValueError(f"block {i} does not exist (the network has {len(names)})")

        def keep(_m: nn.Module, _inp: object, out: torch.Tensor, i: int = i) -> None:
            acts[i] = out
        handles.append(net.get_submodule(names[i - 1]).register_forward_hook(keep))
    try:
        yield acts
    finally:
        for h in handles:
            h.remove()


def pooled(act: torch.Tensor) -> torch.Tensor:
    """(B, C, ...) -> (B, C): mean over every axis after the channels."""
    return act.flatten(2).mean(2)


def distill_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared L2 distance between (B, C) activations; no gradient into ``teacher``."""
    return F.mse_loss(student, teacher.detach())


class Distiller(nn.Module):
    """One adapter per (teacher, block): ``forward`` gives the L_d of that pair."""

    def __init__(self, student_width: int, teacher_width: int) -> None:
        super().__init__()
        self.adapter: nn.Module = nn.Identity() if student_width == teacher_width \
            else nn.Linear(student_width, teacher_width)

    def forward(self, student_act: torch.Tensor, teacher_act: torch.Tensor) -> torch.Tensor:
        return distill_loss(self.adapter(pooled(student_act)), pooled(teacher_act))

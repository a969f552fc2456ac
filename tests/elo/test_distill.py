"""Distillation of flow and audio into RGB: block taps, pooled L2, adapters, gradients."""

from __future__ import annotations

import pytest
import torch

from fastssl.methods.elo.distill import Distiller, block_widths, blocks, distill_loss, pooled, tap
from fastssl.models.video import audio_cnn, video_backbone


def test_blocks_of_the_video_and_audio_networks():
    rgb, _ = video_backbone("small3d", 3)
    audio, _ = audio_cnn()
    r3d, _ = video_backbone("r3d_18", 2)
    assert len(blocks(rgb)) == 3 and len(blocks(audio)) == 3
    assert blocks(r3d) == ["layer1", "layer2", "layer3", "layer4"]
    assert block_widths(rgb, (3, 4, 16, 16)) == [32, 64, 128]
    assert block_widths(audio, (1, 40, 33)) == [32, 64, 128]


def test_tap_collects_the_chosen_blocks_and_then_lets_go():
    net, _ = video_backbone("small3d", 3)
    x = torch.randn(2, 3, 4, 16, 16)
    with tap(net, [1, 3]) as acts:
        net(x)
    assert sorted(acts) == [1, 3] and acts[3].shape == (2, 128, 1, 2, 2)
    acts.clear()
    net(x)
    assert acts == {}  # hooks removed
    with pytest.raises(ValueError, match="block 4"), tap(net, [4]):
        pass


def test_distill_loss_is_the_pooled_l2_and_trains_only_the_student():
    student = torch.randn(3, 4, 2, 5, 5, requires_grad=True)
    teacher = torch.randn(3, 4, 7, 2, requires_grad=True)  # another modality's shape
    loss = Distiller(4, 4)(student, teacher)
    expected = (pooled(student) - pooled(teacher)).pow(2).mean()
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert student.grad is not None and teacher.grad is None
    same = torch.randn(3, 4)
    assert distill_loss(same, same).item() == 0.0


def test_an_adapter_bridges_different_widths():
    d = Distiller(64, 128)
    assert isinstance(d.adapter, torch.nn.Linear)
    assert d(torch.randn(2, 64, 1, 2, 2), torch.randn(2, 128, 3, 3)).ndim == 0


def test_distillation_pulls_the_rgb_block_towards_the_teacher():
    torch.manual_seed(0)
    rgb, _ = video_backbone("small3d", 3)
    teacher = torch.randn(8, 128, 1, 1, 1) + 1.0
    opt = torch.optim.SGD(rgb.parameters(), lr=0.5)
    x = torch.randn(8, 3, 4, 16, 16)
    losses = []
    for _ in range(30):
        with tap(rgb, [3]) as acts:
            rgb(x)
        loss = Distiller(128, 128)(acts[3], teacher)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_blocks_of_a_residual_input_network_are_those_behind_it():
    plain, _ = video_backbone("small3d", 3)
    residual, _ = video_backbone("small3d", 3, residual=True)
    assert blocks(residual) == [f"1.{name}" for name in blocks(plain)]
    assert block_widths(residual, (3, 4, 16, 16)) == block_widths(plain, (3, 4, 16, 16))

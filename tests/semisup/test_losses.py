"""The distillation loss and the normalised self-training loss against closed forms."""

import math

import pytest
import torch

from fastssl.semisup.losses import distill_loss, normalised_loss, running_mean


def test_distill_loss_equals_the_closed_form():
    # teacher P_T = (1/4, 3/4) at temperature 2 (logits 0, 2 ln 3); student P_S = (1/2, 1/2)
    teacher = torch.tensor([[0.0, 2 * math.log(3)], [2 * math.log(3), 0.0]])
    student = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    assert distill_loss(student, teacher, 2.0).item() == pytest.approx(math.log(2), abs=1e-6)
    # P_S = (1/4, 3/4) at temperature 1: -(1/4 ln 1/4 + 3/4 ln 3/4), the teacher's entropy
    student = torch.tensor([[0.0, math.log(3)], [math.log(3), 0.0]])
    entropy = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert distill_loss(student, teacher / 2, 1.0).item() == pytest.approx(entropy, abs=1e-6)


def test_distill_gradient_is_zero_at_the_teacher_and_softmax_difference_elsewhere():
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(5, 7, generator=g)
    student = teacher.clone().requires_grad_(True)
    distill_loss(student, teacher, 0.5).backward()
    assert student.grad is not None and student.grad.abs().max() < 1e-7
    student = torch.randn(5, 7, generator=g, requires_grad=True)
    distill_loss(student, teacher, 0.5).backward()
    expected = (torch.softmax(student / 0.5, 1) - torch.softmax(teacher / 0.5, 1)) / (0.5 * 5)
    torch.testing.assert_close(student.grad, expected.detach(), atol=1e-6, rtol=1e-5)


def test_normalised_loss_formula_and_pseudo_gradient():
    l_h, l_p = torch.tensor(2.0), torch.tensor(8.0, requires_grad=True)
    loss = normalised_loss(l_h, l_p, torch.tensor(1.0), torch.tensor(4.0), alpha=3.0)
    assert loss.item() == pytest.approx((2 + 3 * (1 / 4) * 8) / 4)
    loss.backward()
    assert l_p.grad is not None and l_p.grad.item() == pytest.approx(3 * 0.25 / 4)


def _run(scale_after: int, scale: float, steps: int = 1500, momentum: float = 0.99):
    """Losses of a run of running means fed L_h, L_p (L_p scaled by ``scale`` from step
    ``scale_after``); returns the normalised loss at every step."""
    g = torch.Generator().manual_seed(1)
    mean_h = mean_p = torch.zeros(())
    seen = torch.tensor(False)
    out = []
    for t in range(steps):
        l_h = 1.0 + 0.1 * torch.rand((), generator=g)
        l_p = (3.0 + 0.3 * torch.rand((), generator=g)) * (scale if t >= scale_after else 1.0)
        mean_h = running_mean(mean_h, l_h, seen, momentum)
        mean_p = running_mean(mean_p, l_p, seen, momentum)
        seen = torch.tensor(True)
        out.append(normalised_loss(l_h, l_p, mean_h, mean_p, alpha=1.0).item())
    return out


def test_normalised_loss_ignores_a_rescaled_pseudo_loss_once_the_means_settle():
    ref, scaled = _run(500, 1.0), _run(500, 100.0)
    assert ref[:500] == scaled[:500]
    assert abs(scaled[501] - ref[501]) > 1.0  # right after the change the means lag behind
    assert scaled[-1] == pytest.approx(ref[-1], rel=1e-3)  # settled: the scale is gone
    # scaled from the start, the running means carry the scale exactly
    assert _run(0, 100.0)[-1] == pytest.approx(ref[-1], rel=1e-5)

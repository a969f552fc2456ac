import math

import pytest
import torch

from fastssl.methods import resolve_config
from fastssl.methods.base import split_decay
from fastssl.optim import LARS, build_optimizer, cosine_factor, scaled_lr, set_lr


def test_cosine_with_warmup():
    assert cosine_factor(0, 100, 10) == pytest.approx(0.1)
    assert cosine_factor(9, 100, 10) == pytest.approx(1.0)
    assert cosine_factor(55, 100, 10) == pytest.approx(0.5)
    assert cosine_factor(100, 100, 10, min_ratio=0.1) == pytest.approx(0.1)


def test_lr_scaling_rules():
    assert scaled_lr(0.3, 512, "linear") == pytest.approx(0.6)
    assert scaled_lr(0.075, 4096, "sqrt") == pytest.approx(0.075 * 64)
    assert scaled_lr(0.1, 4096, "none") == 0.1


def test_lars_excludes_biases_and_norms_from_decay_and_adaptation():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    groups = split_decay(net.named_parameters())
    assert [len(g["params"]) for g in groups] == [1, 3] and groups[1]["exclude"]
    cfg = resolve_config(None, {"optimizer": "lars", "lr": 1.0, "lr_scaling": "none",
                         "weight_decay": 0.1, "momentum": 0.0})
    opt = build_optimizer(groups, cfg)
    assert isinstance(opt, LARS) and opt.param_groups[1]["weight_decay"] == 0.0
    before = [p.detach().clone() for p in net.parameters()]
    for p in net.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    w, b = before[0], before[1]
    g = torch.ones_like(w) + 0.1 * w  # weight: decay, then trust ratio eta*|w|/|g|
    expected_w = w - 0.001 * w.norm() / g.norm() * g
    torch.testing.assert_close(net[0].weight.detach(), expected_w)
    torch.testing.assert_close(net[0].bias.detach(), b - 1.0)  # bias: plain SGD step


def test_fixed_lr_groups_keep_their_rate():
    p1, p2 = torch.nn.Parameter(torch.ones(2, 2)), torch.nn.Parameter(torch.ones(2, 2))
    cfg = resolve_config(None, {"lr": 0.5, "lr_scaling": "none"})
    opt = build_optimizer([{"params": [p1]}, {"params": [p2], "fixed_lr": True,
                                              "lr_scale": 2.0}], cfg)
    lr = set_lr(opt, 0.1)
    assert lr == pytest.approx(0.05) and opt.param_groups[1]["lr"] == pytest.approx(1.0)
    assert math.isclose(opt.param_groups[0]["base_lr"], 0.5)

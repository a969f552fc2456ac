"""``convert_sync_batchnorm``: which module it picks, what it shares, and its single-process
behaviour. Its multi-process behaviour (global statistics, gradients, running statistics) is
checked against one process on the concatenated batch in tests/test_distributed.py."""

from __future__ import annotations

import copy

import torch
from torch import nn

from fastssl.models.sync_bn import GlobalBatchNorm, convert_sync_batchnorm


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 5), nn.BatchNorm1d(5, affine=False))


def test_cpu_conversion_replaces_every_batchnorm_and_shares_state():
    torch.manual_seed(0)
    net = _net()
    bn2d, bn1d = net[1], net[4]
    conv = convert_sync_batchnorm(net)
    assert isinstance(conv[1], GlobalBatchNorm) and isinstance(conv[4], GlobalBatchNorm)
    assert conv[1].weight is bn2d.weight and conv[1].running_mean is bn2d.running_mean
    assert conv[4].weight is None and conv[4].running_var is bn1d.running_var
    assert not any(type(m) in (nn.BatchNorm1d, nn.BatchNorm2d) for m in conv.modules())


def test_without_process_group_it_is_plain_batchnorm():
    torch.manual_seed(0)
    ref = _net()
    conv = convert_sync_batchnorm(copy.deepcopy(ref))
    x = torch.randn(6, 3, 8, 8)
    torch.testing.assert_close(conv(x), ref(x))
    torch.testing.assert_close(conv[1].running_var, ref[1].running_var)
    conv.eval()
    ref.eval()
    torch.testing.assert_close(conv(x), ref(x))


def test_cuda_conversion_uses_torch_syncbatchnorm():
    conv = convert_sync_batchnorm(_net(), device="cuda")  # conversion itself needs no GPU
    assert sum(isinstance(m, nn.SyncBatchNorm) for m in conv.modules()) == 2

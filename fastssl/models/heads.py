"""Projection / prediction heads as in the papers."""

from __future__ import annotations

from torch import nn


def mlp(dims: list[int], *, last_bn: bool = False, last_bn_affine: bool = True,
        bias: bool = True, hidden_bn: bool = True) -> nn.Sequential:
    """Linear-BN-ReLU for every hidden layer, then a final Linear (optionally followed by BN).

    ``mlp([2048, 4096, 256])`` is BYOL's projector; ``last_bn=True`` gives SimSiam's / SimCLR v2's
    last layer, ``last_bn_affine=False`` MoCo v3's, ``bias=False`` Barlow Twins'.
    """
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        last = i == len(dims) - 2
        layers.append(nn.Linear(d_in, d_out, bias=bias and not (hidden_bn and not last)))
        if not last:
            if hidden_bn:
                layers.append(nn.BatchNorm1d(d_out))
            layers.append(nn.ReLU(inplace=True))
        elif last_bn:
            layers.append(nn.BatchNorm1d(d_out, affine=last_bn_affine))
    return nn.Sequential(*layers)

"""Backbones: torchvision ResNets and ViTs, plus a small CNN for fast CPU runs.

``build_backbone`` returns ``(module, feature_dim)``; the module maps images (B, 3, H, W) to
features (B, feature_dim) with the classifier removed.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchvision import models


def small_cnn(width: int = 32) -> nn.Sequential:
    """Four conv blocks (each halves the resolution), global average pooling: 8*width features."""
    layers: list[nn.Module] = []
    c_in = 3
    for c_out in (width, 2 * width, 4 * width, 8 * width):
        layers += [
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        ]
        c_in = c_out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())


def _resnet(name: str, small_stem: bool) -> tuple[nn.Module, int]:
    net = getattr(models, name)(weights=None)
    if small_stem:  # CIFAR-style stem: keep the resolution of small images
        net.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, dim


def sincos_2d(grid: int, dim: int) -> torch.Tensor:
    """Fixed 2D sin-cos position embedding (MoCo v3), shape (grid*grid, dim)."""
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs dim divisible by 4, got {dim}")
    y, x = torch.meshgrid(torch.arange(grid, dtype=torch.float64),
                          torch.arange(grid, dtype=torch.float64), indexing="ij")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    out_x = x.flatten()[:, None] * omega[None]
    out_y = y.flatten()[:, None] * omega[None]
    emb = torch.cat([out_x.sin(), out_x.cos(), out_y.sin(), out_y.cos()], dim=1)
    return emb.float()


class ViT(nn.Module):
    """torchvision ViT with MoCo v3's stabilisers: a frozen random patch projection (Xavier
    uniform over fan 3*p*p + D) and a fixed 2D sin-cos position embedding.
    Outputs the class token."""

    def __init__(self, size: str, image_size: int) -> None:
        super().__init__()
        width, depth, heads = {"s": (384, 12, 6), "b": (768, 12, 12)}[size]
        patch = 16 if image_size >= 128 else 4
        if image_size % patch:
            raise ValueError(f"ViT image size {image_size} is not a multiple of patch {patch}")
        self.net = models.VisionTransformer(image_size, patch, depth, heads, width, 4 * width)
        self.net.heads = nn.Identity()
        proj = self.net.conv_proj
        bound = math.sqrt(6.0 / float(3 * patch * patch + width))
        nn.init.uniform_(proj.weight, -bound, bound)
        nn.init.zeros_(proj.bias)
        proj.requires_grad_(False)
        grid = image_size // patch
        pos = torch.cat([torch.zeros(1, width), sincos_2d(grid, width)])[None]
        self.net.encoder.pos_embedding = nn.Parameter(pos, requires_grad=False)
        nn.init.normal_(self.net.class_token, std=1e-6)
        self.dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_backbone(name: str, *, small_stem: bool = True,
                   image_size: int = 224) -> tuple[nn.Module, int]:
    if name == "small_cnn":
        return small_cnn(), 256
    if name == "tiny_cnn":  # half the width: the smaller student of SimCLR v2 distillation tests
        return small_cnn(16), 128
    if name in ("resnet18", "resnet34", "resnet50"):
        return _resnet(name, small_stem)
    if name in ("vit_s", "vit_b"):
        vit = ViT(name[-1], image_size)
        return vit, vit.dim
    raise ValueError(f"unknown backbone '{name}' (choose from small_cnn, tiny_cnn, resnet18, "
                     "resnet34, resnet50, vit_s, vit_b)")

"""Optimisers (SGD, AdamW, LARS) and the cosine schedule with linear warm-up.

Parameter groups come from the method; a group may carry ``exclude`` (no weight decay, no LARS
adaptation: biases and norm parameters, as in the papers) and ``lr_scale`` (a per-group factor),
or ``fixed_lr`` (kept at its initial value, e.g. SimSiam's predictor).
"""

from __future__ import annotations

import math

import torch


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise trust ratio eta * ||w|| / ||g + wd * w||.

    Groups with ``exclude=True`` get neither weight decay nor the trust ratio.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 eta: float = 0.001) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      eta=eta, exclude=False))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d_p = p.grad
                if not group["exclude"]:
                    d_p = d_p.add(p, alpha=group["weight_decay"])
                    w_norm, g_norm = torch.norm(p), torch.norm(d_p)
                    trust = torch.where((w_norm > 0) & (g_norm > 0),
                                        group["eta"] * w_norm / g_norm, torch.ones_like(w_norm))
                    d_p = d_p.mul(trust)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.clone(d_p).detach()
                else:
                    state["mu"].mul_(group["momentum"]).add_(d_p)
                p.add_(state["mu"], alpha=-group["lr"])


def scaled_lr(base_lr: float, batch_size: int, rule: str) -> float:
    if rule == "linear":
        return base_lr * batch_size / 256
    if rule == "sqrt":
        return base_lr * math.sqrt(batch_size)
    return base_lr


def build_optimizer(groups: list[dict], cfg) -> torch.optim.Optimizer:
    lr = scaled_lr(cfg.lr, cfg.batch_size, cfg.lr_scaling)
    for g in groups:
        g["base_lr"] = lr * g.get("lr_scale", 1.0)
        g["lr"] = g["base_lr"]
        g.setdefault("exclude", False)
        if g["exclude"]:
            g["weight_decay"] = 0.0
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "lars":
        return LARS(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer '{cfg.optimizer}' (choose from sgd, adamw, lars)")


def cosine_factor(step: int, total: int, warmup: int, min_ratio: float = 0.0) -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then cosine decay to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> float:
    """Apply the schedule factor to every group except ``fixed_lr`` ones; returns the main lr."""
    for g in optimizer.param_groups:
        g["lr"] = g["base_lr"] if g.get("fixed_lr") else g["base_lr"] * factor
    return optimizer.param_groups[0]["lr"]

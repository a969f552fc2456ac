"""Augmentation presets as data: one ``ViewSpec`` per view, shared by the DALI pipelines and the
torchvision fallback so that both produce the same views with the same parameters."""

from __future__ import annotations

from dataclasses import dataclass, replace

from fastssl.config import Config
from fastssl.data.stats import MEAN, STD

__all__ = ["MEAN", "STD", "ViewSpec", "specs_for", "view_specs"]


@dataclass(frozen=True)
class ViewSpec:
    size: int
    scale: tuple[float, float]  # RandomResizedCrop area range
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)  # b, c, s, h
    jitter_p: float = 0.8
    gray_p: float = 0.2
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.0
    # strong augmentation (self-training): RandAugment (N ops, magnitude M of 31 bins; (0, 0) =
    # off) and large-scale jitter (resize the longer side to size * U(lo, hi), then random crop /
    # pad to size; (0, 0) = off, RandomResizedCrop is used instead)
    randaugment: tuple[int, int] = (0, 0)
    scale_jitter: tuple[float, float] = (0.0, 0.0)
    autoaugment: bool = False  # AutoAugment's ImageNet policy (Cubuk et al. 2019)
    # crop resampling: antialiased bilinear (torchvision's and DALI's default: a triangle filter
    # widened by the downscale factor) or plain bilinear sampling at the output pixel centres,
    # which keeps more of the source's high frequencies (sharper views)
    antialias: bool = True
    colour: str = "sequential"  # colour jitter recipe (``fastssl.pipelines.colour.RECIPES``)

    @property
    def blur_kernel(self) -> int:
        """SimCLR's blur kernel: about 10% of the crop side, odd."""
        k = max(3, int(0.1 * self.size))
        return k if k % 2 else k + 1


def _simclr(strength: float = 1.0) -> ViewSpec:
    s = strength
    return ViewSpec(0, (0.08, 1.0), jitter=(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s), blur_p=0.5)


_S1 = ViewSpec(0, (0.08, 1.0), jitter_p=0.0, gray_p=0.0)  # crop and flip, no colour ops

# Global-view templates per preset; asymmetric presets list one template per view (cycled).
_GLOBAL: dict[str, list[ViewSpec]] = {
    "simclr": [_simclr()],
    # MoCo v2 / SimSiam: jitter (0.4, 0.4, 0.4, 0.1) p=0.8, grey 0.2, blur p=0.5
    "mocov2": [ViewSpec(0, (0.2, 1.0), jitter=(0.4, 0.4, 0.4, 0.1), blur_p=0.5)],
    # BYOL / MoCo v3 / Barlow Twins: blur 1.0 / 0.1, solarize 0 / 0.2
    "byol": [ViewSpec(0, (0.08, 1.0), blur_p=1.0, solarize_p=0.0),
             ViewSpec(0, (0.08, 1.0), blur_p=0.1, solarize_p=0.2)],
    # SwAV: colour distortion strength 0.8 ((0.8, 0.8, 0.8, 0.2) p=0.8), grey 0.2, blur p=0.5
    "swav": [_simclr()],
    # self-training student view (Xie et al. 2020 Noisy Student: RandAugment N=2, M=27 of 31 bins
    # is their strongest; 9 is the common ImageNet default) plus large-scale jitter 0.5-2.0
    # (Ghiasi et al. 2021, copy-paste); colour ops come from RandAugment, so jitter/grey are off
    "strong": [ViewSpec(0, (0.08, 1.0), jitter_p=0.0, gray_p=0.0, randaugment=(2, 9),
                        scale_jitter=(0.5, 2.0))],
    # Zoph et al. 2020 (Rethinking pre-training and self-training) augmentation strengths:
    # S1 flips and crops; S2 + AutoAugment; S3 + large-scale jitter (0.5, 2.0); S4 large-scale
    # jitter + RandAugment (2 ops, magnitude 10 of TF's 10 levels = torchvision's 30 of 31 bins)
    "s1": [_S1],
    "s2": [replace(_S1, autoaugment=True)],
    "s3": [replace(_S1, autoaugment=True, scale_jitter=(0.5, 2.0))],
    "s4": [replace(_S1, randaugment=(2, 30), scale_jitter=(0.5, 2.0))],
}


def view_specs(preset: str, *, crop_size: int, global_crops: int,
               global_scale: tuple[float, float], local_crops: int = 0,
               local_crop_size: int = 96, local_scale: tuple[float, float] = (0.05, 0.14),
               antialias: bool = True, colour: str = "sequential") -> list[ViewSpec]:
    """The views of one sample: ``global_crops`` global views, then ``local_crops`` local ones.

    Sizes and scales come from the run config (paper values live in configs/); the preset fixes
    the colour / blur / solarize parameters.
    """
    if preset not in _GLOBAL:
        raise ValueError(f"unknown augmentation preset '{preset}' "
                         f"(choose from {', '.join(sorted(_GLOBAL))})")
    templates = _GLOBAL[preset]
    views = [replace(templates[i % len(templates)], size=crop_size, scale=global_scale,
                     antialias=antialias, colour=colour) for i in range(global_crops)]
    local = replace(templates[0], size=local_crop_size, scale=local_scale, antialias=antialias,
                    colour=colour)
    return views + [local] * local_crops


def specs_for(cfg: Config, default_preset: str) -> list[ViewSpec]:
    """``view_specs`` from a run config (``cfg.views`` or the method's preset)."""
    return view_specs(cfg.views or default_preset, crop_size=cfg.crop_size,
                      global_crops=cfg.global_crops, global_scale=cfg.global_scale,
                      local_crops=cfg.local_crops, local_crop_size=cfg.local_crop_size,
                      local_scale=cfg.local_scale, antialias=cfg.crop_antialias,
                      colour=cfg.colour_jitter)

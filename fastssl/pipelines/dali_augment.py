"""Augmentations as plain functions over DALI DataNodes, called from the pipeline definition in
``dali.py`` (which must be built with ``enable_conditionals=True``).

Every function works on CPU and GPU DataNodes alike: the device follows the input, so the CPU
test exercises the same graph that runs on a GPU. Probabilistic ops are DALI conditionals on a
per-sample coin flip: only the selected samples go through the op. Layout: HWC uint8 until
:func:`augment_view` normalises to CHW float.
"""

from __future__ import annotations

import math

import nvidia.dali.math as dmath
from nvidia.dali import fn, types

from fastssl.batch import SWAPS_SHIFT
from fastssl.pipelines.background import GREY, composite
from fastssl.pipelines.colour import LUMA, hue_basis, ranges
from fastssl.pipelines.views import MEAN, STD, ViewSpec


def decode(encoded, device_type: str, *, gray: bool = False):
    """Decode once per sample: nvJPEG on the GPU ("mixed") for CUDA runs, libjpeg-turbo on CPU."""
    return fn.decoders.image(encoded, device="mixed" if device_type == "cuda" else "cpu",
                             output_type=types.GRAY if gray else types.RGB)


def coin(p: float):
    return fn.random.coin_flip(probability=p, dtype=types.BOOL)


def uniform(lo: float, hi: float):
    """Per-sample U(lo, hi); a constant when the range is empty (DALI rejects lo == hi)."""
    return fn.random.uniform(range=(lo, hi)) if hi > lo else float(lo)


def solarize(images):
    """x -> 255 - x where x >= 128 (torchvision's threshold 128); 255 - x == x XOR 255 on uint8."""
    flip = fn.cast(images >= 128, dtype=types.UINT8) * types.Constant(255, dtype=types.UINT8)
    return images ^ flip


def _luma(x):
    """HWC float -> HW1 luma (``colour.LUMA``)."""
    return x[:, :, 0:1] * LUMA[0] + x[:, :, 1:2] * LUMA[1] + x[:, :, 2:3] * LUMA[2]


def colour_jitter(images, recipe: str, brightness, contrast, saturation, hue):
    """``colour.jitter`` on uint8 HWC DataNodes (per-sample factors; ``hue`` in turns).
    ``twist`` is DALI's own ``color_twist``; ``sequential`` is written with arithmetic operators
    (each step clamped, contrast about the per-sample mean grey, the hue rotation built from
    ``colour.hue_basis``), so it runs on the GPU for CUDA runs."""
    if recipe == "twist":
        return fn.color_twist(images, brightness=brightness, contrast=contrast,
                              saturation=saturation, hue=hue * 360)
    x = dmath.clamp(fn.cast(images, dtype=types.FLOAT) * brightness, 0.0, 255.0)
    mean = fn.reductions.mean(_luma(x))
    x = dmath.clamp((x - mean) * contrast + mean, 0.0, 255.0)
    grey = _luma(x)
    x = dmath.clamp((x - grey) * saturation + grey, 0.0, 255.0)
    turns = hue * (2 * math.pi)
    trig = math if isinstance(turns, float) else dmath  # hue is a constant when its range is 0
    cos, sin = trig.cos(turns), trig.sin(turns)
    a, c, s = (m.tolist() for m in hue_basis())
    rows = [sum(x[:, :, j:j + 1] * (a[i][j] + c[i][j] * cos + s[i][j] * sin) for j in range(3))
            for i in range(3)]
    return to_uint8(dmath.clamp(fn.cat(*rows, axis=2), 0.0, 255.0))


def view_colour_jitter(images, spec: ViewSpec):
    """``colour_jitter`` with the view's recipe and per-sample factors drawn from its ranges."""
    return colour_jitter(images, spec.colour, *(uniform(lo, hi) for lo, hi in ranges(spec.jitter)))


def to_uint8(x):
    """Float image back to uint8 before the per-view ops (DALI's cast rounds and saturates)."""
    return fn.cast(x, dtype=types.UINT8)


def scale_jitter(images, size: int, scale: tuple[float, float]):
    """Large-scale jitter: longer side to ``size * U(scale)``, then a random ``size`` x ``size``
    crop, zero-padded where the resized image is smaller (torchvision: ScaleJitter + RandomCrop
    with pad_if_needed)."""
    s = uniform(*scale)
    images = fn.resize(images, resize_longer=size * s, antialias=True)
    return fn.crop(images, crop=(size, size), crop_pos_x=fn.random.uniform(range=(0.0, 1.0)),
                   crop_pos_y=fn.random.uniform(range=(0.0, 1.0)), out_of_bounds_policy="pad",
                   fill_values=0)


def augment_view(images, spec: ViewSpec):
    """One view of every sample, in torchvision's order: crop -> (flip) -> colour jitter ->
    grayscale -> blur -> solarize -> normalise. The flip is folded into the final
    crop_mirror_normalize; it commutes with the colour ops and with the symmetric blur."""
    if spec.scale_jitter[1] > 0:
        images = scale_jitter(images, spec.size, spec.scale_jitter)
    else:
        images = fn.random_resized_crop(images, size=(spec.size, spec.size),
                                        random_area=spec.scale, random_aspect_ratio=spec.ratio,
                                        num_attempts=10,  # as torchvision
                                        antialias=spec.antialias)
    if spec.autoaugment or spec.randaugment[0] > 0:
        import warnings

        from nvidia.dali.auto_aug import auto_augment, rand_augment

        n, m = spec.randaugment
        with warnings.catch_warnings():  # DALI's own suite still uses deprecated op aliases
            warnings.simplefilter("ignore", DeprecationWarning)
            if spec.autoaugment:  # the ImageNet policy, as torchvision's AutoAugmentPolicy
                images = auto_augment.auto_augment(images, shape=(spec.size, spec.size),
                                                   fill_value=int(GREY))
            if n > 0:
                images = rand_augment.rand_augment(images, n=n, m=m,
                                                   shape=(spec.size, spec.size),
                                                   fill_value=int(GREY))
    if spec.jitter_p > 0 and coin(spec.jitter_p):
        images = view_colour_jitter(images, spec)
    if spec.gray_p > 0 and coin(spec.gray_p):
        images = fn.color_twist(images, saturation=0.0)
    if spec.blur_p > 0 and coin(spec.blur_p):
        images = fn.gaussian_blur(images, window_size=spec.blur_kernel,
                                  sigma=uniform(*spec.blur_sigma))
    if spec.solarize_p > 0 and coin(spec.solarize_p):
        images = solarize(images)
    return fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="CHW",
                                    mean=[255 * m for m in MEAN], std=[255 * s for s in STD],
                                    mirror=fn.random.coin_flip(probability=spec.flip_p))


def apply_background(images, masks, backgrounds, shapes, *, mode: str, p: float,
                     batch_size: int, shift: int = SWAPS_SHIFT, pool=None):
    """Background augmentation (see ``background.py``) of every sample, before the per-view ops;
    called once per view for ``rm`` / ``random`` (a fresh coin per call).

    ``masks``: HW1 uint8 (255 = foreground); ``backgrounds``: the samples' foreground-free
    backgrounds (HWC uint8, their images' size); ``shapes``: the decoded HWC shapes (CPU, from
    ``peek_image_shape``) that other samples are resized to; the partner of sample i is sample
    i + ``shift`` of the batch (BG_Swaps: ``SWAPS_SHIFT``, which the methods rely on); ``pool``:
    decoded bank images or None (then the partner's background). Returns ``(images, extra)``
    with ``extra`` the BG_Swaps positive and hard negative (empty for other modes).
    """
    size = fn.cast(shapes[0:2], dtype=types.FLOAT)  # (H, W): resize's order for HWC
    rotate = [(i + shift) % batch_size for i in range(batch_size)]
    other_bg = fn.resize(pool if pool is not None else fn.permute_batch(backgrounds,
                                                                        indices=rotate), size=size)
    if mode == "rm":
        if coin(p):
            images = to_uint8(composite(images, masks, GREY))
    elif mode == "random":
        if coin(p):
            images = to_uint8(composite(images, masks, other_bg))
    elif mode == "swaps":
        # the partner's foreground and mask, resized to the anchor
        o_img = fn.resize(fn.permute_batch(images, indices=rotate), size=size)
        o_mask = fn.resize(fn.permute_batch(masks, indices=rotate), size=size,
                           interp_type=types.INTERP_NN)
        positive = to_uint8(composite(images, masks, other_bg))
        negative = to_uint8(composite(o_img, o_mask, backgrounds))
        return images, [positive, negative]
    return images, []

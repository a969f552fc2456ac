"""Per-sample cost of each DALI operator of the loader's graph, each timed alone in a one-thread
pipeline fed by ``external_source`` (DALI 2.4 has no per-operator timing API; its executor
statistics report memory only). Imported only when DALI is installed."""

from __future__ import annotations

import io
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from nvidia.dali import fn, pipeline_def, types
from PIL import Image

from fastssl.pipelines import dali_augment as A
from fastssl.pipelines.views import ViewSpec

Op = Callable[[Any], Any]


def _timer(batch: int, gpu: bool, device_index: int,
           iters: int) -> Callable[[Op, list, str | None], float]:
    """``run(op, inputs, layout)``: seconds per sample of ``op`` alone on ``inputs``."""
    def run(op: Op, inputs: list, layout: str | None) -> float:
        @pipeline_def(batch_size=batch, num_threads=1, seed=0, prefetch_queue_depth=1,
                      device_id=device_index if gpu else None)
        def pipe():
            x = fn.external_source(name="in", layout=layout)  # fed with feed_input below
            if gpu and layout is not None:
                x = x.gpu()
            return op(x)

        p = pipe()
        p.build()
        times = []
        for _ in range(iters + 2):  # the first runs allocate: discarded
            p.feed_input("in", inputs, layout=layout)
            t = time.perf_counter()
            out = p.run()
            if hasattr(out[0], "as_cpu"):
                out[0].as_cpu()  # a GPU output: waits for the GPU work
            times.append(time.perf_counter() - t)
        return min(times[2:]) / batch  # min: the least disturbed run on a shared machine

    return run


def _view_ops(spec: ViewSpec) -> list[tuple[str, float, bool, Op]]:
    """(name, probability, runs on the crop (else the full image), op) for one view."""
    return [
        ("random_resized_crop", 1.0, False, lambda x: fn.random_resized_crop(
            x, size=(spec.size, spec.size), random_area=spec.scale,
            random_aspect_ratio=spec.ratio, antialias=spec.antialias)),
        (f"colour jitter ({spec.colour})", spec.jitter_p, True,
         lambda x: A.view_colour_jitter(x, spec)),
        ("color_twist (grey)", spec.gray_p, True, lambda x: fn.color_twist(x, saturation=0.0)),
        ("gaussian_blur", spec.blur_p, True, lambda x: fn.gaussian_blur(
            x, window_size=spec.blur_kernel, sigma=A.uniform(*spec.blur_sigma))),
        ("solarize", spec.solarize_p, True, A.solarize),
        ("crop_mirror_normalize", 1.0, True, lambda x: fn.crop_mirror_normalize(
            x, dtype=types.FLOAT, output_layout="CHW", mirror=fn.random.coin_flip())),
    ]


def dali_operator_costs(paths: Sequence[Path], specs: Sequence[ViewSpec], device_type: str, *,
                        device_index: int = 0, samples: int = 32,
                        iters: int = 5) -> list[dict]:
    """Rows of ``name``, ``ms_per_sample`` and ``share``, costliest first. Probabilistic ops are
    weighted by their probability, as the loader's conditionals only send the selected samples
    through them; ``device_type == "cuda"`` times the GPU variants (mixed decoder, GPU ops)."""
    gpu = device_type == "cuda"
    encoded = [np.fromfile(str(p), dtype=np.uint8) for p in list(paths)[:samples]]
    run = _timer(len(encoded), gpu, device_index, iters)
    identity = run(lambda x: x, encoded, None)
    decode_s = max(run(lambda x: A.decode(x, device_type), encoded, None) - identity, 0.0)
    costs: dict[str, float] = {f"decode ({'nvJPEG' if gpu else 'CPU'})": decode_s}

    images = [Image.open(io.BytesIO(e.tobytes())).convert("RGB") for e in encoded]
    decoded = [np.asarray(im) for im in images]
    full = run(lambda x: x, decoded, "HWC")
    # the per-view ops see crops of the view's size; identical views are timed once
    for spec, count in Counter(specs).items():
        crop = [np.asarray(im.resize((spec.size, spec.size))) for im in images]
        base = run(lambda x: x, crop, "HWC")
        for name, p, on_crop, op in _view_ops(spec):
            if p > 0:
                inputs, ref = (crop, base) if on_crop else (decoded, full)
                cost = count * p * max(run(op, inputs, "HWC") - ref, 0.0)
                costs[name] = costs.get(name, 0.0) + cost
    total = sum(costs.values()) or 1.0
    rows = [{"name": k, "ms_per_sample": 1000 * v, "share": v / total} for k, v in costs.items()]
    return sorted(rows, key=lambda r: -r["ms_per_sample"])

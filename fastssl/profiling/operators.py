"""Per-operator costs of the loaders: each torchvision transform or DALI operator timed alone
(per sample, one thread), so the report can name the operator that dominates a worker's time."""

from __future__ import annotations

import time

import torch
from torchvision.transforms import v2 as T

from fastssl.pipelines import TrainLoader
from fastssl.pipelines.torch_loader import view_transform


def torch_operator_costs(paths: list, specs: list, *, samples: int = 32) -> list[dict]:
    """Per-sample CPU cost of each torchvision operator (decode, crop, jitter, ...), measured
    in this process on ``samples`` images: where one loader worker spends its time."""
    def name(t) -> str:
        if isinstance(t, T.RandomApply):
            return "+".join(type(x).__name__ for x in t.transforms)
        return type(t).__name__

    torch.manual_seed(0)
    paths = list(paths)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker
    try:
        return _time_transforms(paths[:samples], [view_transform(s).transforms for s in specs],
                                name)
    finally:
        torch.set_num_threads(threads)


def _time_transforms(paths: list, pipelines: list, name) -> list[dict]:
    from PIL import Image
    from torchvision.transforms import v2 as T

    costs: dict[str, float] = {}
    with torch.inference_mode():
        for p in paths:
            t = time.perf_counter()
            with Image.open(p) as im:
                image = T.functional.pil_to_tensor(im.convert("RGB"))
            costs["decode (PIL)"] = costs.get("decode (PIL)", 0.0) + time.perf_counter() - t
            for ops in pipelines:
                x = image
                for op in ops:
                    t = time.perf_counter()
                    x = op(x)
                    costs[name(op)] = costs.get(name(op), 0.0) + time.perf_counter() - t
    total = sum(costs.values()) or 1.0
    rows = [{"name": k, "ms_per_sample": 1000 * v / len(paths), "share": v / total}
            for k, v in costs.items()]
    return sorted(rows, key=lambda r: -r["ms_per_sample"])


def dali_executor_statistics(loader: TrainLoader) -> dict | None:
    """DALI's per-operator executor statistics of the loader's current pipelines.

    DALI 2.4 reports per-operator output memory (``real_memory_size``, ``reserved_memory_size``,
    ...) when the pipeline was built with ``enable_memory_stats=True`` and
    ``exec_dynamic=False`` (``build_train_loader(..., stats=True)``); it has no per-operator
    timing API (timing is in its NVTX ranges, seen with Nsight Systems). Returns None when
    nothing is available.
    """
    pipes = loader.pipelines
    out = {}
    for i, pipe in enumerate(pipes):
        try:
            stats = pipe.executor_statistics()
        except Exception:  # noqa: BLE001 - optional diagnostics, any DALI error means "none"
            continue
        for op, values in (stats or {}).items():
            out[op if len(pipes) == 1 else f"{i}/{op}"] = {
                k: [int(x) for x in v] if isinstance(v, (list, tuple)) else v
                for k, v in values.items()}
    return out or None


def dali_operator_costs(paths: list, specs: list, device_type: str, *, device_index: int = 0,
                        samples: int = 32, iters: int = 5) -> list[dict]:
    """Per-sample cost of each DALI operator of the loader's graph, each timed alone in a
    one-thread pipeline fed by ``external_source`` (DALI 2.4 has no per-operator timing API; its
    executor statistics report memory only). Probabilistic ops are weighted by their
    probability, as the loader's conditionals only send the selected samples through them.
    ``device_type == "cuda"`` times the GPU variants (mixed decoder, GPU ops)."""
    import io

    import numpy as np
    from nvidia.dali import fn, pipeline_def, types
    from PIL import Image

    from fastssl.pipelines import dali_augment as A

    gpu = device_type == "cuda"
    encoded = [np.fromfile(str(p), dtype=np.uint8) for p in list(paths)[:samples]]
    batch = len(encoded)

    def run(op, inputs, layout: str | None) -> float:
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

    identity = run(lambda x: x, encoded, None)
    decode_s = max(run(lambda x: A.decode(x, device_type), encoded, None) - identity, 0.0)
    costs: dict[str, float] = {f"decode ({'nvJPEG' if gpu else 'CPU'})": decode_s}

    images = [Image.open(io.BytesIO(e.tobytes())).convert("RGB") for e in encoded]
    decoded = [np.asarray(im) for im in images]
    full = run(lambda x: x, decoded, "HWC")
    for spec in specs:  # the per-view ops see crops of the view's size
        crop = [np.asarray(im.resize((spec.size, spec.size))) for im in images]
        base = run(lambda x: x, crop, "HWC")
        b, c, s, h = spec.jitter

        def jitter(x, b=b, c=c, s=s, h=h):
            return fn.color_twist(x, brightness=A.uniform(max(0, 1 - b), 1 + b),
                                  contrast=A.uniform(max(0, 1 - c), 1 + c),
                                  saturation=A.uniform(max(0, 1 - s), 1 + s),
                                  hue=A.uniform(-360 * h, 360 * h))

        ops = [
            ("random_resized_crop", 1.0, decoded, lambda x, sp=spec: fn.random_resized_crop(
                x, size=(sp.size, sp.size), random_area=sp.scale, random_aspect_ratio=sp.ratio,
                antialias=True)),
            ("color_twist (jitter)", spec.jitter_p, crop, jitter),
            ("color_twist (grey)", spec.gray_p, crop,
             lambda x: fn.color_twist(x, saturation=0.0)),
            ("gaussian_blur", spec.blur_p, crop, lambda x, sp=spec: fn.gaussian_blur(
                x, window_size=sp.blur_kernel, sigma=A.uniform(*sp.blur_sigma))),
            ("solarize", spec.solarize_p, crop, A.solarize),
            ("crop_mirror_normalize", 1.0, crop, lambda x: fn.crop_mirror_normalize(
                x, dtype=types.FLOAT, output_layout="CHW", mirror=fn.random.coin_flip())),
        ]
        for name, p, inputs, op in ops:
            if p <= 0:
                continue
            ref = base if inputs is crop else full
            costs[name] = costs.get(name, 0.0) + p * max(run(op, inputs, "HWC") - ref, 0.0)
    total = sum(costs.values()) or 1.0
    rows = [{"name": k, "ms_per_sample": 1000 * v, "share": v / total} for k, v in costs.items()]
    return sorted(rows, key=lambda r: -r["ms_per_sample"])

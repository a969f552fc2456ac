"""The measurements of ``fastssl profile``: loader alone, step alone, end to end, sweep, trace.

Every function takes a ``fastssl.train.Run`` (or its loader) and returns plain dicts of numbers;
nothing here prints or decides. Timings are wall clock (``time.perf_counter``); on CUDA the
device is synchronised at the edges of each timed window (and CUDA events time the step on the
GPU), never inside the end-to-end loop, which must overlap like the real one does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from fastssl.train import Run, train_step


def stat(values: list[float]) -> dict:
    """Median and spread of one measurement over its repeats."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "values": list(values)}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batches(loader, first_epoch: int = 0) -> Iterator:
    """``(views, labels)`` forever, epoch after epoch (short data sets end mid-measurement)."""
    epoch = first_epoch
    while True:
        it = loader.epoch(epoch, start_batch=0)
        empty = True
        for item in it:
            empty = False
            yield item
        if empty:
            raise RuntimeError("the loader yielded no batch: lower batch_size")
        del it  # a DataLoader iterator shuts its workers down when released
        epoch += 1


@contextlib.contextmanager
def closing_batches(loader, first_epoch: int = 0):
    gen = batches(loader, first_epoch)
    try:
        yield gen
    finally:
        gen.close()


def _window(steps: int, seconds: float | None, t0: float, done: int) -> bool:
    """True while a window (timed or warm-up) should go on: at most ``steps`` items, at least
    one, and none more once ``seconds`` have passed (keeps slow CPU runs inside the budget)."""
    if done >= steps:
        return False
    return done == 0 or seconds is None or time.perf_counter() - t0 < seconds


def time_loader(loader, device: torch.device, *, warmup: int, steps: int, repeats: int,
                window_s: float | None = None) -> dict:
    """Images/s and batches/s of the loader alone: ``warmup`` batches, then ``repeats``
    consecutive windows of up to ``steps`` batches (or ``window_s`` seconds).

    ``first_batch_s`` is the start-up cost (worker processes, pipeline prefetch) that every
    epoch pays once; windows that cross an epoch boundary pay it too, as training does.
    """
    ips, bps, per_batch = [], [], []
    with closing_batches(loader) as gen:
        t0 = time.perf_counter()
        views, _ = next(gen)
        first = time.perf_counter() - t0
        while _window(warmup, window_s, t0, 1):
            views, _ = next(gen)
        shapes, dtype = [list(v.shape) for v in views], views[0].dtype
        for _ in range(repeats):
            sync(device)
            images, times = 0, []
            t_start = time.perf_counter()
            while _window(steps, window_s, t_start, len(times)):
                t = time.perf_counter()
                views, _ = next(gen)
                times.append(time.perf_counter() - t)
                images += views[0].shape[0]
            sync(device)
            elapsed = time.perf_counter() - t_start
            ips.append(images / elapsed)
            bps.append(len(times) / elapsed)
            per_batch.append(statistics.median(times))
    return {"images_per_s": stat(ips), "batches_per_s": stat(bps), "first_batch_s": stat([first]),
            "batch_s": stat(per_batch), "repeats": len(ips), "shapes": shapes,
            "dtype": str(dtype).removeprefix("torch.")}


def synthetic_views(shapes: list[list[int]], device: torch.device,
                    dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    """Random batches with the loader's shapes, already on the device: no input cost at all."""
    g = torch.Generator(device="cpu").manual_seed(0)
    return [torch.randn(s, generator=g, dtype=torch.float32).to(device, dtype) for s in shapes]


class StepCounter:
    """Step numbers shared by every phase so that schedules and EMA hooks keep advancing."""

    def __init__(self) -> None:
        self.step = 0

    def next(self) -> int:
        self.step += 1
        return self.step - 1


def time_step(run: Run, views: list[torch.Tensor], counter: StepCounter, *, warmup: int,
              steps: int, repeats: int, window_s: float | None = None,
              compiled: bool = False) -> dict:
    """``train_step`` (forward, loss, backward, optimiser, EMA hooks) on device-resident views.

    ``first_step_s`` includes ``torch.compile``'s compilation when the forward is compiled.
    """
    cuda = run.device.type == "cuda"
    batch = views[0].shape[0]
    ips, step_s, gpu_s = [], [], []
    if cuda:
        torch.cuda.reset_peak_memory_stats(run.device)
    t = time.perf_counter()
    outputs, _ = train_step(run, views, counter.next())
    outputs["loss"].item()  # host sync: the first step's full cost (compilation included)
    first = time.perf_counter() - t
    # a compiled forward recompiles once when ``step`` first changes (dynamo marks it dynamic):
    # two warm-up steps at least; an eager one needs only the first when steps are slow
    done, t0 = 1, time.perf_counter()
    while done < 2 and compiled or _window(warmup, window_s and window_s / 2, t0 - first, done):
        train_step(run, views, counter.next())
        done += 1
    for _ in range(repeats):
        sync(run.device)
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        t0, done = time.perf_counter(), 0
        while _window(steps, window_s, t0, done):
            train_step(run, views, counter.next())
            done += 1
            if window_s is not None and cuda and done % 8 == 0:
                sync(run.device)  # the host runs ahead of the GPU: check the clock honestly
        if cuda:
            end.record()
        sync(run.device)
        elapsed = time.perf_counter() - t0
        ips.append(batch * done / elapsed)
        step_s.append(elapsed / done)
        if cuda:
            gpu_s.append(start.elapsed_time(end) / 1000 / done)
    return {"images_per_s": stat(ips), "step_s": stat(step_s),
            "gpu_step_s": stat(gpu_s) if gpu_s else None, "first_step_s": first,
            "repeats": len(ips),
            "peak_memory_bytes": torch.cuda.max_memory_allocated(run.device) if cuda else None}


def end_to_end(run: Run, counter: StepCounter, *, warmup: int, steps: int, repeats: int,
               window_s: float | None = None) -> dict:
    """The real loop (loader ``next`` then ``train_step``) and the time blocked in ``next``.

    No per-step synchronisation: on CUDA the step runs asynchronously as in ``fastssl train``,
    so time blocked in ``next`` is time the GPU may run dry.
    """
    ips, wait_frac, wait_s = [], [], []
    with closing_batches(run.loader, first_epoch=100) as gen:
        t0, done = time.perf_counter(), 0
        while _window(warmup, window_s and window_s / 2, t0, done):
            views, _ = next(gen)
            train_step(run, views, counter.next())
            done += 1
        for _ in range(repeats):
            sync(run.device)
            waited, images, done = 0.0, 0, 0
            t0 = time.perf_counter()
            while _window(steps, window_s, t0, done):
                t = time.perf_counter()
                views, _ = next(gen)
                waited += time.perf_counter() - t
                images += views[0].shape[0]
                train_step(run, views, counter.next())
                done += 1
            sync(run.device)
            elapsed = time.perf_counter() - t0
            ips.append(images / elapsed)
            wait_frac.append(waited / elapsed)
            wait_s.append(waited / done)
    return {"images_per_s": stat(ips), "wait_fraction": stat(wait_frac),
            "wait_s_per_step": stat(wait_s), "repeats": len(ips)}


def trace(run: Run, counter: StepCounter, out_dir: str | Path, *, steps: int = 3,
          warmup: int = 1) -> str:
    """A torch.profiler trace of a few end-to-end steps (chrome trace JSON: TensorBoard's
    profiler plugin, Perfetto or chrome://tracing open it)."""
    from torch.profiler import ProfilerActivity, profile, record_function

    activities = [ProfilerActivity.CPU]
    if run.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"fastssl_profile_{int(time.time())}.pt.trace.json"
    with closing_batches(run.loader, first_epoch=900) as gen:
        for _ in range(warmup):
            views, _ = next(gen)
            train_step(run, views, counter.next())
        sync(run.device)
        with profile(activities=activities, acc_events=True) as prof:
            for _ in range(steps):
                with record_function("loader.next"):
                    views, _ = next(gen)
                with record_function("train_step"):
                    train_step(run, views, counter.next())
            sync(run.device)
    prof.export_chrome_trace(str(path))
    return str(path)


def worker_counts(cores: int) -> list[int]:
    """1, 2, 4, ... up to ``cores`` (``cores`` itself included)."""
    counts, w = [], 1
    while w < cores:
        counts.append(w)
        w *= 2
    return counts + [cores]


def sweep(make_loader: Callable[[int], object], device: torch.device, counts: list[int], *,
          warmup: int, steps: int, window_s: float | None = None) -> list[dict]:
    """Loader-alone throughput against worker (torchvision) / thread (DALI) count, one repeat
    per point to stay inside the time budget."""
    points = []
    for w in counts:
        loader = make_loader(w)
        m = time_loader(loader, device, warmup=warmup, steps=steps, repeats=1, window_s=window_s)
        points.append({"workers": w, "images_per_s": m["images_per_s"]["median"],
                       "first_batch_s": m["first_batch_s"]["median"]})
        del loader
    return points


def torch_operator_costs(paths: list, specs: list, *, samples: int = 32) -> list[dict]:
    """Per-sample CPU cost of each torchvision operator (decode, crop, jitter, ...), measured
    in this process on ``samples`` images: where one loader worker spends its time."""
    from torchvision.transforms import v2 as T

    from fastssl.pipelines.torch_loader import view_transform

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


def dali_executor_statistics(loader) -> dict | None:
    """DALI's per-operator executor statistics, when the loader exposes its pipeline(s).

    DALI 2.4 reports per-operator output memory (``real_memory_size``, ``reserved_memory_size``,
    ...) when the pipeline was built with ``enable_memory_stats=True`` and
    ``exec_dynamic=False``; it has no per-operator timing API (timing is in its NVTX ranges,
    seen with Nsight Systems). Returns None when nothing is available.
    """
    pipes = getattr(loader, "pipelines", None) or (
        [loader.pipeline] if getattr(loader, "pipeline", None) is not None else [])
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


def with_forward(run: Run, forward) -> Run:
    return dataclasses.replace(run, forward=forward)


def dali_operator_costs(paths: list, specs: list, device_type: str, *, samples: int = 32,
                        iters: int = 5) -> list[dict]:
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
        @pipeline_def(batch_size=batch, num_threads=1, device_id=0 if gpu else None, seed=0,
                      prefetch_queue_depth=1)
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
            if gpu:
                out[0].as_cpu()  # waits for the GPU work
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


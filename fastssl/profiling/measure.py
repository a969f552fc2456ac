"""The measurements of ``fastssl profile``: loader alone, step alone, end to end, sweep, trace.

Every function takes a ``fastssl.train.Run`` (or its loader) and returns plain dicts of numbers;
nothing here prints or decides. Timings are wall clock (``time.perf_counter``); on CUDA the
device is synchronised at the edges of each timed window (and CUDA events time the step on the
GPU), never inside the end-to-end loop, which must overlap like the real one does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import statistics
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import cast

import torch

from fastssl.batch import Batch, inputs_of, to_device
from fastssl.pipelines import TrainLoader
from fastssl.train import Run, train_step


def stat(values: list[float]) -> dict:
    """Median and spread of one measurement over its repeats."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "values": list(values)}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batches(loader: TrainLoader, first_epoch: int = 0) -> Generator[Batch, None, None]:
    """Batches forever, epoch after epoch (short data sets end mid-measurement)."""
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
def closing_batches(loader: TrainLoader,
                    first_epoch: int = 0) -> Iterator[Generator[Batch, None, None]]:
    gen = batches(loader, first_epoch)
    try:
        yield gen
    finally:
        gen.close()
        gc.collect()  # free the epoch's DataLoader workers / DALI pipeline before what follows


def _window(steps: int, seconds: float | None, t0: float, done: int) -> bool:
    """True while a window (timed or warm-up) should go on: at most ``steps`` items, at least
    one, and none more once ``seconds`` have passed (keeps slow CPU runs inside the budget)."""
    if done >= steps:
        return False
    return done == 0 or seconds is None or time.perf_counter() - t0 < seconds


def _late(deadline: float | None, repeat: int) -> bool:
    """After the first repeat, stop repeating once the phase's deadline has passed."""
    return repeat > 0 and deadline is not None and time.perf_counter() > deadline


def time_loader(loader: TrainLoader, device: torch.device, *, warmup: int, steps: int,
                repeats: int, window_s: float | None = None,
                deadline: float | None = None) -> tuple[dict, Batch]:
    """Images/s and batches/s of the loader alone: ``warmup`` batches, then ``repeats``
    consecutive windows of up to ``steps`` batches (or ``window_s`` seconds).

    ``first_batch_s`` is the start-up cost (worker processes, pipeline prefetch) that every
    epoch pays once; windows that cross an epoch boundary pay it too, as training does. Also
    returns one real batch on ``device``, for timing the step alone without input cost.
    """
    ips, bps, per_batch = [], [], []
    with closing_batches(loader) as gen:
        t0 = time.perf_counter()
        batch = next(gen)
        first = time.perf_counter() - t0
        while _window(warmup, window_s, t0, 1):
            batch = next(gen)
        # a real batch kept on the device for the step alone (cloned: DALI reuses its buffers)
        sample = cast(Batch, {k: [x.clone() for x in v] if isinstance(v, list)
                              else cast(torch.Tensor, v).clone()
                              for k, v in to_device(batch, device).items()})
        shapes, dtype = [list(v.shape) for v in inputs_of(batch)], inputs_of(batch)[0].dtype
        for r in range(repeats):
            if _late(deadline, r):
                break
            sync(device)
            images = 0
            times: list[float] = []
            t_start = time.perf_counter()
            while _window(steps, window_s, t_start, len(times)):
                t = time.perf_counter()
                batch = next(gen)
                times.append(time.perf_counter() - t)
                images += inputs_of(batch)[0].shape[0]
            sync(device)
            elapsed = time.perf_counter() - t_start
            ips.append(images / elapsed)
            bps.append(len(times) / elapsed)
            per_batch.append(statistics.median(times))
    return {"images_per_s": stat(ips), "batches_per_s": stat(bps), "first_batch_s": stat([first]),
            "batch_s": stat(per_batch), "repeats": len(ips), "shapes": shapes,
            "dtype": str(dtype).removeprefix("torch.")}, sample


class StepCounter:
    """Step numbers shared by every phase so that schedules and EMA hooks keep advancing."""

    def __init__(self) -> None:
        self.step = 0

    def next(self) -> int:
        self.step += 1
        return self.step - 1


def time_step(run: Run, batch: Batch, counter: StepCounter, *, warmup: int,
              steps: int, repeats: int, window_s: float | None = None,
              deadline: float | None = None, compiled: bool = False) -> dict:
    """``train_step`` (forward, loss, backward, optimiser, EMA hooks) on a device-resident batch.

    ``first_step_s`` includes ``torch.compile``'s compilation when the forward is compiled.
    """
    cuda = run.device.type == "cuda"
    images = inputs_of(batch)[0].shape[0]
    ips, step_s, gpu_s = [], [], []
    if cuda:
        torch.cuda.reset_peak_memory_stats(run.device)
    t = time.perf_counter()
    outputs, _ = train_step(run, batch, counter.next())
    outputs["loss"].item()  # host sync: the first step's full cost (compilation included)
    first = time.perf_counter() - t
    # a compiled forward recompiles once when ``step`` first changes (dynamo marks it dynamic):
    # two warm-up steps at least; an eager one needs only the first when steps are slow
    done, t0 = 1, time.perf_counter()
    while done < 2 and compiled or _window(warmup, window_s and window_s / 2, t0 - first, done):
        train_step(run, batch, counter.next())
        done += 1
    for r in range(repeats):
        if _late(deadline, r):
            break
        sync(run.device)
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        t0, done = time.perf_counter(), 0
        while _window(steps, window_s, t0, done):
            train_step(run, batch, counter.next())
            done += 1
            if window_s is not None and cuda and done % 8 == 0:
                sync(run.device)  # the host runs ahead of the GPU: check the clock honestly
        if cuda:
            end.record()
        sync(run.device)
        elapsed = time.perf_counter() - t0
        ips.append(images * done / elapsed)
        step_s.append(elapsed / done)
        if cuda:
            gpu_s.append(start.elapsed_time(end) / 1000 / done)
    return {"images_per_s": stat(ips), "step_s": stat(step_s),
            "gpu_step_s": stat(gpu_s) if gpu_s else None, "first_step_s": first,
            "repeats": len(ips),
            "peak_memory_bytes": torch.cuda.max_memory_allocated(run.device) if cuda else None}


def end_to_end(run: Run, counter: StepCounter, *, warmup: int, steps: int, repeats: int,
               window_s: float | None = None, deadline: float | None = None) -> dict:
    """The real loop (loader ``next`` then ``train_step``) and the time blocked in ``next``.

    No per-step synchronisation: on CUDA the step runs asynchronously as in ``fastssl train``,
    so time blocked in ``next`` is time the GPU may run dry.
    """
    ips, wait_frac, wait_s = [], [], []
    with closing_batches(run.loader, first_epoch=100) as gen:
        t0, done = time.perf_counter(), 0
        while _window(warmup, window_s and window_s / 2, t0, done):
            batch = next(gen)
            train_step(run, batch, counter.next())
            done += 1
        for r in range(repeats):
            if _late(deadline, r):
                break
            sync(run.device)
            waited, images, done = 0.0, 0, 0
            t0 = time.perf_counter()
            while _window(steps, window_s, t0, done):
                t = time.perf_counter()
                batch = next(gen)
                waited += time.perf_counter() - t
                images += inputs_of(batch)[0].shape[0]
                train_step(run, batch, counter.next())
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
            batch = next(gen)
            train_step(run, batch, counter.next())
        sync(run.device)
        with profile(activities=activities, acc_events=True) as prof:
            for _ in range(steps):
                with record_function("loader.next"):
                    batch = next(gen)
                with record_function("train_step"):
                    train_step(run, batch, counter.next())
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


def sweep(make_loader: Callable[[int], TrainLoader], device: torch.device, counts: list[int], *,
          warmup: int, steps: int, window_s: float | None = None) -> list[dict]:
    """Loader-alone throughput against worker (torchvision) / thread (DALI) count, one repeat
    per point to stay inside the time budget."""
    points = []
    for w in counts:
        loader = make_loader(w)
        m, _ = time_loader(loader, device, warmup=warmup, steps=steps, repeats=1,
                           window_s=window_s)
        points.append({"workers": w, "images_per_s": m["images_per_s"]["median"],
                       "first_batch_s": m["first_batch_s"]["median"]})
        del loader
    return points


def with_forward(run: Run, forward) -> Run:
    return dataclasses.replace(run, forward=forward)

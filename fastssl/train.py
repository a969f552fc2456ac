"""The one training loop, for every method, single process or DDP (``torchrun``).

config -> distributed setup -> data -> model -> optimiser -> resume -> compile -> loop -> evaluate.
Everything method-specific lives in the method (``fastssl.methods``); ``train`` reads top to
bottom over the named helpers above it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from fastssl import __version__, checkpoint, distributed
from fastssl.batch import Batch, to_device
from fastssl.config import Config, save
from fastssl.data import dataset_index
from fastssl.data.layout import DatasetIndex, Split, is_video
from fastssl.eval.run import knn_of_model
from fastssl.methods import build_method, get_method
from fastssl.methods.base import Method, MethodContext, Outputs
from fastssl.metrics import MetricsLog, plot_curves
from fastssl.models.sync_bn import convert_sync_batchnorm
from fastssl.optim import build_optimizer, cosine_factor, set_lr
from fastssl.pipelines import LoaderSpec, TrainLoader, build_train_loader, resolve_loader
from fastssl.pipelines.background import bg_options
from fastssl.pipelines.clips import clip_spec
from fastssl.pipelines.views import specs_for

log = logging.getLogger("fastssl")


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or Inf; the run stops without overwriting the last good checkpoint."""


@dataclass
class Result:
    knn_top1: float  # the task's metric (kNN top-1 for pretraining)
    knn_top1_init: float  # the same metric at step 0
    final_loss: float
    steps: int
    seconds: float
    stopped_early: bool = False
    metric: str = "knn_top1"
    init_name: str = "random_init_knn_top1"
    loader: str = ""  # the loader that ran (``auto`` resolved)

    def summary(self) -> str:
        return (f"{self.metric}={self.knn_top1:.2f} {self.init_name}={self.knn_top1_init:.2f} "
                f"final_loss={self.final_loss:.4f} steps={self.steps} "
                f"seconds={self.seconds:.0f}")


def knn_eval(model: Method, index: DatasetIndex, cfg: Config, device: torch.device) -> float:
    """Weighted kNN top-1 (%) of ``model.embed`` on the held-out split."""
    return knn_of_model(model, index, crop_size=cfg.crop_size, workers=cfg.workers, k=cfg.knn_k,
                        temperature=cfg.knn_temperature, device=device, clip=clip_spec(cfg))


@dataclass(frozen=True)
class Task:
    """What a run trains and how it is scored. The default is ``fastssl train``: the registry's
    ``cfg.method`` on the whole train split, scored by kNN; ``fastssl.semisup`` passes
    classifiers on labelled subsets, scored by top-1."""

    method: type[Method] | None = None  # the class (for its view preset); None = cfg.method's
    build: Callable[[Config, MethodContext], Method] = build_method
    split: Split | None = None  # the training split; None = the data set's train split
    evaluate: Callable[[Method, DatasetIndex, Config, torch.device], float] = knn_eval
    metric: str = "knn_top1"  # metrics.jsonl key of the evaluation and the summary's first word
    init_name: str = "random_init_knn_top1"  # the summary's name of the step-0 evaluation


@dataclass
class Run:
    """Everything a run builds from its config (shared by ``train`` and ``fastssl profile``)."""

    cfg: Config
    device: torch.device
    ddp: bool
    rank: int
    world: int
    index: DatasetIndex
    task: Task
    loader: TrainLoader
    loader_name: str  # memory | torch | dali (``auto`` resolved)
    model: Method  # the eager module: state dicts are saved and loaded through it
    optimizer: torch.optim.Optimizer
    forward: Callable[[Batch], Outputs]  # model, possibly wrapped by DDP and torch.compile
    autocast: contextlib.AbstractContextManager
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.cfg.channels_last else torch.preserve_format


def cpu_threads(cfg: Config, loader_name: str, world: int) -> int:
    """Intra-op threads for a CPU run. OpenMP threads spin while they wait: when the loader's
    workers or DALI threads share the cores with them, every op slows down (av_contrastive on 2
    cores: 20 clips/s with 2 threads beside 2 DALI threads, 130 with 1). The memory loader
    augments with the step's own threads."""
    if cfg.threads:
        return cfg.threads
    cores = len(os.sched_getaffinity(0)) // world
    return max(1, cores - (0 if loader_name == "memory" else cfg.workers))


def configure_backends(cfg: Config, device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        # oneDNN picks convolution kernels by buffer alignment: reproducible reruns need it off
        torch.backends.mkldnn.enabled = False  # type: ignore[assignment]  # a flag in torch


def loader_spec(cfg: Config, index: DatasetIndex, device: torch.device, rank: int,
                world: int, task: Task = Task()) -> LoaderSpec:
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by {world} processes")
    views = tuple(specs_for(cfg, (task.method or get_method(cfg.method)).views))
    clip = clip_spec(cfg, scale=cfg.global_scale) if is_video(index.train.paths[0]) else None
    return LoaderSpec(task.split or index.train, views, cfg.batch_size // world, cfg.workers,
                      cfg.seed, rank, world, device.type, bg_options(cfg, index), clip)


def setup(cfg: Config, *, loader_stats: bool = False, task: Task = Task()) -> Run:
    """Distributed setup -> data -> model -> optimiser -> DDP / compile / autocast."""
    device = distributed.resolve_device(cfg.device)
    ddp = distributed.init_from_env(device.type)
    rank, world = distributed.rank(), distributed.world_size()
    configure_backends(cfg, device)

    index = dataset_index(cfg.data, rank)
    spec = loader_spec(cfg, index, device, rank, world, task)
    loader_name = resolve_loader(cfg.loader, device.type, spec.split, spec.views, spec.bg)
    log.info("loader: %s", loader_name)
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads(cfg, loader_name, world))
    loader = build_train_loader(loader_name, spec, stats=loader_stats)
    steps_per_epoch = len(loader)

    autocast_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    ctx = MethodContext.from_config(cfg, steps_per_epoch=steps_per_epoch, inputs=spec.provides,
                                    world_size=world, compute_dtype=autocast_dtype)
    torch.manual_seed(cfg.seed)  # same seed on every process: identical initial weights
    model = task.build(cfg, ctx)
    if cfg.sync_bn and ddp:  # torch's SyncBatchNorm on CUDA, a global-statistics BN on gloo/CPU
        model = convert_sync_batchnorm(model, device)
    # (torch's stub of Module.to lacks memory_format)
    model.to(device, memory_format=torch.channels_last if cfg.channels_last  # type: ignore[call-overload]
             else torch.preserve_format)
    optimizer = build_optimizer(model.param_groups(cfg), cfg)

    forward: Callable[[Batch], Outputs] = DDP(
        model, device_ids=[device.index] if device.type == "cuda" else None,
        broadcast_buffers=False) if ddp else model
    if cfg.compile == "on" or (cfg.compile == "auto" and device.type == "cuda"):
        forward = torch.compile(forward)
    autocast: contextlib.AbstractContextManager = (
        torch.autocast("cuda", dtype=autocast_dtype) if device.type == "cuda"
        else contextlib.nullcontext())
    return Run(cfg, device, ddp, rank, world, index, task, loader, loader_name, model, optimizer,
               forward, autocast, steps_per_epoch, ctx.total_steps,
               round(cfg.warmup_epochs * steps_per_epoch))


def train_step(run: Run, batch: Batch, step: int) -> tuple[Outputs, float]:
    """One optimisation step; returns the method's outputs (device tensors) and the lr used."""
    lr = set_lr(run.optimizer, cosine_factor(step, run.total_steps, run.warmup_steps,
                                             run.cfg.min_lr_ratio))
    batch = to_device(batch, run.device, run.memory_format)
    with run.autocast:
        outputs = run.forward(batch)
    run.optimizer.zero_grad(set_to_none=True)
    outputs["loss"].backward()
    run.model.before_optimizer_step(outputs, step)
    if run.cfg.clip_grad > 0:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.clip_grad)
    run.optimizer.step()
    run.model.on_train_step_end(outputs, step)
    return outputs, lr


class StopFlag:
    """SIGTERM / SIGINT ask the loop to checkpoint and exit at the end of the current step."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum

    def restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


class FiniteGuard:
    """Remembers the first step with a non-finite loss on the device (no host sync per step);
    ``check`` (a host sync) runs only at log and checkpoint time."""

    def __init__(self, device: torch.device, last_good: Path) -> None:
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)
        self.last_good = last_good

    def observe(self, loss: torch.Tensor, step: int) -> None:
        self.first_bad = torch.where((self.first_bad < 0) & ~torch.isfinite(loss.detach()),
                                     step, self.first_bad)

    def check(self) -> None:
        if self.first_bad.item() >= 0:
            raise NonFiniteLoss(
                f"loss is not finite at step {self.first_bad.item()}; stopping. Last good "
                f"checkpoint: {self.last_good if self.last_good.exists() else 'none'}")


class Checkpoints:
    """``last.pt`` (+ periodic copies) written atomically by rank 0 from the eager module's state
    dicts (no ``_orig_mod.`` / ``module.`` prefixes); never over a diverged model."""

    def __init__(self, run: Run, guard: FiniteGuard) -> None:
        self.run, self.guard = run, guard
        self.folder = Path(run.cfg.out) / "checkpoints"
        self.last = self.folder / "last.pt"

    def save(self, step: int, knn_init: float, periodic: bool = False) -> None:
        self.guard.check()
        if self.run.rank != 0:
            return
        run = self.run
        state = {"model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
                 "step": step, "epoch": step // run.steps_per_epoch, "config": run.cfg.to_dict(),
                 "rng": checkpoint.rng_state(), "knn_top1_init": knn_init,
                 "format": checkpoint.FORMAT_VERSION, "fastssl_version": __version__}
        epoch_copy = self.folder / f"epoch_{step // run.steps_per_epoch:04d}.pt"
        for path in (self.last, *([epoch_copy] if periodic else [])):
            checkpoint.save_atomic(state, path)

    def resume(self) -> tuple[int, float]:
        """``(step, random-init kNN)`` from ``last.pt``, or ``(0, nan)`` when there is none."""
        if not self.last.exists():
            log.info("no checkpoint at %s: starting from scratch", self.last)
            return 0, float("nan")
        state = checkpoint.load(self.last, map_location=self.run.device)
        checkpoint.check(state, self.last)
        self.run.model.load_state_dict(state["model"])
        self.run.optimizer.load_state_dict(state["optimizer"])
        checkpoint.set_rng_state(state["rng"])
        log.info("resumed from %s at step %d", self.last, state["step"])
        return state["step"], state.get("knn_top1_init", float("nan"))


class Progress:
    """A tqdm bar when stderr is a terminal; otherwise one plain line per log interval."""

    def __init__(self, total: int, start: int, enabled: bool) -> None:
        self.total, self.enabled, self.t0, self.start = total, enabled, time.perf_counter(), start
        self.bar = (tqdm(total=total, initial=start, unit="step", dynamic_ncols=True,
                         file=sys.stderr) if enabled and sys.stderr.isatty() else None)

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def report(self, record: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{record['loss']:.4f}",
                                 img_s=f"{record['images_per_s']:.0f}")
        elif self.enabled:
            step = record["step"]
            rate = (step - self.start) / max(time.perf_counter() - self.t0, 1e-9)
            eta = (self.total - step) / max(rate, 1e-9)
            print(f"step {step}/{self.total} epoch {record['epoch']:.2f} loss {record['loss']:.4f}"
                  f" img/s {record['images_per_s']:.0f} eta {eta // 60:.0f}m{eta % 60:02.0f}s",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Logger:
    """metrics.jsonl (rank 0) and progress, every ``log_every`` steps."""

    def __init__(self, run: Run, metrics: MetricsLog | None, progress: Progress,
                 step: int) -> None:
        self.run, self.metrics, self.progress = run, metrics, progress
        self.t, self.step = time.perf_counter(), step

    def write(self, record: dict[str, Any]) -> None:
        if self.metrics is not None:
            self.metrics.write(record)

    def log_step(self, outputs: Outputs, step: int, lr: float) -> float:
        """Log the step (host sync: ``.item()``); returns the loss."""
        now = time.perf_counter()
        record = {"step": step, "epoch": step / self.run.steps_per_epoch,
                  "loss": outputs["loss"].item(), "lr": lr,
                  "images_per_s": self.run.cfg.batch_size * (step - self.step)
                  / max(now - self.t, 1e-9)}
        record.update({k: v.item() for k, v in outputs.items() if k != "loss" and v.ndim == 0})
        self.t, self.step = now, step
        self.write(record)
        self.progress.report(record)
        return record["loss"]

    def evaluate(self, step: int, tag: str) -> float:
        """The task's evaluation on the held-out split (rank 0; the other processes wait)."""
        run, acc = self.run, float("nan")
        if run.rank == 0:
            acc = run.task.evaluate(run.model, run.index, run.cfg, run.device)
            self.write({"step": step, "epoch": step / run.steps_per_epoch, tag: acc})
        if run.ddp:
            dist.barrier()
        return acc


def end_of_epoch(run: Run, ckpts: Checkpoints, logger: Logger, step: int,
                 knn_init: float) -> None:
    """Corrupt-file count, checkpoint (+ periodic copy), periodic evaluation."""
    cfg, done = run.cfg, step // run.steps_per_epoch
    if run.loader.corrupt_count:
        logger.write({"step": step, "epoch": step / run.steps_per_epoch,
                      "corrupt_skipped": run.loader.corrupt_count})
    ckpts.save(step, knn_init, periodic=bool(cfg.checkpoint_every)
               and done % cfg.checkpoint_every == 0)
    if cfg.eval_every > 0 and done % cfg.eval_every == 0 and step < run.total_steps:
        logger.evaluate(step, run.task.metric)


def train(cfg: Config, task: Task = Task()) -> Result:
    t_start = time.time()
    run = setup(cfg, task=task)
    out, spe = Path(cfg.out), run.steps_per_epoch
    guard = FiniteGuard(run.device, Path(cfg.out) / "checkpoints" / "last.pt")
    ckpts = Checkpoints(run, guard)
    if run.rank == 0:
        ckpts.folder.mkdir(parents=True, exist_ok=True)
        save(cfg, out / "config.yaml")
    step, knn_init = ckpts.resume() if cfg.resume else (0, float("nan"))
    metrics = MetricsLog(out, resume_step=step if cfg.resume else None) if run.rank == 0 \
        else None
    progress = Progress(run.total_steps, step, enabled=run.rank == 0 and cfg.progress)
    logger = Logger(run, metrics, progress, step)
    if step == 0 and cfg.eval_every >= 0:
        knn_init = logger.evaluate(step, f"{task.metric}_init")  # the step-0 model

    stop, loss = StopFlag(), float("nan")
    outputs: Outputs = {}
    try:
        while step < run.total_steps and stop.signum is None:
            for batch in run.loader.epoch(step // spe, start_batch=step % spe):
                outputs, lr = train_step(run, batch, step)
                guard.observe(outputs["loss"], step)
                step += 1
                progress.advance()
                if step % cfg.log_every == 0 or step == run.total_steps \
                        or stop.signum is not None:
                    guard.check()
                    loss = logger.log_step(outputs, step, lr)
                if stop.signum is not None:
                    break
            else:  # a full epoch ended
                end_of_epoch(run, ckpts, logger, step, knn_init)
        ckpts.save(step, knn_init)
    finally:
        stop.restore()
        progress.close()

    stopped = stop.signum is not None and step < run.total_steps
    acc = float("nan") if stopped or cfg.eval_every < 0 else logger.evaluate(step, task.metric)
    if metrics is not None:
        metrics.close()
        plot_curves(metrics.path, out / "curves.png")
    if run.ddp:
        distributed.shutdown()
    if not math.isfinite(loss) and outputs:
        loss = outputs["loss"].item()
    return Result(acc, knn_init, loss, step, time.time() - t_start, stopped, task.metric,
                  task.init_name, run.loader_name)

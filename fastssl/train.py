"""The one training loop, for every method, single process or DDP (``torchrun``).

config -> distributed setup -> data -> model -> optimiser -> resume -> compile -> loop -> evaluate.
Everything method-specific lives in the method (``fastssl.methods``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from fastssl import checkpoint, distributed
from fastssl.config import Config, save
from fastssl.data.layout import DatasetIndex, scan
from fastssl.data.synth import default_dataset
from fastssl.eval.features import extract
from fastssl.eval.knn import knn_top1
from fastssl.methods import build_method, get_method
from fastssl.metrics import MetricsLog, plot_curves
from fastssl.models.sync_bn import convert_sync_batchnorm
from fastssl.optim import build_optimizer, cosine_factor, set_lr
from fastssl.pipelines import build_train_loader, resolve_loader
from fastssl.pipelines.background import bg_options
from fastssl.pipelines.torch_loader import eval_loader
from fastssl.pipelines.views import specs_for

log = logging.getLogger("fastssl")


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or Inf; the run stops without overwriting the last good checkpoint."""


@dataclass
class Result:
    knn_top1: float
    knn_top1_init: float
    final_loss: float
    steps: int
    seconds: float
    stopped_early: bool = False

    def summary(self) -> str:
        return (f"knn_top1={self.knn_top1:.2f} random_init_knn_top1={self.knn_top1_init:.2f} "
                f"final_loss={self.final_loss:.4f} steps={self.steps} "
                f"seconds={self.seconds:.0f}")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device=cuda asked for but no CUDA GPU is available")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def dataset_index(cfg: Config, rank: int) -> DatasetIndex:
    """``cfg.data`` or the embedded shapes set (generated once by rank 0)."""
    if not cfg.data and rank == 0:
        default_dataset()
    if distributed.is_distributed():
        dist.barrier()
    return scan(cfg.data or default_dataset())


@torch.no_grad()
def evaluate_knn(model, index: DatasetIndex, cfg: Config, device: torch.device) -> float:
    """Weighted kNN top-1 (%) of the backbone features on the held-out split."""
    was_training = model.training
    model.eval()
    train = extract(model.embed, eval_loader(index.train, cfg.crop_size, workers=cfg.workers),
                    device)
    test = extract(model.embed, eval_loader(index.val, cfg.crop_size, workers=cfg.workers),
                   device)
    model.train(was_training)
    return knn_top1(*train, *test, k=cfg.knn_k, temperature=cfg.knn_temperature)


class StopFlag:
    """SIGTERM / SIGINT ask the loop to checkpoint and exit at the end of the current step."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}

    def _handle(self, signum, frame) -> None:
        self.signum = signum

    def restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


@dataclass
class Run:
    """Everything a run builds from its config (shared by ``train`` and ``fastssl profile``)."""

    cfg: Config
    device: torch.device
    ddp: bool
    rank: int
    world: int
    index: DatasetIndex
    loader: object
    loader_name: str  # memory | torch | dali (``auto`` resolved)
    model: torch.nn.Module  # the eager module: state dicts are saved and loaded through it
    optimizer: torch.optim.Optimizer
    forward: object  # model, possibly wrapped by DDP and torch.compile
    autocast: object
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int


def setup(cfg: Config) -> Run:
    """Distributed setup -> data -> model -> optimiser -> DDP / compile / autocast."""
    device = resolve_device(cfg.device)
    ddp = distributed.init_from_env(device.type)
    rank, world = distributed.rank(), distributed.world_size()
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        # oneDNN picks convolution kernels by buffer alignment: reproducible reruns need it off
        torch.backends.mkldnn.enabled = False
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by {world} processes")

    index = dataset_index(cfg, rank)
    specs = specs_for(cfg, get_method(cfg.method).views)
    options = bg_options(cfg, index)
    loader_name = resolve_loader(cfg.loader, device.type, index.train, specs, **options)
    log.info("loader: %s", loader_name)
    loader = build_train_loader(
        loader_name, index.train, specs, batch_size=cfg.batch_size // world,
        workers=cfg.workers, seed=cfg.seed, rank=rank, world=world, device_type=device.type,
        **options)
    steps_per_epoch = len(loader)

    torch.manual_seed(cfg.seed)  # same seed on every process: identical initial weights
    model = build_method(cfg)
    fmt = torch.channels_last if cfg.channels_last else torch.preserve_format
    if cfg.sync_bn and ddp:  # torch's SyncBatchNorm on CUDA, a global-statistics BN on gloo/CPU
        model = convert_sync_batchnorm(model, device)
    model.to(device, memory_format=fmt)
    optimizer = build_optimizer(model.param_groups(cfg), cfg)

    forward = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
                  broadcast_buffers=False) if ddp else model
    if cfg.compile == "on" or (cfg.compile == "auto" and device.type == "cuda"):
        forward = torch.compile(forward)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else contextlib.nullcontext())
    return Run(cfg, device, ddp, rank, world, index, loader, loader_name, model, optimizer,
               forward, autocast, steps_per_epoch, cfg.epochs * steps_per_epoch,
               round(cfg.warmup_epochs * steps_per_epoch))


def train_step(run: Run, views: list[torch.Tensor], step: int) -> tuple[dict, float]:
    """One optimisation step; returns the method's outputs (device tensors) and the lr used."""
    lr = set_lr(run.optimizer, cosine_factor(step, run.total_steps, run.warmup_steps,
                                             run.cfg.min_lr_ratio))
    fmt = torch.channels_last if run.cfg.channels_last else torch.preserve_format
    views = [v.to(run.device, non_blocking=True, memory_format=fmt) for v in views]
    with run.autocast:
        outputs = run.forward(views, step)
    run.optimizer.zero_grad(set_to_none=True)
    outputs["loss"].backward()
    run.model.before_optimizer_step(step, run.total_steps)
    if run.cfg.clip_grad > 0:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.clip_grad)
    run.optimizer.step()
    run.model.on_train_step_end(step, run.total_steps)
    return outputs, lr


def train(cfg: Config) -> Result:
    t_start = time.time()
    run = setup(cfg)
    model, optimizer, device, rank = run.model, run.optimizer, run.device, run.rank
    steps_per_epoch, total_steps = run.steps_per_epoch, run.total_steps
    out = Path(cfg.out)
    ckpt_path = out / "checkpoints" / "last.pt"
    if rank == 0:
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        save(cfg, out / "config.yaml")

    # -- resume -----------------------------------------------------------------------------
    step, knn_init = 0, float("nan")
    if cfg.resume and ckpt_path.exists():
        state = checkpoint.load(ckpt_path, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, knn_init = state["step"], state.get("knn_top1_init", knn_init)
        checkpoint.set_rng_state(state["rng"])
        log.info("resumed from %s at step %d", ckpt_path, step)
    elif cfg.resume:
        log.info("no checkpoint at %s: starting from scratch", ckpt_path)
    metrics = MetricsLog(out, resume_step=step if cfg.resume else None) if rank == 0 else None

    def save_checkpoint(*extra_paths: Path) -> None:
        check_finite()  # never overwrite the last good checkpoint with a diverged model
        if rank == 0:  # state dicts from the eager module: no _orig_mod. / module. prefixes
            state = {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                "epoch": step // steps_per_epoch, "config": cfg.to_dict(),
                "rng": checkpoint.rng_state(), "knn_top1_init": knn_init,
            }
            for path in (ckpt_path, *extra_paths):
                checkpoint.save_atomic(state, path)

    def run_eval(tag: str) -> float:
        acc = float("nan")
        if rank == 0:
            acc = evaluate_knn(model, run.index, cfg, device)
            metrics.write({"step": step, "epoch": step / steps_per_epoch, tag: acc})
        if run.ddp:
            dist.barrier()
        return acc

    do_eval = cfg.eval_every >= 0
    if step == 0 and do_eval:
        knn_init = run_eval("knn_top1_init")  # the randomly initialised encoder, same architecture

    # -- loop -------------------------------------------------------------------------------
    stop = StopFlag()
    progress = None
    if rank == 0 and cfg.progress:
        from tqdm import tqdm

        progress = tqdm(total=total_steps, initial=step, unit="step", dynamic_ncols=True,
                        file=sys.stderr)
    first_bad = torch.full((), -1, dtype=torch.long, device=device)  # no host sync per step

    def check_finite() -> None:  # .item(): a host sync, only at log / checkpoint time
        if first_bad.item() >= 0:
            raise NonFiniteLoss(
                f"loss is not finite at step {first_bad.item()}; stopping. Last good "
                f"checkpoint: {ckpt_path if ckpt_path.exists() else 'none'}")

    loss = torch.zeros((), device=device)
    last_loss, t_log, step_log = float("nan"), time.perf_counter(), step
    try:
        while step < total_steps and stop.signum is None:
            epoch = step // steps_per_epoch
            for views, _ in run.loader.epoch(epoch, start_batch=step % steps_per_epoch):
                outputs, lr = train_step(run, views, step)
                loss = outputs["loss"]
                first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss.detach()),
                                        step, first_bad)
                step += 1
                if progress is not None:
                    progress.update(1)
                if step % cfg.log_every == 0 or step == total_steps or stop.signum is not None:
                    check_finite()
                    now = time.perf_counter()
                    last_loss = loss.item()
                    record = {"step": step, "epoch": step / steps_per_epoch, "loss": last_loss,
                              "lr": lr, "images_per_s": cfg.batch_size * (step - step_log)
                              / max(now - t_log, 1e-9)}
                    record.update({k: v.item() for k, v in outputs.items() if k != "loss"})
                    t_log, step_log = now, step
                    if metrics is not None:
                        metrics.write(record)
                    if progress is not None:
                        progress.set_postfix(loss=f"{last_loss:.4f}",
                                             img_s=f"{record['images_per_s']:.0f}")
                if stop.signum is not None:
                    break
            else:  # a full epoch ended
                if run.loader.corrupt_count and metrics is not None:
                    metrics.write({"step": step, "epoch": step / steps_per_epoch,
                                   "corrupt_skipped": run.loader.corrupt_count})
                done = step // steps_per_epoch
                periodic = cfg.checkpoint_every and done % cfg.checkpoint_every == 0
                save_checkpoint(*([out / "checkpoints" / f"epoch_{done:04d}.pt"] if periodic
                                  else []))
                if cfg.eval_every > 0 and done % cfg.eval_every == 0 and step < total_steps:
                    run_eval("knn_top1")
        save_checkpoint()
    finally:
        stop.restore()
        if progress is not None:
            progress.close()
    stopped = stop.signum is not None and step < total_steps
    acc = float("nan") if stopped or not do_eval else run_eval("knn_top1")
    if rank == 0:
        metrics.close()
        plot_curves(metrics.path, out / "curves.png")
    if run.ddp:
        dist.destroy_process_group()
    if not math.isfinite(last_loss):
        last_loss = loss.item()
    return Result(acc, knn_init, last_loss, step, time.time() - t_start, stopped_early=stopped)

"""Two gloo processes on CPU give the loss and gradients of one process on the concatenated batch.

Each method runs one step under DDP (so DDP's gradient averaging is part of what is tested) with
BatchNorm converted by ``fastssl.models.sync_bn`` (global statistics), in float64; the reference
is the same model, same seed, in this process on the full batch. Losses that are local means
(BYOL, SimSiam, SwAV, MoCo v2) are compared as the mean over processes; the others are global on
every process.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

from fastssl.models.sync_bn import convert_sync_batchnorm
from tests.helpers import make_method

WORLD = 2
BATCH = 8  # global
TINY = {"backbone": "small_cnn", "crop_size": 16, "local_crop_size": 8, "sync_bn": True,
        "proj_hidden_dim": 32, "proj_dim": 16}
CASES = {
    "simclr": {},
    "barlow_twins": {},
    "swav": {"n_prototypes": 12, "local_crops": 2},
    "mocov3": {"pred_hidden_dim": 32, "temperature": 0.2},
    "byol": {"pred_hidden_dim": 32},
    "simsiam": {"pred_hidden_dim": 8},
    "mocov2": {"queue_size": 32},
}


def _views(cfg) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    sizes = [cfg.crop_size] * cfg.global_crops + [cfg.local_crop_size] * cfg.local_crops
    return [torch.randn(BATCH, 3, s, s, generator=g, dtype=torch.float64) for s in sizes]


def run_step(name: str, rank: int = 0, world: int = 1) -> dict:
    cfg, model = make_method(name, world_size=world, steps_per_epoch=10, epochs=1,
                             **TINY, **CASES[name])
    model = convert_sync_batchnorm(model).double()
    views = _views(cfg)
    forward = model
    if world > 1:
        views = [v.chunk(world)[rank] for v in views]
        forward = DDP(model, broadcast_buffers=False)
    out = forward({"views": views})
    loss = out["loss"]
    loss.backward()
    loss = loss.detach().clone()
    if world > 1:
        dist.all_reduce(loss)
        loss /= world
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.before_optimizer_step(out, 0)
    model.on_train_step_end(out, 0)
    # MoCo v2's queue and every BatchNorm's running statistics (global mean, unbiased variance)
    buffers = {n: b.clone() for n, b in model.named_buffers() if "queue" in n or "running" in n}
    return {"loss": loss, "grads": grads, "buffers": buffers}


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        torch.save({name: run_step(name, rank, WORLD) for name in CASES},
                   Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ddp")
    mp.start_processes(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True,
                       start_method="spawn")
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


@pytest.mark.parametrize("name", list(CASES))
def test_ddp_equals_single_process_on_concatenated_batch(name, ddp_results):
    torch.set_num_threads(1)
    ref = run_step(name)
    for r, res in enumerate(ddp_results):
        got = res[name]
        torch.testing.assert_close(got["loss"], ref["loss"], rtol=1e-9, atol=1e-10,
                                   msg=lambda m, r=r: f"{name} loss, rank {r}: {m}")
        assert got["grads"].keys() == ref["grads"].keys()
        for key, g in ref["grads"].items():
            assert g is not None and got["grads"][key] is not None, f"{name}: no grad for {key}"
            torch.testing.assert_close(got["grads"][key], g, rtol=1e-7, atol=1e-9,
                                       msg=lambda m, k=key, r=r: f"{name} grad {k}, rank {r}: {m}")
        assert got["buffers"].keys() == ref["buffers"].keys()
        for key, b in ref["buffers"].items():
            torch.testing.assert_close(got["buffers"][key], b, rtol=1e-7, atol=1e-9,
                                       msg=lambda m, k=key, r=r: f"{name} {k}, rank {r}: {m}")

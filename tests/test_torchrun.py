"""Real ``torchrun`` launches of ``fastssl train`` on gloo (CPU): two nodes of one process give the
losses of one node of two processes, and a DDP SwAV checkpoint with a queue is evaluated and
resumed in a single process."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
import torch

from fastssl.metrics import read
from tests.helpers import TINY, cli_env, run_cli, tiny_shapes

pytestmark = pytest.mark.slow
ARGS = [*TINY, "--eval_every=-1", "--log_every=1", "--deterministic=true", "--batch_size=16"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_shapes(tmp_path_factory.mktemp("data"), per_class=8)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(nnodes: int, nproc: int, *args: str) -> list[subprocess.CompletedProcess]:
    """``nnodes`` torchrun agents (one per "node", all on this machine) with a c10d rendezvous."""
    port = _free_port()
    launch = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nnodes}",
              f"--nproc_per_node={nproc}", "--rdzv_backend=c10d",
              f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=fastssl-test", "-m",
              "fastssl.cli", "train", *args]
    procs = [subprocess.Popen(launch, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=cli_env()) for _ in range(nnodes)]
    done = []
    for p in procs:
        out, err = p.communicate(timeout=400)
        done.append(subprocess.CompletedProcess(launch, p.returncode, out, err))
    for d in done:
        assert d.returncode == 0, d.stderr[-3000:]
    return done


def _losses(path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read(path) if "loss" in r]


def test_two_nodes_equal_one_node_of_two_processes(data, tmp_path):
    common = ["--method", "simclr", "--data", str(data), "--epochs", "2", *ARGS]
    torchrun(1, 2, *common, "--out", str(tmp_path / "one"))
    torchrun(2, 1, *common, "--out", str(tmp_path / "two"))
    one, two = _losses(tmp_path / "one/metrics.jsonl"), _losses(tmp_path / "two/metrics.jsonl")
    assert [s for s, _ in one] == list(range(1, 11))
    assert one == two


def test_ddp_swav_queue_checkpoint_evaluates_and_resumes_in_one_process(data, tmp_path):
    out = tmp_path / "swav"
    common = ["--method", "swav", "--data", str(data), "--out", str(out), "--local_crop_size=8",
              "--n_prototypes=12", "--queue_length=32", "--queue_start_epoch=0",
              "--freeze_prototypes_iters=0", *ARGS]
    torchrun(1, 2, *common, "--epochs", "2")
    state = torch.load(out / "checkpoints/last.pt", weights_only=False)
    assert state["model"]["queue"].shape == (2, 32, 16)  # global, whatever the world size
    assert state["model"]["queue"].abs().sum(-1).gt(0).all()  # 10 steps x 16 rows: full

    ev = run_cli("eval", "knn", "--checkpoint", str(out / "checkpoints/last.pt"), "--data",
                 str(data), "--workers", "0")
    assert ev.returncode == 0, ev.stderr
    assert ev.stdout.strip().startswith("knn_top1=")

    resumed = run_cli("train", *common, "--epochs", "3", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr
    steps = [s for s, _ in _losses(out / "metrics.jsonl")]
    assert steps == list(range(1, 16))  # 10 steps under DDP, 5 more in one process

"""End-to-end runs of the training loop through the CLI (tiny data, CPU)."""

import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from fastssl.config import Config
from fastssl.metrics import read
from fastssl.train import cpu_threads
from tests.helpers import TINY, cli_env, run_cli, tiny_shapes


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_shapes(tmp_path_factory.mktemp("data"), per_class=8)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    proc = run_cli("train", "--method", "simclr", "--data", str(data), "--epochs", "2",
                   "--out", str(out), "--log_every=2", "--eval_every=1", *TINY,
                   "--progress=true")
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_run_writes_the_documented_files(trained):
    out, proc = trained
    assert proc.stdout.strip().splitlines()[-1].startswith("knn_top1=")
    assert "random_init_knn_top1=" in proc.stdout
    for name in ("metrics.jsonl", "config.yaml", "curves.png", "checkpoints/last.pt"):
        assert (out / name).is_file(), name
    records = read(out / "metrics.jsonl")
    steps = [r for r in records if "loss" in r]
    assert steps and all({"step", "epoch", "loss", "lr", "images_per_s"} <= r.keys()
                         for r in steps)
    evals = [r for r in records if "knn_top1" in r]
    assert len(evals) == 2 and all(0 <= r["knn_top1"] <= 100 for r in evals)
    state = torch.load(out / "checkpoints/last.pt", weights_only=False)
    assert not any(k.startswith(("_orig_mod.", "module.")) for k in state["model"])
    assert state["step"] == 10 and state["config"]["epochs"] == 2


def test_progress_is_one_plain_line_per_log_interval_when_not_a_terminal(trained):
    _, proc = trained  # stderr is a pipe here, as when redirected to a file
    assert "\r" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("step ")]
    assert [ln.split()[1] for ln in lines] == [f"{s}/10" for s in (2, 4, 6, 8, 10)]
    assert all(" loss " in ln and " img/s " in ln and " eta " in ln for ln in lines)


@pytest.mark.parametrize("protocol", ["knn", "linear", "rank"])
def test_eval_cli_on_checkpoint(trained, data, protocol):
    out, _ = trained
    proc = run_cli("eval", protocol, "--checkpoint", str(out / "checkpoints/last.pt"),
                   "--data", str(data), "--workers", "0")
    assert proc.returncode == 0, proc.stderr
    name, value = proc.stdout.strip().split("=")
    score = float(value)
    if protocol == "knn":  # the same encoder, data and protocol as the run's final evaluation
        final = [r["knn_top1"] for r in read(out / "metrics.jsonl") if "knn_top1" in r][-1]
        assert score == pytest.approx(final, abs=1e-6)
    elif protocol == "rank":
        assert name == "effective_rank" and 1 <= score <= 256  # small_cnn: 256 features
    else:
        assert 0 <= score <= 100


def _losses(path):
    return [(r["step"], r["loss"]) for r in read(path) if "loss" in r]


def test_killed_run_resumes_with_the_same_losses(data, tmp_path):
    args = ["train", "--data", str(data), "--epochs", "4", "--log_every=1",
            "--eval_every=-1", "--deterministic=true", *TINY]
    ref = run_cli(*args, "--out", str(tmp_path / "ref"))
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "fastssl.cli", *args, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env())  # same thread count as run_cli: same reductions
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 7:
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.01)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err
    saved = torch.load(out / "checkpoints/last.pt", weights_only=False)["step"]
    assert 7 <= saved < 20
    resumed = run_cli(*args, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    losses = _losses(out / "metrics.jsonl")
    assert [s for s, _ in losses] == list(range(1, 21))
    assert losses == _losses(tmp_path / "ref" / "metrics.jsonl")  # bit-identical


def test_non_finite_loss_stops_the_run(data, tmp_path):
    proc = run_cli("train", "--data", str(data), "--epochs", "2", "--out", str(tmp_path),
                   "--lr=1e30", "--log_every=1", "--eval_every=-1", *TINY)
    assert proc.returncode == 3
    last = proc.stderr.strip().splitlines()[-1]
    assert "loss is not finite at step" in last and "Last good checkpoint" in last


@pytest.mark.parametrize("args, message", [
    (["--data", "/no/such/dir"], "dataset directory not found: /no/such/dir"),
    (["--epochs", "zero"], "'epochs': expected an integer"),
    (["--bogus=1"], "unknown option --bogus"),
    (["--epoch", "3"], "did you mean --epochs?"),
])
def test_cli_errors_are_one_line(tmp_path, args, message):
    proc = run_cli("train", "--out", str(tmp_path), *args)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"fastssl: error: {message}"] or \
        message in proc.stderr.strip().splitlines()[-1]


def test_config_is_saved_resolved(trained):
    import yaml

    out, _ = trained
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["method"] == "simclr" and saved["temperature"] == 0.5
    assert json.dumps(saved)  # plain types only


def test_cpu_threads_leave_the_loaders_cores_to_the_loader(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)))
    assert cpu_threads(Config(workers=2), "memory", world=1) == 8  # augments in the step
    assert cpu_threads(Config(workers=2), "video", world=1) == 6
    assert cpu_threads(Config(workers=3), "dali", world=2) == 1
    assert cpu_threads(Config(workers=8), "torch", world=1) == 1  # never below one
    assert cpu_threads(Config(workers=2, threads=5), "torch", world=1) == 5

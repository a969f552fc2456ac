"""``fastssl profile``: verdicts on artificially slowed loaders / steps, the JSON schema, the CLI.

Runs on a tiny generated data set with ``--workers 0`` (no worker start-up) and a small time
budget; the whole file takes well under a minute on two cores.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import torch

from fastssl import cli
from fastssl.data.synth import synth_shapes
from fastssl.methods import METHODS, resolve_config
from fastssl.profile import Options, parse, profile
from fastssl.profiling import measure, report, schema
from fastssl.train import setup

DOC = Path(__file__).resolve().parent.parent / "docs" / "profile.md"
METHOD_NAMES = [m for m in ("simclr", "swav") if m in METHODS]
SMALL = {"batch_size": "8", "workers": "0", "crop_size": "16", "local_crop_size": "8",
         "device": "cpu", "compile": "off"}
FAST = Options(repeats=2, warmup=1, steps=3, budget=6.0)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return synth_shapes(tmp_path_factory.mktemp("data") / "shapes", train_per_class=8,
                        val_per_class=2, size=32)


def make_run(data: Path, method: str = "simclr", **overrides):
    return setup(resolve_config(None, {**SMALL, "method": method, "data": str(data),
                                       **overrides}), loader_stats=True)


class SlowLoader:
    """The run's loader with a sleep before every batch (a starved input pipeline)."""

    def __init__(self, inner, delay: float) -> None:
        self.inner, self.delay = inner, delay
        self.spec, self.corrupt_count, self.pipelines = inner.spec, 0, []

    def __len__(self) -> int:
        return len(self.inner)

    def epoch(self, epoch: int, start_batch: int = 0):
        for item in self.inner.epoch(epoch, start_batch):
            time.sleep(self.delay)
            yield item


def slow_forward(forward, delay: float):
    def run(batch):
        time.sleep(delay)
        return forward(batch)
    return run


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_slow_loader_is_input_bound(data, method):
    run = make_run(data, method, loader="torch")  # slowed: a starved torchvision loader
    run.loader = SlowLoader(run.loader, 0.25)
    r = profile(run, FAST)
    assert r["verdict"]["bound"] == "input", r["verdict"]["text"]
    assert r["verdict"]["text"].startswith("input-bound: the loader supplies")
    assert r["end_to_end"]["wait_fraction"]["median"] > 0.5
    assert r["verdict"]["loader_images_per_s"] < r["verdict"]["step_images_per_s"]
    assert any("--workers" in s for s in r["suggestions"])  # workers 0 < cores
    assert report.validate(json.loads(json.dumps(r))) == []
    # the slowed loader may be the limit: the other loaders were measured on the same views,
    # and the fastest is named first, with its img/s
    others = {x["name"]: x["end_to_end_images_per_s"] for x in r["loaders"]}
    assert "memory" in others and r["loaders"] is not None
    best = max(others, key=others.get)
    assert r["suggestions"][0].startswith(f"use --loader {best}: {others[best]:,.0f} img/s")


def test_slow_step_is_compute_bound(data):
    run = make_run(data)
    run.forward = slow_forward(run.forward, 0.6)
    r = profile(run, FAST)
    assert r["verdict"]["bound"] == "compute", r["verdict"]["text"]
    assert r["verdict"]["text"].startswith("compute-bound: ")
    assert r["end_to_end"]["wait_fraction"]["median"] < 0.2
    # step alone is timed on synthetic batches of the loader's shapes
    assert r["loader"]["shapes"] == [[8, 3, 16, 16]] * len(r["loader"]["shapes"])
    assert 8 / 0.6 * 0.5 < r["verdict"]["step_images_per_s"] < 8 / 0.6
    assert report.validate(json.loads(json.dumps(r))) == []


def test_compile_both_measures_two_variants(data, monkeypatch):
    """The --compile both plumbing, with torch.compile replaced by a slower wrapper (a real
    CPU compilation takes a minute)."""
    monkeypatch.setattr(torch, "compile", lambda m: slow_forward(m, 0.3))
    opts, cfg = parse(["--data", str(data), "--batch_size", "8", "--workers", "0",
                       "--crop_size", "16", "--compile", "both", "--repeats", "1", "--steps",
                       "2", "--warmup", "1", "--budget", "4"])
    assert opts.compile == "both" and cfg.compile == "off"
    r = profile(setup(cfg), opts)
    variants = r["step"]["variants"]
    assert [v["compiled"] for v in variants] == [False, True]
    assert r["step"]["used"] == 0  # the eager step was faster, so it ran end to end
    assert report.validate(json.loads(json.dumps(r))) == []


def test_validator_rejects_bad_documents():
    good = {"median": 1.0, "min": 0.5, "max": 2, "values": [1.0]}
    assert report.validate(good, schema.STAT) == []
    assert report.validate({**good, "median": "1"}, schema.STAT)
    assert report.validate({**good, "median": float("nan")}, schema.STAT)
    assert report.validate({"median": 1.0}, schema.STAT)  # missing keys
    assert report.validate({**good, "extra": 1}, schema.STAT)
    assert report.validate({**good, "values": []}, schema.STAT)
    assert report.validate({"bound": "gpu"}, report.SCHEMA["properties"]["verdict"])


def test_verdict_rules():
    assert report.verdict(100, 1000, 95, 0.85)["bound"] == "input"
    assert report.verdict(1000, 100, 98, 0.01)["bound"] == "compute"
    assert report.verdict(1000, 900, 800, 0.05)["bound"] == "balanced"
    v = report.verdict(410, 1250, 405, 0.67)
    assert "the loader supplies 410 img/s, the step consumes 1,250 img/s; the step waits for " \
           "input 67% of the time" in v["text"]


def test_worker_counts():
    assert measure.worker_counts(1) == [1]
    assert measure.worker_counts(2) == [1, 2]
    assert measure.worker_counts(6) == [1, 2, 4, 6]
    assert measure.worker_counts(8) == [1, 2, 4, 8]


def test_schema_documented():
    """docs/profile.md shows exactly the schema the code validates against."""
    text = DOC.read_text()
    block = re.search(r"<!-- schema -->\n```json\n(.*?)\n```", text, re.S)
    assert block, "docs/profile.md lacks the schema block"
    assert json.loads(block.group(1)) == report.SCHEMA


def _loaders() -> list[str]:
    try:
        import fastssl.pipelines.dali  # noqa: F401
    except ImportError:
        return ["torch"]
    return ["torch", "dali"]


@pytest.mark.parametrize("loader", _loaders())
def test_cli_json_plot_trace_sweep(data, tmp_path, capsys, loader):
    out = tmp_path / "p.json"
    rc = cli.main(["profile", "--data", str(data), "--loader", loader, "--batch_size", "8",
                   "--workers", "1", "--crop_size", "16", "--repeats", "2", "--steps", "3",
                   "--warmup", "1", "--budget", "4", "--sweep", "--json", str(out), "--plot",
                   str(tmp_path / "p.png"), "--trace", str(tmp_path / "trace")])
    assert rc == 0
    printed = capsys.readouterr().out
    assert re.search(r"^(input|compute)-bound: |^balanced: ", printed, re.M), printed
    r = json.loads(out.read_text())
    assert report.validate(r) == []
    assert r["loader"]["name"] == loader and r["loader"]["workers"] == 1
    assert [p["workers"] for p in r["sweep"]] == measure.worker_counts(
        r["host"]["cpu_cores_available"])
    assert (tmp_path / "p.png").stat().st_size > 1000
    trace = json.loads(Path(r["trace"]).read_text())
    names = {e.get("name") for e in trace["traceEvents"]}
    assert {"loader.next", "train_step"} <= names


@pytest.mark.skipif("dali" not in _loaders(), reason="nvidia.dali is not installed")
def test_swav_dali_profile_reports_executor_statistics(data, tmp_path, capsys):
    out = tmp_path / "p.json"
    rc = cli.main(["profile", "--method", "swav", "--loader", "dali", "--data", str(data),
                   "--batch_size", "8", "--workers", "1", "--crop_size", "16",
                   "--local_crop_size", "8", "--n_prototypes", "12", "--proj_hidden_dim", "32",
                   "--proj_dim", "16", "--repeats", "1", "--steps", "2", "--warmup", "1",
                   "--budget", "4", "--json", str(out)])
    assert rc == 0
    stats = json.loads(out.read_text())["loader"]["dali_executor_statistics"]
    assert stats, "no DALI executor statistics"
    # per-operator memory figures of the views' graph (decoder, crops, ...)
    assert any("real_memory_size" in v for v in stats.values()), stats


def test_cli_rejects_bad_option(capsys):
    assert cli.main(["profile", "--repeats", "x"]) == 2
    assert "--repeats" in capsys.readouterr().err


def test_results_file_keeps_its_notes(tmp_path):
    from fastssl.profiling.host import write_results

    path = tmp_path / "r.md"
    write_results(path, "# Table\n\n| a |\n")
    assert path.read_text() == "# Table\n\n| a |\n"
    path.write_text(path.read_text() + "\n## Notes\n\nhand-written\n")
    write_results(path, "# Table\n\n| b |\n")
    assert path.read_text() == "# Table\n\n| b |\n\n## Notes\n\nhand-written\n"

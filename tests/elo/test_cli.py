"""`fastssl elo search` end to end on the tiny AV set (tiny proxies), its resume, then the final
run `fastssl train --method elo --elo_weights best.json`, evaluated like every method. In
process (``fastssl.cli.main``): the imports are paid once."""

from __future__ import annotations

import json
import os

import pytest

from fastssl.cli import main
from fastssl.elo.commands import build_spec

PROXY = ["--batch_size", "4", "--crop_size", "16", "--workers", "0", "--knn_k", "3"]


def test_search_writes_table_plot_and_best_then_the_final_run_uses_them(tiny_av, tmp_path,
                                                                        capsys):
    out = tmp_path / "search"
    search = ["elo", "search", "--data", str(tiny_av), "--budget", "2", "--popsize", "4",
              "--methods", "cmaes,grid", "--k", "4", "--out", str(out), *PROXY]
    assert main(search) == 0
    captured = capsys.readouterr()
    assert "[cmaes] generation 1/1" in captured.err and "[grid] generation 1/1" in captured.err
    assert captured.out.startswith("best: ")
    rows = (out / "table.md").read_text().splitlines()
    assert len(rows) == 2 + 4 and rows[0].startswith("| method | gen | cand | fitness | knn |")
    assert (out / "fitness.png").stat().st_size > 0
    best = json.loads((out / "best.json").read_text())
    assert best["knn"] is not None and 0 <= min(best["weights"].values())

    checkpoints = sorted(out.glob("*/g*/run/checkpoints/last.pt"))
    stamps = [p.stat().st_mtime_ns for p in checkpoints]
    assert len(checkpoints) == 4 and main(search) == 0
    assert "2 of 2 candidates already done" in capsys.readouterr().err
    assert [p.stat().st_mtime_ns for p in checkpoints] == stamps  # nothing retrained

    run = tmp_path / "final"
    assert main(["train", "--method", "elo", "--elo_weights", str(out / "best.json"),
                 "--data", str(tiny_av), "--epochs", "1", "--out", str(run),
                 "--progress", "false", "--clip_frames", "4", *PROXY]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("knn_top1=")
    record = next(json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()
                  if "loss" in json.loads(ln))
    assert {f"loss_{t}" for t, w in best["weights"].items() if w > 0} <= set(record)


def test_elo_search_help_and_bad_options(capsys):
    assert main(["elo", "search", "--help"]) == 0
    assert "--budget" in capsys.readouterr().out
    assert main(["elo", "search", "--data", "x", "--budget", "2", "--methods", "annealing"]) == 2
    assert "unknown search method" in capsys.readouterr().err
    assert main(["elo", "search", "--data", "x", "--budget", "2", "--popsize", "2"]) == 2
    assert "--popsize must be >= 4 for cmaes" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: --budget is required
        main(["elo", "search", "--data", "x"])


def test_under_torchrun_each_rank_is_a_shard_and_proxies_are_single_process(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    spec = build_spec(["--data", "x", "--budget", "8"])
    assert spec.shard == (2, 4) and spec.parallel == 1
    assert "WORLD_SIZE" not in os.environ  # fastssl train would start DDP over the ranks
    assert build_spec(["--data", "x", "--budget", "8", "--shard", "1/3"]).shard == (1, 3)

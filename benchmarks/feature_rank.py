"""Feature diagnostics of finished training runs: kNN and linear-probe top-1 on the held-out split
and the effective rank (RankMe) of the backbone's features on the training split, mean over
seeds. A method whose rank falls when an augmentation is added is collapsing onto fewer
dimensions, which kNN alone cannot tell apart from learning less.

    python benchmarks/feature_rank.py RUN_DIR [RUN_DIR ...] --results FILE

Each RUN_DIR is a ``fastssl train --out`` folder (``config.yaml``, ``checkpoints/last.pt``), for
example the run folders ``benchmarks/background.py`` leaves under its ``--out``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fastssl.eval.run import PROTOCOLS, checkpoint_scores  # noqa: E402
from fastssl.methods import resolve_config  # noqa: E402
from fastssl.pipelines.background import bg_probability  # noqa: E402
from fastssl.profiling.host import machine_line, write_results  # noqa: E402

COLUMNS = ("data", "method", "bg_mode", "bg_p", "loader", "epochs", "batch_size")


def describe(run: Path) -> tuple[tuple, int]:
    """The run's table key (``COLUMNS``) and its seed, from its ``config.yaml``."""
    config = run / "config.yaml"
    if not config.is_file():
        raise SystemExit(f"{run}: no config.yaml (not a `fastssl train --out` folder)")
    cfg = resolve_config(None, yaml.safe_load(config.read_text()))
    values = {**vars(cfg), "data": Path(cfg.data).name, "bg_p": bg_probability(cfg)}
    return tuple(values[c] for c in COLUMNS), cfg.seed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--results", required=True, type=Path)
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args()
    groups: dict[tuple, list[tuple[int, dict[str, float]]]] = {}
    for run in a.runs:
        key, seed = describe(run)
        scores = checkpoint_scores(str(run / "checkpoints" / "last.pt"), list(PROTOCOLS),
                                   device="cpu", workers=a.workers)
        print(run.name, seed, {k: round(v, 2) for k, v in scores.items()}, flush=True)
        groups.setdefault(key, []).append((seed, scores))
    lines = ["# Feature rank of trained encoders (cpu)", "",
             f"Machine: {machine_line('cpu')}; torch {torch.__version__}.", "",
             "kNN and linear-probe top-1 (%) on the held-out split; effective rank (RankMe, of "
             "the backbone's features on the training split). Mean over seeds, then each seed's.",
             "", f"| {' | '.join(COLUMNS)} | seeds | {' | '.join(PROTOCOLS)} |",
             "|---" * (len(COLUMNS) + 1 + len(PROTOCOLS)) + "|"]
    for key, runs in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        runs.sort(key=lambda r: r[0])
        cells = [f"{statistics.mean(s[m] for _, s in runs):.1f} "
                 f"({' / '.join(f'{s[m]:.1f}' for _, s in runs)})" for m in PROTOCOLS]
        seeds = ",".join(str(seed) for seed, _ in runs)
        lines.append(f"| {' | '.join(map(str, key))} | {seeds} | {' | '.join(cells)} |")
    text = "\n".join(lines) + "\n"
    print(text)
    write_results(a.results, text)  # a "## Notes" section of the old file is kept


if __name__ == "__main__":
    main()

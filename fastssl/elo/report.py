"""What a search leaves behind: the table of candidates, the plot of the best fitness per
generation for each search method, and ``best.json`` (the ``--elo_weights`` of the final run)."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

Result = dict[str, Any]  # one candidate: weights, fitness, knn (or None), seconds, ...


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, then rename: never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def short(term: str) -> str:
    """A column name: ``contrast:audio`` -> ``contrast:a``, ``distill:flow@3`` ->
    ``distill:f@3``."""
    kind, rest = term.split(":")
    return f"{kind}:{rest[0]}{rest[rest.index('@'):] if '@' in rest else ''}"


def table(results: Sequence[Result], terms: Sequence[str]) -> str:
    """Markdown: one row per candidate (search method, generation, candidate, fitness, kNN, then
    the weights), in the order they were run."""
    head = ["method", "gen", "cand", "fitness", "knn", *map(short, terms)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        knn = r.get("knn")
        cells = [r["method"], str(r["generation"]), str(r["candidate"]), f"{r['fitness']:.4f}",
                 "-" if knn is None else f"{knn:.2f}",
                 *(f"{r['weights'][t]:.2f}" for t in terms)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def best_per_generation(results: Sequence[Result], method: str) -> list[float]:
    """The best (lowest) fitness found by ``method`` up to and including each generation."""
    out: list[float] = []
    for r in results:
        if r["method"] != method:
            continue
        while len(out) <= r["generation"]:
            out.append(out[-1] if out else math.inf)
        out[r["generation"]] = min(out[r["generation"]], r["fitness"])
    return [min(out[:i + 1]) for i in range(len(out))]


def plot(results: Sequence[Result], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for method in dict.fromkeys(r["method"] for r in results):
        best = best_per_generation(results, method)
        ax.plot(range(1, len(best) + 1), best, marker="o", label=method)
    ax.set(xlabel="generation", ylabel="best fitness so far (KL, lower is better)",
           title="ELo search")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(out: Path, results: Sequence[Result], terms: Sequence[str]) -> dict[str, Any]:
    """``table.md``, ``fitness.png`` and ``best.json``; returns the best candidate."""
    write_atomic(out / "table.md", table(results, terms).encode())
    plot(results, out / "fitness.png")
    best = min(results, key=lambda r: r["fitness"])
    write_atomic(out / "best.json", json.dumps(best, indent=1).encode())
    return best

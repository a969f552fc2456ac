"""The search over ELo's loss weights: CMA-ES (the ``cmaes`` package), random and grid search.

Every candidate is a weight vector in [0, 1]^d over ``SearchSpec.terms``, trained by a short
proxy run (``fastssl.train.train`` with ``--method elo``) and scored by the Zipf-KL fitness of
its RGB embeddings of the unlabelled train clips (``fastssl.elo.fitness``), plus kNN top-1 when
the data has labels (reported, never used by the search).

On disk (``OUT``), so a killed search resumes from its last finished generation and never
re-runs a finished candidate:

- ``search.json``: the spec (a resume with different terms, methods or population is refused);
- ``<method>/gen_NNN.pkl``: a generation's candidates and, for CMA-ES, the optimiser right after
  asking them (written before any of them runs);
- ``<method>/gNNN_cMM/result.json``: one finished candidate (its proxy run beside it);
- ``table.md``, ``fitness.png``, ``best.json`` (the lowest fitness: ``--elo_weights`` input).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from cmaes import CMA

from fastssl.elo.fitness import DEFAULT_K, DEFAULT_S
from fastssl.elo.report import Result, write_atomic, write_report

log = logging.getLogger("fastssl.elo")

METHODS = ("cmaes", "random", "grid")
Evaluate = Callable[[dict[str, float], Path], Result]


@dataclass
class SearchSpec:
    out: str
    terms: tuple[str, ...]
    budget: int  # candidates per search method
    methods: tuple[str, ...] = ("cmaes", "random")
    popsize: int = 4
    seed: int = 0
    parallel: int = 1
    data: str = ""
    k: int = DEFAULT_K
    s: float = DEFAULT_S
    train: dict[str, Any] = field(default_factory=dict)  # proxy run options (fastssl train)
    # this process runs candidates i with i % count == index (a job array over machines that
    # share OUT); the others' results are awaited, polling every poll_s seconds
    shard: tuple[int, int] = (0, 1)
    poll_s: float = 10.0

    def identity(self) -> dict[str, Any]:
        """What a resumed search must share with the one on disk."""
        return {"terms": list(self.terms), "methods": list(self.methods),
                "popsize": self.popsize, "seed": self.seed, "budget": self.budget}


def grid_points(d: int, budget: int, seed: int) -> np.ndarray:
    """``budget`` points of the coarsest grid (L >= 2 levels per weight) with at least
    ``budget`` points, in a seeded random order (a budget below L^d covers a random part)."""
    n_levels = 2
    while n_levels ** d < budget:
        n_levels += 1
    levels = np.linspace(0.0, 1.0, n_levels)
    n = len(levels) ** d
    order = np.random.default_rng(seed).permutation(n)[:budget] if n > budget else np.arange(n)
    return np.array([levels[list(np.unravel_index(i, (len(levels),) * d))] for i in order])


class Proposer:
    """Candidates of one search method, a generation at a time."""

    def __init__(self, method: str, spec: SearchSpec) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown search method {method!r} (choose from {METHODS})")
        self.method, self.spec, d = method, spec, len(spec.terms)
        self.cma = CMA(mean=np.full(d, 0.5), sigma=0.3, bounds=np.array([[0.0, 1.0]] * d),
                       seed=spec.seed, population_size=spec.popsize) if method == "cmaes" \
            else None
        self.grid = grid_points(d, spec.budget, spec.seed) if method == "grid" else None

    def ask(self, gen: int, n: int) -> list[np.ndarray]:
        if self.cma is not None:
            # reseeded per generation: a pickled CMA drops its random state, and a resumed
            # search must ask what the uninterrupted one would have
            self.cma.reseed_rng(self.spec.seed * 100_003 + gen)
            return [self.cma.ask() for _ in range(n)]
        if self.grid is not None:
            start = gen * self.spec.popsize
            return list(self.grid[start:start + n])
        rng = np.random.default_rng([self.spec.seed, gen])
        return list(rng.uniform(0.0, 1.0, size=(n, len(self.spec.terms))))

    def tell(self, xs: Sequence[np.ndarray], fitness: Sequence[float]) -> None:
        # CMA-ES learns from full generations only (a last, partial one is just evaluated)
        if self.cma is not None and len(xs) == self.cma.population_size:
            self.cma.tell(list(zip(xs, fitness, strict=True)))


def _wait_for(paths: Sequence[Path], poll_s: float) -> None:
    while not all(p.exists() for p in paths):
        time.sleep(poll_s)


def _generation(out: Path, proposer: Proposer, gen: int, n: int,
                spec: SearchSpec) -> list[np.ndarray]:
    """Generation ``gen``'s candidates: from disk when it was asked before (and the optimiser
    state right after asking), else asked now and written before anything runs (by shard 0;
    the other shards wait for it)."""
    path = out / f"gen_{gen:03d}.pkl"
    if spec.shard[0] != 0:
        _wait_for([path], spec.poll_s)
    if path.exists():
        state = pickle.loads(path.read_bytes())
        proposer.cma = state["cma"]
        return state["xs"]
    xs = proposer.ask(gen, n)
    write_atomic(path, pickle.dumps({"xs": xs, "cma": proposer.cma}))
    return xs


def _result_path(out: Path, gen: int, i: int) -> Path:
    return out / f"g{gen:03d}_c{i:02d}" / "result.json"


def _run_pending(spec: SearchSpec, evaluate: Evaluate, jobs: list[tuple[Path, dict]],
                 pool: ProcessPoolExecutor | None) -> None:
    """Run the candidates ``jobs`` (result path, weights), each writing its ``result.json``."""
    if pool is None:
        for path, weights in jobs:
            _finish(path, weights, evaluate(weights, path.parent))
        return
    futures = [(path, w, pool.submit(evaluate, w, path.parent)) for path, w in jobs]
    for path, weights, fut in futures:
        _finish(path, weights, fut.result())


def _finish(path: Path, weights: dict[str, float], result: Result) -> None:
    result = {"weights": weights, **result}
    write_atomic(path, json.dumps(result, indent=1).encode())
    knn = result.get("knn")
    print(f"  {path.parent.parent.name} {path.parent.name}: fitness {result['fitness']:.4f}"
          + (f" knn {knn:.2f}" if knn is not None else "")
          + f" ({result.get('seconds', 0):.0f} s)", file=sys.stderr, flush=True)


def search_method(spec: SearchSpec, method: str, evaluate: Evaluate,
                  pool: ProcessPoolExecutor | None = None) -> list[Result]:
    """Every candidate of one search method (finished ones read from disk, not re-run)."""
    out = Path(spec.out) / method
    proposer = Proposer(method, spec)
    results: list[Result] = []
    n_gens = -(-spec.budget // spec.popsize)
    for gen in range(n_gens):
        n = min(spec.popsize, spec.budget - gen * spec.popsize)
        xs = _generation(out, proposer, gen, n, spec)
        weights = [dict(zip(spec.terms, map(float, x), strict=True)) for x in xs]
        paths = [_result_path(out, gen, i) for i in range(len(xs))]
        done = sum(p.exists() for p in paths)
        index, count = spec.shard
        pending = [(p, w) for i, (p, w) in enumerate(zip(paths, weights, strict=True))
                   if not p.exists() and i % count == index]
        print(f"[{method}] generation {gen + 1}/{n_gens}: {done} of {len(xs)} "
              "candidates already done", file=sys.stderr, flush=True)
        _run_pending(spec, evaluate, pending, pool)
        _wait_for(paths, spec.poll_s)
        gen_results = [{**json.loads(_result_path(out, gen, i).read_text()), "method": method,
                        "generation": gen, "candidate": i} for i in range(len(xs))]
        proposer.tell(xs, [r["fitness"] for r in gen_results])
        results += gen_results
    return results


def check_spec(spec: SearchSpec) -> None:
    """Write ``search.json``, or refuse to resume a different search in the same folder."""
    path = Path(spec.out) / "search.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old != spec.identity():
            raise ValueError(f"{spec.out} holds another search ({old}); use a new --out")
    else:
        write_atomic(path, json.dumps(spec.identity(), indent=1).encode())


def _init_worker(slots: Any, parallel: int) -> None:
    """A pool worker: its own GPU when there are GPUs, else its share of the CPU threads."""
    import torch

    with slots.get_lock():
        slot = slots.value
        slots.value += 1
    if torch.cuda.is_available():
        torch.cuda.set_device(slot % torch.cuda.device_count())
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // parallel))


def run_search(spec: SearchSpec, evaluate: Evaluate) -> list[Result]:
    """Every search method of ``spec`` in turn; writes the table, plot and best.json."""
    check_spec(spec)
    t0 = time.time()
    pool = None
    if spec.parallel > 1:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        pool = ProcessPoolExecutor(spec.parallel, mp_context=ctx, initializer=_init_worker,
                                   initargs=(ctx.Value("i", 0), spec.parallel))
    try:
        results = [r for m in spec.methods for r in search_method(spec, m, evaluate, pool)]
    finally:
        if pool is not None:
            pool.shutdown()
    write_report(Path(spec.out), results, spec.terms)
    log.info("search finished in %.0f s", time.time() - t0)
    return results

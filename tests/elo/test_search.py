"""The search: proposals in [0, 1], CMA-ES progress on a toy fitness, and resume after a crash
in the middle of a generation (finished candidates are not re-run)."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from fastssl.elo.report import best_per_generation, table
from fastssl.elo.search import Proposer, SearchSpec, grid_points, run_search

TERMS = ("order:rgb", "contrast:audio", "distill:flow@3")
TARGET = np.array([0.2, 0.9, 0.6])


class Toy:
    """A fitness with a known optimum; raises on call number ``crash_at`` (a killed run)."""

    def __init__(self, crash_at: int | None = None) -> None:
        self.calls: list[dict] = []
        self.crash_at = crash_at

    def __call__(self, weights: dict, folder) -> dict:
        if self.crash_at is not None and len(self.calls) + 1 == self.crash_at:
            raise KeyboardInterrupt("killed")
        self.calls.append(weights)
        x = np.array([weights[t] for t in TERMS])
        return {"fitness": float(((x - TARGET) ** 2).sum()), "knn": None, "seconds": 0.0}


def spec(tmp_path, **kw) -> SearchSpec:
    return SearchSpec(str(tmp_path / "search"), TERMS, **{"budget": 12, "popsize": 4, **kw})


@pytest.mark.parametrize("method", ["cmaes", "random", "grid"])
def test_every_candidate_is_in_the_unit_cube(tmp_path, method):
    p = Proposer(method, spec(tmp_path))
    xs = [x for g in range(3) for x in p.ask(g, 4)]
    assert len(xs) == 12 and all(((x >= 0) & (x <= 1)).all() for x in xs)


def test_grid_points_use_the_levels_and_do_not_repeat():
    pts = grid_points(3, 8, seed=0)
    assert pts.shape == (8, 3) and set(np.unique(pts)) == {0.0, 1.0}
    assert set(np.unique(grid_points(3, 12, seed=0))) == {0.0, 0.5, 1.0}
    assert len({tuple(p) for p in pts}) == 8


def test_cmaes_beats_its_first_generation_on_a_toy_fitness(tmp_path):
    results = run_search(spec(tmp_path, budget=40, methods=("cmaes",)), Toy())
    best = best_per_generation(results, "cmaes")
    assert len(best) == 10 and best[-1] < 0.5 * best[0]
    first, last = (np.mean([r["fitness"] for r in results if r["generation"] == g])
                   for g in (0, 9))
    assert last < 0.3 * first  # the search distribution moved towards the optimum
    out = tmp_path / "search"
    assert (out / "fitness.png").stat().st_size > 0
    assert json.loads((out / "best.json").read_text())["fitness"] == best[-1]
    assert table(results, TERMS).count("\n") == 42  # header, rule, 40 rows


@pytest.mark.parametrize("method", ["cmaes", "random"])
def test_resume_after_a_crash_mid_generation_reruns_only_unfinished_candidates(tmp_path,
                                                                               method):
    s = spec(tmp_path, methods=(method,))
    reference = run_search(spec(tmp_path / "ref", methods=(method,)), Toy())

    crashed = Toy(crash_at=7)  # generation 2 of 3, after its second candidate
    with pytest.raises(KeyboardInterrupt):
        run_search(s, crashed)
    assert len(crashed.calls) == 6
    resumed = Toy()
    results = run_search(s, resumed)
    assert len(resumed.calls) == 12 - 6
    assert resumed.calls[0] not in crashed.calls  # the 6 finished ones were read from disk
    # the resumed search is the uninterrupted one: same candidates, same fitness
    # (up to the rounding of the covariance that cmaes stores compressed in its pickle)
    def vectors(rs):
        return np.array([[r["weights"][t] for t in TERMS] for r in rs])

    np.testing.assert_allclose(vectors(results), vectors(reference), rtol=1e-9, atol=1e-12)


def test_a_different_search_in_the_same_folder_is_refused(tmp_path):
    run_search(spec(tmp_path, budget=4, methods=("random",)), Toy())
    with pytest.raises(ValueError, match="another search"):
        run_search(spec(tmp_path, budget=4, methods=("random",), popsize=2), Toy())


def test_two_shards_share_the_candidates_of_one_search(tmp_path):
    """A job array: two processes on one folder; each candidate runs exactly once."""
    toys = [Toy(), Toy()]
    results: list = [None, None]

    def shard(i: int) -> None:
        results[i] = run_search(spec(tmp_path, methods=("cmaes",), shard=(i, 2), poll_s=0.01),
                                toys[i])

    threads = [threading.Thread(target=shard, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(toys[0].calls) == len(toys[1].calls) == 6
    assert not any(c in toys[1].calls for c in toys[0].calls)
    assert [r["fitness"] for r in results[0]] == [r["fitness"] for r in results[1]]

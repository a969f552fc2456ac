"""``fastssl elo search``: the loss-weight search of ELo (``fastssl.elo.search``) with proxy runs
(``fastssl.elo.proxy``). Options other than the search's own are ``fastssl train`` options of
the proxy runs (``--epochs 2 --crop_size 32 ...``)."""

from __future__ import annotations

import argparse
import os
import sys
from functools import partial
from pathlib import Path

from fastssl.config import parse_overrides
from fastssl.elo.fitness import DEFAULT_K, DEFAULT_S
from fastssl.elo.proxy import evaluate_candidate, proxy_config, scoring_clips
from fastssl.elo.search import METHODS, SearchSpec, run_search
from fastssl.methods.elo import DEFAULT_TERMS, distill_terms, load_weights, parse_layers

USAGE = "usage: fastssl elo search --data DIR --budget N [options] [proxy train options]"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastssl elo search", usage=USAGE, description=__doc__)
    p.add_argument("--data", required=True, help="video set (fastssl data synth av OUT)")
    p.add_argument("--budget", type=int, required=True, help="candidates per search method")
    p.add_argument("--out", default="runs/elo-search", help="search folder (resumed if present)")
    p.add_argument("--methods", default="cmaes,random",
                   help=f"comma-separated search methods ({', '.join(METHODS)})")
    p.add_argument("--popsize", type=int, default=4, help="candidates per generation")
    p.add_argument("--terms", default="",
                   help="weights searched (default: the default terms and distillation at "
                        "--distill_layers); names as in fastssl train --method elo --help")
    p.add_argument("--distill_layers", default="3", help="RGB blocks distilled (1-based)")
    p.add_argument("--parallel", type=int, default=0,
                   help="candidates at once (default: one per GPU, else 1)")
    p.add_argument("--shard", default="",
                   help="I/N: run candidates i with i %% N == I (a job array sharing --out; "
                        "shard 0 proposes, the others wait for it); under torchrun: RANK/"
                        "WORLD_SIZE, one candidate per process and GPU")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--k", type=int, default=DEFAULT_K, help="k-means clusters of the fitness")
    p.add_argument("--s", type=float, default=DEFAULT_S, help="Zipf exponent of the prior")
    return p


def build_spec(argv: list[str]) -> SearchSpec:
    a, rest = parser().parse_known_args(argv)
    train_opts = parse_overrides(rest)
    layers = parse_layers(a.distill_layers)
    terms = tuple(t for t in a.terms.split(",") if t) or (*DEFAULT_TERMS, *distill_terms(layers))
    load_weights(",".join(f"{t}=0" for t in terms), layers)  # unknown names fail here
    methods = tuple(m for m in a.methods.split(",") if m)
    if unknown := set(methods) - set(METHODS):
        raise ValueError(f"unknown search method(s) {sorted(unknown)} (choose from {METHODS})")
    if a.budget < 1 or a.popsize < 2:
        raise ValueError("--budget must be >= 1 and --popsize >= 2")
    if "cmaes" in methods and a.popsize < 4:  # smaller ones divide by zero in cmaes' weights
        raise ValueError("--popsize must be >= 4 for cmaes")
    import torch

    # under torchrun every rank is a shard with its own GPU (LOCAL_RANK); WORLD_SIZE is removed
    # so that each proxy is a single-process run, not one DDP run over the ranks
    world = int(os.environ.pop("WORLD_SIZE", "1"))
    shard = a.shard or f"{os.environ.get('RANK', '0')}/{world}"
    parallel = a.parallel or (1 if world > 1 else max(1, torch.cuda.device_count()))
    index, _, count = shard.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise ValueError(f"--shard: expected I/N with 0 <= I < N, got {shard!r}")
    return SearchSpec(a.out, terms, a.budget, methods, a.popsize, a.seed, parallel, a.data,
                      a.k, a.s, {**train_opts, "distill_layers": a.distill_layers},
                      (int(index), int(count)))


def search(argv: list[str]) -> int:
    spec = build_spec(argv)
    zero = {t: 0.0 for t in spec.terms}
    scoring_clips(spec, proxy_config(spec, zero, Path(spec.out) / "probe"))  # decoded once
    results = run_search(spec, partial(evaluate_candidate, spec))
    best = min(results, key=lambda r: r["fitness"])
    knn = "" if best["knn"] is None else f" knn_top1={best['knn']:.2f}"
    print(f"best: {best['method']} generation {best['generation']} candidate "
          f"{best['candidate']} fitness={best['fitness']:.4f}{knn}")
    print(f"wrote {spec.out}/table.md, {spec.out}/fitness.png, {spec.out}/best.json "
          f"(fastssl train --method elo --elo_weights {spec.out}/best.json)")
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] != "search":
        print(USAGE, file=sys.stderr)
        return 2
    if "-h" in argv or "--help" in argv:
        parser().print_help()
        return 0
    return search(argv[1:])

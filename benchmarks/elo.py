"""ELo on the embedded audio-visual set, on the CPU: a small-scale check of the paper's claims.

1. Does the unsupervised Zipf-KL fitness rank candidates as kNN does? Spearman correlation of
   fitness and kNN top-1 over every candidate of the searches below (lower fitness is better, so
   the claim holds when the correlation is negative).
2. CMA-ES against random search at the same number of candidates, over several seeds: the best
   fitness found and the kNN of that candidate.
3. The final RGB network trained longer with the best weights (distillation included) against
   RGB-only contrastive training (``contrast:rgb`` alone) and the random-init encoder (kNN),
   over the same seeds.

    python benchmarks/elo.py --data /tmp/av-full2 [--seeds 0,1,2] [--budget 12] [--popsize 4]
        [--final_epochs 15] [--out runs/elo-bench] [--results benchmarks/results/elo-cpu.md]
        [--KEY=VALUE proxy options]

Searches already on disk under ``--out`` are resumed (finished candidates are not re-run).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from functools import partial
from pathlib import Path

import torch
from scipy.stats import spearmanr

from fastssl.config import parse_overrides
from fastssl.elo.fitness import zipf_fitness
from fastssl.elo.proxy import embed, evaluate_candidate, proxy_config, scoring_clips
from fastssl.elo.search import SearchSpec, run_search
from fastssl.eval.knn import knn_top1
from fastssl.methods import MethodContext, build_method, load_method, resolve_config
from fastssl.methods.elo import DEFAULT_TERMS, distill_terms
from fastssl.profiling.host import machine_line
from fastssl.train import train

TERMS = (*DEFAULT_TERMS, *distill_terms((3,)))
RGB_ONLY = {"contrast:rgb": 1.0}


def knn_of(model, clips: dict, k: int) -> float:
    feats = embed(model, clips["train"], torch.device("cpu"))
    return knn_top1(feats, clips["train_labels"], embed(model, clips["val"], torch.device("cpu")),
                    clips["val_labels"], k=k)


def final_run(data: str, weights: dict[str, float], out: Path, seed: int, epochs: int,
              clips: dict, extra: dict) -> tuple[float, float]:
    """(kNN, seconds) of a longer elo run with ``weights`` (scored on the cached clips)."""
    spec = SearchSpec(str(out), tuple(weights), 1, seed=seed, data=data, train=extra)
    cfg = proxy_config(spec, weights, out)
    cfg.epochs = epochs
    t0 = time.time()
    if not (out / "checkpoints" / "last.pt").exists():
        train(cfg)
    model, _ = load_method(out / "checkpoints" / "last.pt")
    return knn_of(model, clips, cfg.knn_k), time.time() - t0


def random_init_knn(data: str, seed: int, clips: dict, extra: dict) -> float:
    cfg = resolve_config(None, {**extra, "method": "elo", "data": data, "seed": seed,
                                "elo_weights": "contrast:rgb=1", "knn_k": 20})
    ctx = MethodContext.from_config(cfg, steps_per_epoch=1,
                                    inputs={"clips", "audio", "flow", "labels"})
    torch.manual_seed(seed)
    return knn_of(build_method(cfg, ctx), clips, cfg.knn_k)


def rescored(results: list[dict], out: Path) -> dict[str, list[float]]:
    """Every candidate's checkpoint re-scored with variants of the fitness (same embeddings)."""
    variants: dict[str, list[float]] = {"k=8 (the classes)": [], "k=32, L2-normalised": [],
                                        "k=32, s=2": [], "mean embedding norm (no fitness)": []}
    for r in results:
        folder = out / f"seed{r['seed']}" / r["method"] / \
            f"g{r['generation']:03d}_c{r['candidate']:02d}"
        model, _ = load_method(folder / "run" / "checkpoints" / "last.pt")
        clips = torch.load(out / f"seed{r['seed']}" / "eval_clips.pt")
        x = embed(model, clips["train"], torch.device("cpu"))
        variants["k=8 (the classes)"].append(zipf_fitness(x, k=8, seed=r["seed"]))
        variants["k=32, L2-normalised"].append(
            zipf_fitness(torch.nn.functional.normalize(x, dim=1), k=32, seed=r["seed"]))
        variants["k=32, s=2"].append(zipf_fitness(x, k=32, s=2.0, seed=r["seed"]))
        variants["mean embedding norm (no fitness)"].append(float(x.norm(dim=1).mean()))
    return variants


def mean_sd(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs) if len(xs) > 1 else 0:.2f}"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--budget", type=int, default=12)
    p.add_argument("--popsize", type=int, default=4)
    p.add_argument("--final_epochs", type=int, default=15)
    p.add_argument("--out", default="runs/elo-bench")
    p.add_argument("--results", default="benchmarks/results/elo-cpu.md")
    a, rest = p.parse_known_args()
    extra = parse_overrides(rest)
    seeds = [int(s) for s in a.seeds.split(",")]
    out = Path(a.out)
    t_start = time.time()
    lines = [f"# ELo on the embedded AV set (CPU)\n\nMachine: {machine_line('cpu')}\n",
             f"Search: terms {', '.join(TERMS)}; budget {a.budget} candidates per method and "
             f"seed, population {a.popsize}; proxy options {extra or 'defaults'} "
             "(fastssl.elo.proxy.PROXY_DEFAULTS).\n"]

    results, searches = [], {}
    cache = None
    for seed in seeds:
        spec = SearchSpec(str(out / f"seed{seed}"), TERMS, a.budget, ("cmaes", "random"),
                          a.popsize, seed, 1, a.data, train=extra)
        clip_file = Path(spec.out) / "eval_clips.pt"
        if cache is not None and not clip_file.exists():
            clip_file.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(cache, clip_file)  # the same scoring clips: decode once
        clips = scoring_clips(spec, proxy_config(spec, dict.fromkeys(TERMS, 0.0), out))
        cache = clip_file
        rs = run_search(spec, partial(evaluate_candidate, spec))
        results += [{**r, "seed": seed} for r in rs]
        searches[seed] = rs

    fit = [r["fitness"] for r in results]
    knn = [r["knn"] for r in results]
    rho, pval = spearmanr(fit, knn)
    lines += ["## 1. Fitness against kNN\n",
              f"Spearman correlation of fitness and kNN top-1 over {len(results)} candidates: "
              f"**{rho:.3f}** (p = {pval:.3g}); the paper's claim needs a negative value "
              "(lower fitness, higher kNN).\n", "| seed | candidates | Spearman | p |",
              "|---|---|---|---|"]
    for seed in seeds:
        rs = [r for r in results if r["seed"] == seed]
        r_s, p_s = spearmanr([r["fitness"] for r in rs], [r["knn"] for r in rs])
        lines.append(f"| {seed} | {len(rs)} | {r_s:.3f} | {p_s:.3g} |")
    lines += ["", "The same candidates re-scored with variants of the fitness (not searched "
              "with; the embeddings of each candidate's proxy checkpoint):\n",
              "| fitness variant | Spearman with kNN | p |", "|---|---|---|"]
    variants = rescored(results, out)
    for name, values in variants.items():
        r_v, p_v = spearmanr(values, knn)
        lines.append(f"| {name} | {r_v:.3f} | {p_v:.3g} |")
    r_n, _ = spearmanr(fit, variants["mean embedding norm (no fitness)"])
    lines.append(f"\nSpearman of the search's fitness with the mean embedding norm: {r_n:.3f}.")
    best_knn = max(knn)
    lowest = min(results, key=lambda r: r["fitness"])
    lines += ["", f"kNN range over the candidates: {min(knn):.2f} .. {best_knn:.2f}; the "
              f"lowest-fitness candidate's kNN: {lowest['knn']:.2f}."
              "\n", "## 2. CMA-ES against random search\n",
              "| seed | method | best fitness | kNN of the best | best kNN of any |",
              "|---|---|---|---|---|"]
    summary: dict[str, dict[str, list[float]]] = {}
    for seed in seeds:
        for method in ("cmaes", "random"):
            rs = [r for r in searches[seed] if r["method"] == method]
            best = min(rs, key=lambda r: r["fitness"])
            s = summary.setdefault(method, {"fit": [], "knn": []})
            s["fit"].append(best["fitness"])
            s["knn"].append(best["knn"])
            lines.append(f"| {seed} | {method} | {best['fitness']:.4f} | {best['knn']:.2f} | "
                         f"{max(r['knn'] for r in rs):.2f} |")
    for method, s in summary.items():
        lines.append(f"| mean ± sd | {method} | {mean_sd(s['fit'])} | {mean_sd(s['knn'])} | |")

    lines += ["", f"## 3. Final runs ({a.final_epochs} epochs, same proxy options)\n",
              "| seed | ELo (best weights of the seed's searches) | RGB-only contrastive | "
              "random init |", "|---|---|---|---|"]
    finals: dict[str, list[float]] = {"elo": [], "rgb": [], "init": []}
    for seed in seeds:
        best = min(searches[seed], key=lambda r: r["fitness"])
        clips = torch.load(out / f"seed{seed}" / "eval_clips.pt")
        tag = f"e{a.final_epochs}-s{seed}"
        elo, _ = final_run(a.data, best["weights"], out / f"final-elo-{tag}", seed,
                           a.final_epochs, clips, extra)
        rgb, _ = final_run(a.data, RGB_ONLY, out / f"final-rgb-{tag}", seed, a.final_epochs,
                           clips, extra)
        init = random_init_knn(a.data, seed, clips, extra)
        for key, v in (("elo", elo), ("rgb", rgb), ("init", init)):
            finals[key].append(v)
        lines.append(f"| {seed} | {elo:.2f} | {rgb:.2f} | {init:.2f} |")
    lines.append(f"| mean ± sd | {mean_sd(finals['elo'])} | {mean_sd(finals['rgb'])} | "
                 f"{mean_sd(finals['init'])} |")
    lines += ["", f"Total wall time: {(time.time() - t_start) / 60:.1f} min.", ""]
    Path(a.results).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

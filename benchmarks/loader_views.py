"""Do the loaders make the same views? One trained checkpoint, frozen, scores each loader's views
of the same batches: its training loss and the cosine between the two views' features. A
difference between the loaders' augmentation distributions moves these means; training noise
cannot, because nothing is trained. Differences are paired by batch against the first loader,
with their standard error over batches.

    python benchmarks/loader_views.py CHECKPOINT --results FILE [--loaders memory,torch,dali]

The views are the checkpoint's, then the same with colour jitter, greyscale and blur switched
off (crop and flip only) and with each of them alone, to say which operator a difference comes
from.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fastssl.data import dataset_index  # noqa: E402
from fastssl.methods import get_method, load_method  # noqa: E402
from fastssl.pipelines import LoaderSpec, available_loaders, build_train_loader  # noqa: E402
from fastssl.pipelines.views import ViewSpec, specs_for  # noqa: E402
from fastssl.profiling.host import machine_line, write_results  # noqa: E402

OFF = {"jitter_p": 0.0, "gray_p": 0.0, "blur_p": 0.0}
VARIANTS = {  # name -> the operators left on (crop and flip are always on)
    "all": tuple(OFF), "crop + flip": (), "+ colour jitter": ("jitter_p",),
    "+ greyscale": ("gray_p",), "+ blur": ("blur_p",)}


def variant(views: tuple[ViewSpec, ...], on: tuple[str, ...]) -> tuple[ViewSpec, ...]:
    return tuple(replace(v, **{k: x for k, x in OFF.items() if k not in on}) for v in views)


@torch.no_grad()
def scores(model, loader, epochs: int) -> torch.Tensor:
    """(2, batches): the loss and the mean view-1/view-2 feature cosine of every batch."""
    out = []
    for epoch in range(epochs):
        for batch in loader.epoch(epoch):
            a, b = (F.normalize(model.embed(x), dim=1) for x in batch["views"][:2])
            out.append([float(model(batch)["loss"]), float((a * b).sum(1).mean())])
    return torch.tensor(out).T


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--results", required=True)
    p.add_argument("--loaders", default="memory,torch,dali")
    p.add_argument("--epochs", type=int, default=4, help="epochs of batches per loader")
    p.add_argument("--seed", type=int, default=123, help="the loaders' seed (batch order)")
    a = p.parse_args()
    torch.set_num_threads(2)
    model, cfg = load_method(a.checkpoint)
    model.eval()
    split = dataset_index(cfg.data).train
    base = tuple(specs_for(cfg, get_method(cfg.method).views))
    names = a.loaders.split(",")
    lines = ["# Loader views under a frozen checkpoint (cpu)", "",
             f"Machine: {machine_line('cpu')}; torch {torch.__version__}.", "",
             f"Checkpoint: {cfg.method}, {Path(cfg.data).name}, {cfg.epochs} epochs, seed "
             f"{cfg.seed}, trained with --loader {cfg.loader}. Batches: {a.epochs} epochs of "
             f"{cfg.batch_size} from each loader (seed {a.seed}, the same images per batch). "
             f"Δ: paired by batch against {names[0]}, ± one standard error.", "",
             "| views | loader | batches | loss | Δ loss | view cosine | Δ cosine |",
             "|---|---|---|---|---|---|---|"]
    for label, on in VARIANTS.items():
        spec = LoaderSpec(split, variant(base, on), cfg.batch_size, cfg.workers, seed=a.seed)
        missing = set(names) - set(available_loaders(spec))
        if missing:
            raise SystemExit(f"--loaders: {', '.join(sorted(missing))} cannot make these views "
                             "on this machine")
        first = None
        for name in names:
            s = scores(model, build_train_loader(name, spec), a.epochs)
            first = s if first is None else first
            d, n = s - first, s.shape[1]
            delta = ["—", "—"] if s is first else [
                f"{m:+.4f} ± {e / math.sqrt(n):.4f}"
                for m, e in zip(d.mean(1).tolist(), d.std(1).tolist(), strict=True)]
            lines.append(f"| {label} | {name} | {n} | {s[0].mean():.4f} | {delta[0]} | "
                         f"{s[1].mean():.4f} | {delta[1]} |")
            print(lines[-1], flush=True)
    write_results(a.results, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

"""Semi-supervised benchmark on the embedded shapes set (CPU): SimCLR v2 fine-tuning and
distillation with 1% and 10% labels, and the Rethinking pre-training and self-training
experiment in miniature (10% labels, augmentation S1 and S4).

Every row trains through the ``fastssl finetune | distill | selftrain`` code paths (in process);
runs are cached in ``--out`` (``results.json``), so a rerun only trains what is missing.

    python benchmarks/semisup.py [--out runs/semisup-bench] [--seeds 0,1]
                                 [--results benchmarks/results/semisup-cpu.md]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from fastssl.data import dataset_index
from fastssl.eval.linear import linear_top1
from fastssl.eval.run import features
from fastssl.methods import resolve_config
from fastssl.profiling.host import machine_line
from fastssl.semisup.commands import distill, finetune, resolve_command, selftrain
from fastssl.semisup.models import ssl_encoder
from fastssl.semisup.subsets import label_subset
from fastssl.train import train

# The CPU is shared with other jobs (about 8x slower than idle while this ran), so every budget
# is small. SimCLR v2 pretraining: the learning benchmark's settings (small_cnn, 32 px crops,
# batch 256, head 1024 wide) at 8 epochs instead of 20. Every run resumes from its last
# checkpoint when the benchmark is restarted.
SSL = {"method": "simclr_v2", "proj_hidden_dim": 1024, "epochs": 8, "crop_size": 32,
       "eval_every": 0, "progress": False, "resume": True}
COMMON = ["--crop_size=32", "--progress=false", "--log_every=20", "--workers=2", "--resume"]
# fine-tuning: the paper's 60 epochs for 1% labels (batch 25: two steps per epoch over the 50
# images), 15 epochs (the paper: 30) for 10%
FINETUNE = {"1%": ["--epochs=60", "--batch_size=25"], "10%": ["--epochs=15", "--batch_size=32"]}
# students see all 5000 train images: 2 epochs = 156 steps of batch 64
STUDENT = ["--epochs=2", "--batch_size=64"]


class Bench:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.path = out / "results.json"
        self.results: dict[str, dict] = json.loads(self.path.read_text()) \
            if self.path.exists() else {}

    def row(self, key: str, fn) -> dict:
        if key not in self.results:
            t = time.time()
            result = fn()
            if result.pop("stopped", False):  # SIGTERM: the run checkpointed; rerun to resume
                raise SystemExit(f"{key}: stopped early; rerun the benchmark to resume it")
            result["seconds"] = round(time.time() - t)
            self.results[key] = result
            self.path.write_text(json.dumps(self.results, indent=1))
            print(f"{key}: {result}", flush=True)
        return self.results[key]

    def command(self, key: str, name: str, *tokens: str) -> dict:
        run = self.out / key

        def go() -> dict:
            cfg = resolve_command(name, [*COMMON, *tokens, "--out", str(run)])
            if name == "finetune":
                r, teacher = finetune(cfg), float("nan")
            elif name == "distill":
                r, teacher = distill(cfg)
            else:
                r, tops = selftrain(cfg)
                teacher = tops[0]
            return {"top1": r.knn_top1, "teacher": teacher, "stopped": r.stopped_early}
        return self.row(key, go)

    def ckpt(self, key: str) -> str:
        return str(self.out / key / "checkpoints" / "last.pt")


def linear_probe(ssl_ckpt: str, frac: str, seed: int) -> dict:
    """Linear classifier on frozen SSL backbone features of the labelled subset."""
    encoder, cfg = ssl_encoder(ssl_ckpt, from_head_layer=False)
    index = dataset_index("")
    encoder.eval()
    (xt, yt), (xv, yv) = features(encoder, index, crop_size=32, workers=2,
                                  device=torch.device("cpu"))
    idx = torch.tensor(label_subset(index.train, frac, seed))
    return {"top1": linear_top1(xt[idx], yt[idx], xv, yv, seed=seed)}


def spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/semisup-bench")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--results", default="benchmarks/results/semisup-cpu.md")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in a.seeds.split(",")]
    bench = Bench(out)
    t0 = time.time()

    def pretrain() -> dict:
        r = train(resolve_config(None, {**SSL, "out": str(out / "ssl")}))
        return {"knn_top1": r.knn_top1, "stopped": r.stopped_early}
    ssl_row = bench.row("ssl", pretrain)
    ssl = bench.ckpt("ssl")

    table1: dict[tuple[str, str], list[float]] = {}
    teachers: dict[str, float] = {}
    for frac in ("1%", "10%"):
        ft = [f"--labels={frac}", *FINETUNE[frac]]
        for seed in seeds if frac == "1%" else seeds[:1]:  # 10% rows: one seed (time)
            s = f"--seed={seed}"
            rows = {
                "linear probe (frozen backbone)":
                    bench.row(f"linear-{frac}-{seed}", lambda f=frac, sd=seed:
                              linear_probe(ssl, f, sd)),
                "supervised from scratch":
                    bench.command(f"scratch-s1-{frac}-{seed}", "finetune", *ft, s),
                "fine-tune from the backbone":
                    bench.command(f"ft-backbone-s1-{frac}-{seed}", "finetune", *ft, s,
                                  f"--checkpoint={ssl}"),
                "fine-tune from head layer 1":
                    bench.command(f"ft-head-{frac}-{seed}", "finetune", *ft, s,
                                  f"--checkpoint={ssl}", "--from_head_layer"),
            }
            for name, r in rows.items():
                table1.setdefault((name, frac), []).append(r["top1"])
        teacher = bench.ckpt(f"ft-head-{frac}-{seeds[0]}")
        for name, student in (("distilled, self (small_cnn + head layer)", ""),
                              ("distilled, smaller student (tiny_cnn)", "tiny_cnn")):
            r = bench.command(f"distill-{student or 'self'}-{frac}", "distill",
                              f"--teacher={teacher}", *STUDENT, f"--seed={seeds[0]}",
                              *([f"--student={student}"] if student else []))
            table1.setdefault((name, frac), []).append(r["top1"])
            teachers[frac] = r["teacher"]

    # Rethinking in miniature: 10% labels, seed 0, S1 and S4
    table2: dict[tuple[str, str], float] = {}
    s10 = ["--labels=10%", f"--seed={seeds[0]}"]
    for aug in ("s1", "s4"):
        v = [f"--views={aug}"]
        sup = bench.command(f"scratch-{aug}-10%-{seeds[0]}", "finetune", *s10, *v,
                            *FINETUNE["10%"])
        pre = bench.command(f"ft-backbone-{aug}-10%-{seeds[0]}", "finetune", *s10, *v,
                            *FINETUNE["10%"], f"--checkpoint={ssl}")
        table2[("supervised (random init)", aug)] = sup["top1"]
        table2[("SSL pre-trained, fine-tuned", aug)] = pre["top1"]
        for name, key, extra in (
                ("self-training, random init", "st-random", []),
                ("self-training, random init, no normalisation", "st-random-nonorm",
                 ["--normalise=false"]),
                ("self-training, SSL init", "st-ssl", [f"--checkpoint={ssl}"])):
            if "no normalisation" in name and aug == "s4":
                continue  # one ablation of the normalisation, at S1 (time)
            teacher = bench.ckpt(f"ft-backbone-{aug}-10%-{seeds[0]}" if "SSL" in name
                                 else f"scratch-{aug}-10%-{seeds[0]}")
            r = bench.command(f"{key}-{aug}", "selftrain", *s10, *v, *STUDENT, *extra,
                              f"--teacher={teacher}")
            table2[(name, aug)] = r["top1"]
    write(Path(a.results), bench, table1, table2, teachers, ssl_row, seeds,
          time.time() - t0)


def write(path: Path, bench: Bench, table1, table2, teachers, ssl_row, seeds, seconds) -> None:
    lines = ["# Semi-supervised benchmark (CPU)", "",
             f"Machine: {machine_line('cpu')}. Generated by `python benchmarks/semisup.py`.", "",
             f"SimCLR v2 pretraining: small_cnn, 32 px crops, batch 256, {SSL['epochs']} epochs "
             f"(kNN top-1 {ssl_row['knn_top1']:.1f}). Top-1 (%) on the 1000 held-out images; "
             f"seeds {', '.join(map(str, seeds))} where a row lists a range: mean (min-max).",
             "", "## 1. SimCLR v2 with 1% and 10% labels", "",
             "| row | 1% labels (50 images) | 10% labels (500 images) |", "|---|---|---|"]
    names = dict.fromkeys(n for n, _ in table1)
    for n in names:
        lines.append(f"| {n} | {spread(table1[(n, '1%')])} | {spread(table1[(n, '10%')])} |")
    lines += ["", f"Distillation teachers: the head-layer fine-tuned networks of seed {seeds[0]} "
              f"(1%: {teachers['1%']:.1f}, 10%: {teachers['10%']:.1f}).", "",
              "## 2. Rethinking pre-training and self-training, in miniature (10% labels)", "",
              "| row | S1 | S4 |", "|---|---|---|"]
    for n in dict.fromkeys(n for n, _ in table2):
        s4 = f"{table2[(n, 's4')]:.1f}" if (n, "s4") in table2 else "not run"
        lines.append(f"| {n} | {table2[(n, 's1')]:.1f} | {s4} |")
    lines += ["", f"Total time {seconds / 60:.0f} min; per-run seconds are in "
              f"{bench.path} (the CPU was shared with other jobs).", ""]
    path.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

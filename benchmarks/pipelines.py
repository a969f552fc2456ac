"""Pipeline throughput: DALI vs the torchvision DataLoader fallback, same worker/thread count.

    python benchmarks/pipelines.py                      # CPU, 2 threads, shapes set at 256 px
    python benchmarks/pipelines.py --device cuda --threads 16
    python benchmarks/pipelines.py --data DIR           # any dataset in the layout, too
    python benchmarks/pipelines.py --make-data --shapes-dir D --images 20480
                                   # only write the set (D/shapes256) for `fastssl profile --data`

Presets: SwAV multi-crop (2 x 224 px, scale 0.14-1, + 6 x 96 px, scale 0.05-0.14) and BYOL two
views (2 x 224 px, blur 1.0 / 0.1, solarize 0 / 0.2). Images/s counts samples (all their views),
measured over one epoch after its first batch (pipeline build / worker start-up excluded; both
loaders pay one per epoch); median (and range) over ``--repeats`` epochs. Views are moved to the
device and synchronised, so on CUDA the copy of the torchvision batches is included. Writes
``benchmarks/results/pipelines-<device>.md``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fastssl.data.layout import scan  # noqa: E402
from fastssl.pipelines import LoaderSpec, build_train_loader  # noqa: E402
from fastssl.pipelines.views import view_specs  # noqa: E402
from fastssl.profiling.host import machine_line  # noqa: E402

PRESETS = {
    "swav 2x224+6x96": dict(preset="swav", crop_size=224, global_crops=2,
                            global_scale=(0.14, 1.0), local_crops=6, local_crop_size=96,
                            local_scale=(0.05, 0.14)),
    "byol 2x224": dict(preset="byol", crop_size=224, global_crops=2, global_scale=(0.08, 1.0)),
}


def shapes_256(out: Path, per_class: int, images: int = 0) -> Path:
    """The embedded shapes set (64 px) upscaled to 256 px JPEGs (quality 90) in
    ``out/shapes256``: ``per_class`` distinct images per class, then hard links to them until
    the train split holds ``images`` files (0: the distinct ones only). Decoding a link costs
    what decoding its original does, so a large set for long measurement windows is written in
    seconds. Reused when ``out/shapes256`` already holds the same request."""
    from PIL import Image

    from fastssl.data.synth import synth_shapes

    root = out / "shapes256"
    request = f"per_class={per_class} images={images}\n"
    done = root / "REQUEST"
    if done.exists() and done.read_text() == request:
        return root
    for old in (root, out / "src"):
        shutil.rmtree(old, ignore_errors=True)
    src = synth_shapes(out / "src", train_per_class=per_class, val_per_class=1, size=64)
    originals = []
    for p in sorted(src.rglob("*.jpg")):
        dst = root / p.relative_to(src)
        dst.parent.mkdir(parents=True, exist_ok=True)
        Image.open(p).resize((256, 256), Image.BICUBIC).save(dst, quality=90)
        if dst.parts[-3] == "train":
            originals.append(dst)
    for i in range(max(0, images - len(originals))):
        p = originals[i % len(originals)]
        (p.parent / f"{p.stem}_{i:06d}.jpg").hardlink_to(p)
    done.write_text(request)
    return root


def measure(name: str, split, specs, *, batch: int, threads: int, device: str,
            repeats: int) -> list[float]:
    ld = build_train_loader(name, LoaderSpec(split, tuple(specs), batch, threads,
                                             device_type=device))
    rates = []
    for epoch in range(repeats):
        n, t0 = 0, None
        for batch_ in ld.epoch(epoch):
            views = [v.to(device, non_blocking=True) for v in batch_["views"]]
            if t0 is None:  # the first batch carries the start-up cost; time the rest
                if device == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                continue
            n += views[0].shape[0]
        if device == "cuda":
            torch.cuda.synchronize()
        rates.append(n / (time.perf_counter() - t0))
        print(f"  {name} epoch {epoch}: {rates[-1]:.1f} img/s", file=sys.stderr, flush=True)
    return rates


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", action="append", default=[], help="extra dataset root(s)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=2, help="DALI threads = DataLoader workers")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--per-class", type=int, default=26,
                   help="distinct shapes images per class (10 classes)")
    p.add_argument("--images", type=int, default=0,
                   help="shapes train images in all, hard links to the distinct ones (0: none)")
    p.add_argument("--shapes-dir", default="",
                   help="write (or reuse) the shapes set here (default: a temporary folder)")
    p.add_argument("--make-data", action="store_true",
                   help="only write the shapes set to --shapes-dir (for fastssl profile --data)")
    p.add_argument("--max-images", type=int, default=0, help="cap per dataset (0 = all)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--loaders", default="dali,torch")
    p.add_argument("--presets", default=",".join(PRESETS))
    p.add_argument("--out", default="")
    a = p.parse_args(argv)
    if a.make_data:
        if not a.shapes_dir:
            p.error("--make-data needs --shapes-dir")
        print(shapes_256(Path(a.shapes_dir), a.per_class, a.images))
        return 0
    torch.set_num_threads(1)  # the DataLoader workers / DALI threads do the work

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        shapes = shapes_256(Path(a.shapes_dir or tmp), a.per_class, a.images)
        datasets = {"shapes 256 px": shapes}
        datasets.update({d: Path(d) for d in a.data})
        for dname, root in datasets.items():
            split = scan(root).train
            if a.max_images:
                split.paths, split.labels = split.paths[:a.max_images], split.labels[:a.max_images]
            for pname in a.presets.split(","):
                cfg = dict(PRESETS[pname])
                specs = view_specs(cfg.pop("preset"), **cfg)
                result = {}
                for loader in a.loaders.split(","):
                    print(f"{dname} / {pname} / {loader}", file=sys.stderr, flush=True)
                    result[loader] = measure(loader, split, specs, batch=a.batch,
                                             threads=a.threads, device=a.device,
                                             repeats=a.repeats)
                rows.append((dname, len(split), pname, result))

    lines = [f"# Pipeline throughput ({a.device})", "",
             f"Machine: {machine_line(a.device)}. torch {torch.__version__}, DALI "
             f"{_dali_version()}; {a.threads} DALI threads = {a.threads} DataLoader workers, "
             f"batch {a.batch}, images/s (samples with all their views) over one epoch after its "
             f"first batch, median [min-max] of {a.repeats} epochs. Command: "
             f"`python benchmarks/pipelines.py {' '.join(argv or sys.argv[1:])}`.", "",
             "| data | images | preset | loader | img/s | vs torch |",
             "|---|---|---|---|---|---|"]
    for dname, n, pname, result in rows:
        ref = statistics.median(result["torch"]) if "torch" in result else None
        for loader, rates in result.items():
            med = statistics.median(rates)
            ratio = f"{med / ref:.2f}x" if ref else "-"
            lines.append(f"| {dname} | {n} | {pname} | {loader} | {med:.1f} "
                         f"[{min(rates):.1f}-{max(rates):.1f}] | {ratio} |")
    text = "\n".join(lines) + "\n"
    out = Path(a.out or ROOT / "benchmarks" / "results" / f"pipelines-{a.device}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    return 0


def _dali_version() -> str:
    try:
        import nvidia.dali

        return nvidia.dali.__version__
    except ImportError:
        return "not installed"


if __name__ == "__main__":
    raise SystemExit(main())

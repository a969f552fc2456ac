"""Video pipeline throughput: DALI (CPU: VP9 decoding; CUDA: NVDEC on the MP4 copies) against the
FFmpeg + torchvision + torchaudio fallback, at the same thread / worker count.

    python benchmarks/video.py                      # CPU, 2 threads, the embedded AV set
    python benchmarks/video.py --device cuda --threads 16

Modes: RGB clips only, RGB + audio (log-mel of the clip's span), RGB + flow (precomputed
sidecars). Clips/s counts samples (each: 2 views of ``CLIP`` at ``--size`` px, plus the audio or
flow), measured over ``--batches`` batches after the first (pipeline build and worker start-up
excluded); median over ``--repeats`` epochs. Writes
``benchmarks/results/video-<device>.md``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fastssl.data.av import default_av_dataset  # noqa: E402
from fastssl.data.layout import scan  # noqa: E402
from fastssl.pipelines.clips import ClipSpec  # noqa: E402
from fastssl.pipelines.loader import LoaderSpec  # noqa: E402
from fastssl.pipelines.video import FallbackVideoLoader  # noqa: E402
from fastssl.pipelines.views import view_specs  # noqa: E402
from fastssl.profiling.host import machine_line  # noqa: E402

CLIP = ClipSpec(frames=8, stride=2)
MODES = {"rgb": dict(audio=False, flow=False), "rgb+audio": dict(audio=True, flow=False),
         "rgb+flow": dict(audio=False, flow=True)}


def measure(cls, spec: LoaderSpec, batches: int, repeats: int) -> list[float]:
    loader = cls(spec)
    rates = []
    for epoch in range(repeats):
        it = iter(loader.epoch(epoch))
        next(it)  # pipeline build / worker start-up
        t, n = time.perf_counter(), 0
        for _ in range(batches):
            batch = next(it)
            n += batch["clips"][0].shape[0]
        rates.append(n / (time.perf_counter() - t))
        del it
    return rates


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="", help="video set (default: the embedded AV set)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--results", default="",
                   help="table path (default: benchmarks/results/video-<device>.md)")
    a = p.parse_args()
    split = scan(a.data or default_av_dataset()).train
    views = tuple(view_specs("simclr", crop_size=a.size, global_crops=2, global_scale=(0.3, 1)))
    from fastssl.pipelines.video_dali import DaliVideoLoader

    rows = []
    for mode, flags in MODES.items():
        spec = LoaderSpec(split, views, a.batch, workers=a.threads, device_type=a.device,
                          clip=replace(CLIP, **flags))
        dali = measure(DaliVideoLoader, spec, a.batches, a.repeats)
        fallback = measure(FallbackVideoLoader, spec, a.batches, a.repeats)
        d, f = statistics.median(dali), statistics.median(fallback)
        rows.append(f"| {mode} | {d:.1f} ({min(dali):.1f}-{max(dali):.1f}) | "
                    f"{f:.1f} ({min(fallback):.1f}-{max(fallback):.1f}) | {d / f:.2f}x |")
        print(rows[-1], flush=True)
    header = (f"# Video pipelines: DALI vs fallback ({a.device})\n\n{machine_line(a.device)}\n\n"
              f"`python benchmarks/video.py --device {a.device} --threads {a.threads}`: "
              f"{len(split)} clips of the embedded AV set (64 px, 16 fps, VP9), batch {a.batch}, "
              f"2 views of {CLIP.frames} frames (stride {CLIP.stride}) at {a.size} px, "
              f"{a.threads} DALI threads / DataLoader workers; clips/s over {a.batches} batches "
              f"after the first, median (range) of {a.repeats} epochs.\n\n"
              "| mode | DALI clips/s | fallback clips/s | DALI / fallback |\n|---|---|---|---|\n")
    out = Path(a.results) if a.results else ROOT / "benchmarks" / "results" / f"video-{a.device}.md"
    out.write_text(header + "\n".join(rows) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

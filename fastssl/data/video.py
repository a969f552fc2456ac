"""Video files on the host: frame reading (FFmpeg), precomputed optical flow, and
``fastssl data prepare-video SRC OUT`` (transcode user videos into the layout the loaders read).

Flow files (``DIR/flow/<split>/<class>/<clip>.npy``): uint8 array (T - 1, H, W, 2), entry t the
flow (dx, dy) in px from frame t to t + 1, stored as ``round(flow * FLOW_SCALE) + 128`` clipped
to 0..255: range [-16, +15.875] px in steps of 1/8 px (quantisation error <= 1/16 px). Decode
with :func:`dequantise_flow`.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import cv2
import ffmpeg
import numba
import numpy as np
from tqdm import tqdm

log = logging.getLogger(__name__)

SOURCE_EXTENSIONS = (".webm", ".mp4", ".mkv", ".avi", ".mov", ".m4v")  # what prepare-video reads
SWS_FLAGS = "accurate_rnd+full_chroma_int"
FLOW_SCALE = 8.0  # quantisation steps per pixel
FLOW_ZERO = 128


def read_frames(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """All frames of a video as RGB uint8 (T, H, W, 3), decoded by FFmpeg; ``size`` = (width,
    height) when known (else read from the container). YUV -> RGB uses swscale's exact rounding
    and full chroma interpolation, which matches DALI's decoder (47 dB PSNR on the synthetic
    set) where FFmpeg's and OpenCV's default conversion does not (38.8 dB). ValueError naming the
    file when nothing decodes."""
    try:
        if size is None:
            stream = ffmpeg.probe(str(path), select_streams="v")["streams"][0]
            size = (int(stream["width"]), int(stream["height"]))
        raw, _ = ffmpeg.input(str(path)).output(
            "pipe:", format="rawvideo", pix_fmt="rgb24", sws_flags=SWS_FLAGS
        ).global_args("-threads", "1").run(quiet=True)
    except (ffmpeg.Error, IndexError, KeyError) as e:
        raise ValueError(f"cannot decode video {path}") from e
    w, h = size
    if not raw or len(raw) % (w * h * 3):
        raise ValueError(f"no decodable video frames in {path}")
    return np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3)


@numba.njit(cache=True)
def _quantise(flow: np.ndarray, scale: float, zero: int) -> np.ndarray:  # pragma: no cover
    out = np.empty(flow.shape, np.uint8)
    flat, q = flow.ravel(), out.ravel()
    for i in range(flat.size):
        v = round(flat[i] * scale) + zero
        q[i] = 0 if v < 0 else (255 if v > 255 else v)
    return out


def quantise_flow(flow: np.ndarray) -> np.ndarray:
    """float flow (px) -> the uint8 storage format (see the module docstring)."""
    return _quantise(np.ascontiguousarray(flow, np.float32), FLOW_SCALE, FLOW_ZERO)


def dequantise_flow(q: np.ndarray) -> np.ndarray:
    """The uint8 storage format -> float32 flow in px."""
    return (q.astype(np.float32) - FLOW_ZERO) / FLOW_SCALE


def optical_flow(frames: np.ndarray) -> np.ndarray:
    """Dense flow (T - 1, H, W, 2) in px between consecutive RGB frames (OpenCV Farneback:
    measured more accurate than DIS on 64 px clips, see tests/data/test_video.py)."""
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    # pyramid scale 0.5, 3 levels, 9 px window, 5 iterations, poly_n 5 / sigma 1.1 (OpenCV's
    # recommended pair for small neighbourhoods)
    return np.stack([cv2.calcOpticalFlowFarneback(a, b, np.zeros((*a.shape, 2), np.float32),
                                                  0.5, 3, 9, 5, 5, 1.1, 0)
                     for a, b in zip(grey[:-1], grey[1:], strict=True)])


def write_flow(video: Path, out: Path) -> None:
    """The quantised flow of ``video`` at ``out`` (.npy), written atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp{os.getpid()}.npy")
    np.save(tmp, quantise_flow(optical_flow(read_frames(video))))
    tmp.replace(out)


# -- prepare-video ---------------------------------------------------------------------------
def _targets(out: Path, rel: Path, device: str) -> tuple[Path, Path, Path]:
    """(video, wav, flow) paths of the source file at ``rel`` (``split/class/name.ext``)."""
    ext = ".mp4" if device == "cuda" else ".webm"
    return (out / rel.with_suffix(ext), out / "audio" / rel.with_suffix(".wav"),
            out / "flow" / rel.with_suffix(".npy"))


def prepare_one(src: Path, out: Path, rel: Path, *, device: str, fps: int, size: int,
                flow: bool) -> None:
    """``_prepare_one``, with FFmpeg's failure as a ValueError carrying its last stderr line
    (``ffmpeg.Error`` does not survive the trip back from a worker process)."""
    try:
        _prepare_one(src, out, rel, device=device, fps=fps, size=size, flow=flow)
    except ffmpeg.Error as e:
        lines = (e.stderr or b"").decode(errors="replace").strip().splitlines()
        raise ValueError(lines[-1] if lines else "ffmpeg failed") from None


def _prepare_one(src: Path, out: Path, rel: Path, *, device: str, fps: int, size: int,
                 flow: bool) -> None:
    """Transcode one file: video (scaled so the short side is ``size``, ``fps``, a keyframe per
    second) for ``device``'s DALI decoder, 16 kHz mono WAV, optional flow. Each output is
    written under a temporary name and renamed, so a killed run leaves no half file."""
    video, wav, flow_path = _targets(out, rel, device)
    for p in (video, wav):
        p.parent.mkdir(parents=True, exist_ok=True)
    stream = ffmpeg.input(str(src))
    tmp_wav = wav.with_name(f".{wav.stem}.tmp.wav")
    if ffmpeg.probe(str(src), select_streams="a")["streams"]:
        ffmpeg.output(stream.audio, str(tmp_wav), ac=1, ar=16_000, acodec="pcm_s16le") \
            .overwrite_output().run(quiet=True)
    else:  # a silent video gets a silent track: every clip has audio
        duration = float(ffmpeg.probe(str(src))["format"]["duration"])
        ffmpeg.input("anullsrc=r=16000:cl=mono", format="lavfi", t=duration) \
            .output(str(tmp_wav), acodec="pcm_s16le").overwrite_output().run(quiet=True)
    scaled = stream.video.filter("fps", fps=fps).filter(
        "scale", f"if(lt(iw,ih),{size},-2)", f"if(lt(iw,ih),-2,{size})")
    codec = (dict(vcodec="libx264", crf=18, preset="veryfast") if device == "cuda"
             else dict(vcodec="libvpx-vp9", crf=20, **{"b:v": 0, "deadline": "realtime",
                                                        "cpu-used": 8}))
    tmp_video = video.with_name(f".{video.stem}.tmp{video.suffix}")
    ffmpeg.output(scaled, str(tmp_video), pix_fmt="yuv420p", g=fps, an=None, **codec) \
        .global_args("-threads", "1").overwrite_output().run(quiet=True)
    tmp_wav.replace(wav)
    if flow:
        write_flow(tmp_video, flow_path)
    tmp_video.replace(video)  # last: the video's presence marks the file done


def _sources(src: Path) -> Iterator[tuple[Path, Path]]:
    """(file, relative target ``split/class/name.ext``) of every video under ``src``: either
    ``src/<split>/<class>/*`` (split = train or val) or ``src/<class>/*`` (all train)."""
    splits = [d for d in ("train", "val") if (src / d).is_dir()]
    roots = [(src / d, Path(d)) for d in splits] or [(src, Path("train"))]
    for root, split in roots:
        for cls in sorted(p for p in root.iterdir() if p.is_dir()):
            for f in sorted(cls.iterdir()):
                if f.is_file() and f.suffix.lower() in SOURCE_EXTENSIONS:
                    yield f, split / cls.name / f.name


def prepare_videos(src: str | Path, out: str | Path, *, device: str = "cpu", fps: int = 16,
                   size: int = 128, flow: bool = False, workers: int = 2,
                   progress: bool = True) -> tuple[int, int, int]:
    """Transcode every video under ``src`` into ``out``; returns (done, skipped as already done,
    failed). A failing file is logged with its path and counted; the run goes on."""
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise ValueError(f"source directory not found: {src}")
    todo, skipped = [], 0
    for f, rel in _sources(src):
        video, _, flow_path = _targets(out, rel, device)
        if video.exists() and (not flow or flow_path.exists()):
            skipped += 1
        else:
            todo.append((f, rel))
    done = failed = 0
    with ProcessPoolExecutor(max(1, workers)) as pool:
        futures = {pool.submit(prepare_one, f, out, rel, device=device, fps=fps, size=size,
                               flow=flow): f for f, rel in todo}
        for fut in tqdm(as_completed(futures), total=len(futures), disable=not progress,
                        unit="video", desc="prepare-video"):
            try:
                fut.result()
                done += 1
            except (OSError, ValueError, KeyError) as e:
                failed += 1
                log.warning("failed to prepare %s: %s", futures[fut], e)
    return done, skipped, failed


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="fastssl data prepare-video",
                                description="transcode videos for the video loaders")
    p.add_argument("src", help="SRC/<class>/<video> or SRC/{train,val}/<class>/<video>")
    p.add_argument("out")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="cpu: VP9/WebM (DALI's CPU decoder); cuda: H.264/MP4 (NVDEC)")
    p.add_argument("--fps", type=int, default=16)
    p.add_argument("--size", type=int, default=128, help="short side after scaling (px)")
    p.add_argument("--flow", action="store_true", help="precompute optical flow (OpenCV)")
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args(argv)
    done, skipped, failed = prepare_videos(a.src, a.out, device=a.device, fps=a.fps,
                                           size=a.size, flow=a.flow, workers=a.workers)
    print(f"prepared {done} videos into {a.out} ({skipped} already done, {failed} failed)")
    return 1 if failed else 0

"""The embedded audio-visual set (``fastssl data synth av OUT``): real encoded video to decode.

Eight classes = four motions x two shapes. A shape crosses a static cluttered background with a
class-specific velocity (horizontal, vertical, diagonal, fast horizontal; integer px/frame, so
the object's flow is exact) and bounces off the borders; every bounce is heard: a short tone
burst at the motion's pitch whose onset is the bounce frame's time. One frame shows a shape at
some position (two classes share each shape), so a per-frame shortcut is not enough: the class
is motion + sound + appearance together.

Layout (``DIR/<split>/<class>/<clip>.webm`` and ``.mp4`` side by side)::

    train/<class>/<clip>.webm    VP9 + Opus (DALI's CPU decoder reads VP9)
    train/<class>/<clip>.mp4     H.264 + AAC (NVDEC)
    audio/train/<class>/<clip>.wav    16 kHz mono PCM (DALI's audio decoder reads WAV)
    truth/train/<class>/<clip>.npz    label, positions (T, 2) px of the centre, radius, bounces
    flow/train/<class>/<clip>.npy     precomputed OpenCV flow (fastssl.data.video)
    val/...                           the same for the held-out clips
"""

from __future__ import annotations

import math
import os
import wave
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import ffmpeg
import numpy as np
from PIL import Image, ImageDraw

from fastssl.data.synth import MIN_LUMA_GAP, _background, _hsv_colour, _luma, cached_dataset
from fastssl.data.video import write_flow

FPS = 16
SAMPLE_RATE = 16_000
# (name, velocity px/frame, tone Hz); integer velocities keep positions and flow exact
MOTIONS = (("horizontal", (3, 0), 330.0), ("vertical", (0, 3), 523.0),
           ("diagonal", (2, 2), 784.0), ("fast", (5, 0), 1175.0))
SHAPES = ("disc", "square")
CLASSES = tuple(f"{m[0]}_{s}" for m in MOTIONS for s in SHAPES)
BURST_S = 0.06  # tone burst length; decays by e^-5 over it, so onsets stay sharp
NOISE = 0.01  # background hiss (fraction of full scale)
# a quiet continuous tone at the motion's pitch under the bursts: a 1 s window without a bounce
# still carries the class's sound (mean power 0.08^2 / 2, well below the bursts' 0.6^2 / 2)
HUM = 0.08
SUPERSAMPLE = 4


@dataclass(frozen=True)
class Clip:
    """One rendered clip: RGB frames, mono audio and the truth kept for tests."""

    frames: np.ndarray  # (T, H, W, 3) uint8
    audio: np.ndarray  # (samples,) float32 in [-1, 1]
    label: int
    positions: np.ndarray  # (T, 2) float: object centre (x, y) in px per frame
    radius: float
    bounces: np.ndarray  # frame indices at which the object bounced


def trajectory(rng: np.random.Generator, velocity: tuple[int, int], frames: int, size: int,
               radius: int) -> tuple[np.ndarray, list[int]]:
    """Integer centre positions (T, 2) bouncing inside [radius, size - 1 - radius] and the frames
    at which a bounce happened (velocity signs flipped)."""
    lo, hi = radius, size - 1 - radius
    pos = rng.integers(lo, hi + 1, 2)
    vel = np.array(velocity) * rng.choice([-1, 1], 2)
    out, bounces = [pos.copy()], []
    for t in range(1, frames):
        pos = pos + vel
        bounced = False
        for axis in (0, 1):
            if pos[axis] < lo or pos[axis] > hi:  # reflect off the wall
                pos[axis] = 2 * (lo if pos[axis] < lo else hi) - pos[axis]
                vel[axis] = -vel[axis]
                bounced = True
        if bounced:
            bounces.append(t)
        out.append(pos.copy())
    return np.array(out, dtype=np.float64), bounces


def _shape_mask(shape: str, cx: float, cy: float, r: float, size: int) -> np.ndarray:
    big = Image.new("L", (size * SUPERSAMPLE, size * SUPERSAMPLE), 0)
    s = SUPERSAMPLE
    # pixel centres are at integer coordinates: the box is centred on (cx, cy)
    box = [(cx - r + 0.5) * s, (cy - r + 0.5) * s, (cx + r + 0.5) * s - 1, (cy + r + 0.5) * s - 1]
    draw = ImageDraw.Draw(big)
    (draw.ellipse if shape == "disc" else draw.rectangle)(box, fill=255)
    small = big.resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32)[..., None] / 255.0


def tone_bursts(onsets_s: list[float], pitch: float, seconds: float,
                rng: np.random.Generator) -> np.ndarray:
    """Mono audio: hiss, a quiet hum at ``pitch`` and a decaying tone burst at ``pitch`` starting
    at each onset (seconds)."""
    n = int(round(seconds * SAMPLE_RATE))
    phase = rng.uniform(0, 2 * math.pi)
    hum = HUM * np.sin(2 * math.pi * pitch * np.arange(n) / SAMPLE_RATE + phase)
    audio = (rng.normal(0, NOISE, n) + hum).astype(np.float32)
    t = np.arange(int(BURST_S * SAMPLE_RATE)) / SAMPLE_RATE
    burst = (0.6 * np.sin(2 * math.pi * pitch * t) * np.exp(-5 * t / BURST_S)).astype(np.float32)
    for onset in onsets_s:
        i = int(round(onset * SAMPLE_RATE))
        seg = audio[i:i + len(burst)]
        seg += burst[:len(seg)]
    return np.clip(audio, -1, 1)


def render_clip(rng: np.random.Generator, label: int, *, size: int = 64,
                frames: int = 2 * FPS) -> Clip:
    """One clip of class ``label`` (see the module docstring)."""
    (_, velocity, pitch), shape = MOTIONS[label // len(SHAPES)], SHAPES[label % len(SHAPES)]
    radius = int(rng.integers(size // 10, size // 6 + 1))
    positions, bounces = trajectory(rng, velocity, frames, size, radius)
    background, base = _background(rng, size)
    fg = _hsv_colour(rng, (0.3, 1.0), (0.1, 1.0))
    while abs(_luma(fg) - _luma(base)) < MIN_LUMA_GAP:
        fg = _hsv_colour(rng, (0.3, 1.0), (0.1, 1.0))
    video = np.empty((frames, size, size, 3), np.uint8)
    for t, (cx, cy) in enumerate(positions):
        alpha = _shape_mask(shape, cx, cy, radius, size)
        video[t] = np.round(alpha * fg + (1 - alpha) * background).astype(np.uint8)
    audio = tone_bursts([b / FPS for b in bounces], pitch, frames / FPS, rng)
    return Clip(video, audio, label, positions, float(radius), np.array(bounces, np.int64))


def write_wav(path: Path, audio: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    """16-bit mono PCM WAV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())


def encode(frames: np.ndarray, wav: Path, webm: Path | None, mp4: Path | None,
           fps: int = FPS) -> None:
    """Encode RGB ``frames`` with the audio of ``wav`` in one ffmpeg run: VP9 + Opus in WebM and /
    or H.264 + AAC in MP4; a keyframe every second (random temporal offsets seek cheaply)."""
    t, h, w, _ = frames.shape
    video = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{w}x{h}", framerate=fps)
    audio = ffmpeg.input(str(wav))
    outs = []
    common = dict(pix_fmt="yuv420p", g=fps, r=fps)
    if webm is not None:
        webm.parent.mkdir(parents=True, exist_ok=True)
        # crf 10: decoded frames stay close to the rendered ones (the flow truth depends on it)
        outs.append(ffmpeg.output(video, audio, str(webm), vcodec="libvpx-vp9", crf=10,
                                  **{"b:v": 0, "deadline": "realtime", "cpu-used": 8},
                                  acodec="libopus", ar=SAMPLE_RATE, ac=1, **common))
    if mp4 is not None:
        mp4.parent.mkdir(parents=True, exist_ok=True)
        outs.append(ffmpeg.output(video, audio, str(mp4), vcodec="libx264", crf=12,
                                  preset="ultrafast", acodec="aac", ac=1, **common))
    ffmpeg.merge_outputs(*outs).global_args("-threads", "1").overwrite_output().run(
        input=frames.tobytes(), quiet=True)


def write_clip(out: Path, split: str, name: str, clip: Clip, *, mp4: bool = True,
               flow: bool = True) -> Path:
    """All files of one clip under ``out`` (see the module docstring); returns the WebM path."""
    cls = CLASSES[clip.label]
    webm = out / split / cls / f"{name}.webm"
    wav = out / "audio" / split / cls / f"{name}.wav"
    write_wav(wav, clip.audio)
    encode(clip.frames, wav, webm, webm.with_suffix(".mp4") if mp4 else None)
    truth = out / "truth" / split / cls / f"{name}.npz"
    truth.parent.mkdir(parents=True, exist_ok=True)
    np.savez(truth, label=clip.label, positions=clip.positions, radius=clip.radius,
             bounces=clip.bounces)
    if flow:
        write_flow(webm, out / "flow" / split / cls / f"{name}.npy")
    return webm


def _job(args: tuple[Path, str, str, int, int, int, int, bool]) -> None:
    out, split, name, label, seed, size, frames, mp4 = args
    rng = np.random.default_rng(seed)
    write_clip(out, split, name, render_clip(rng, label, size=size, frames=frames), mp4=mp4)


def synth_av(out: str | Path, *, train_per_class: int = 40, val_per_class: int = 10,
             size: int = 64, seconds: float = 2.0, seed: int = 0, workers: int | None = None,
             mp4: bool = True) -> Path:
    """Write the audio-visual set to ``out`` (in parallel over ``workers`` processes)."""
    out = Path(out)
    jobs: list[tuple[Path, str, str, int, int, int, int, bool]] = []
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for label, cls in enumerate(CLASSES):
            for i in range(n):
                item_seed = seed * 1_000_003 + len(jobs)
                jobs.append((out, split, f"{cls}_{i:04d}", label, item_seed, size,
                             int(round(seconds * FPS)), mp4))
    workers = workers or min(len(os.sched_getaffinity(0)), 8)
    if workers <= 1:
        for job in jobs:
            _job(job)
    else:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_job, jobs, chunksize=4))
    return out


def default_av_dataset() -> Path:
    """The embedded audio-visual set, generated once under ``$FASTSSL_HOME``."""
    return cached_dataset("av-v2", synth_av)

"""What both video loaders share: the clip spec, the host-side random draws and the per-video
facts (frame count, fps, sidecars).

Every random choice of a clip (temporal offset, crop window, flip, colour factors) is drawn on the
host from ``fastssl.seeding.generator(seed, epoch, item, rank)``, once per clip and view, and
applied to all its frames; DALI and the fallback receive the same draws, so a resumed epoch
starts anywhere without replay and the two loaders agree up to decoding and resampling.

Audio is aligned to view 0: the window starts at the clip's first frame time and lasts
``frames * stride / fps`` seconds. Flow is read at view 0's frames (entry i is the flow from
frame ``start + i * stride`` to the next one; the last stored flow where the video ends) and
takes view 0's crop and flip (dx negated), in px of the resized crop, so the RGB clip and its
flow show the same place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import torch

from fastssl.config import Config
from fastssl.data.layout import Split

SAMPLE_RATE = 16_000
# log-mel features: 25 ms windows every 10 ms, 40 mel bands (the usual speech/AV front end)
N_FFT = 400
HOP = 160
N_MELS = 40
MIN_POWER = 1e-8  # -80 dB floor before the log
BRIGHTNESS = CONTRAST = SATURATION = (0.6, 1.4)  # multiplicative colour factors per clip


@dataclass(frozen=True)
class ClipSpec:
    frames: int = 8  # T
    stride: int = 2  # frames skipped between the clip's frames + 1
    scale: tuple[float, float] = (0.3, 1.0)  # crop area range
    flip_p: float = 0.5
    jitter: bool = True  # brightness / contrast / saturation factors
    audio: bool = True  # deliver ``audio`` when the set has WAV sidecars
    flow: bool = True  # deliver ``flow`` when the set has flow sidecars

    @property
    def span(self) -> int:
        """Source frames a clip covers."""
        return (self.frames - 1) * self.stride + 1


def clip_spec(cfg: Config, **overrides) -> ClipSpec:
    """The clip spec of a run's config (``clip_frames``, ``clip_stride``)."""
    return ClipSpec(frames=cfg.clip_frames, stride=cfg.clip_stride, **overrides)


@dataclass(frozen=True)
class ClipDraw:
    """One clip's random choices (applied to all its frames)."""

    start: int  # first frame
    roi: tuple[float, float, float, float]  # crop window (y0, x0, y1, x1), relative
    flip: bool
    colour: tuple[float, float, float]  # brightness, contrast, saturation factors


def _u(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen))


def draw_clip(gen: torch.Generator, n_frames: int, spec: ClipSpec, *, train: bool = True,
              aspect: float = 1.0) -> ClipDraw:
    """A random clip (train) or the centre clip over the whole frame (evaluation). ``aspect``:
    the video's width / height, so a square crop is square in pixels."""
    last = max(0, n_frames - spec.span)
    if not train:
        return ClipDraw(last // 2, (0.0, 0.0, 1.0, 1.0), False, (1.0, 1.0, 1.0))
    start = int(torch.randint(last + 1, (), generator=gen))
    area = _u(gen, *spec.scale)
    h = min(1.0, math.sqrt(area * aspect))
    w = min(1.0, area / h)
    y0, x0 = _u(gen, 0, 1 - h), _u(gen, 0, 1 - w)
    flip = float(torch.rand((), generator=gen)) < spec.flip_p
    colour = ((_u(gen, *BRIGHTNESS), _u(gen, *CONTRAST), _u(gen, *SATURATION))
              if spec.jitter else (1.0, 1.0, 1.0))
    return ClipDraw(start, (y0, x0, y0 + h, x0 + w), flip, colour)


def crop_box(roi: tuple[float, float, float, float], h: int, w: int) -> tuple[int, int, int, int]:
    """``roi`` (relative) in whole pixels of an ``h`` x ``w`` frame: (top, left, height, width)."""
    y0, x0, y1, x1 = roi
    top, left = round(y0 * h), round(x0 * w)
    return top, left, max(1, round(y1 * h) - top), max(1, round(x1 * w) - left)


def audio_window(start_frame: int, spec: ClipSpec, fps: float) -> tuple[int, int]:
    """(first sample, number of samples) of the audio under a clip starting at ``start_frame``."""
    return (round(start_frame / fps * SAMPLE_RATE),
            round(spec.frames * spec.stride / fps * SAMPLE_RATE))


def flow_indices(start_frame: int, spec: ClipSpec, n_flow: int) -> list[int]:
    return [min(start_frame + i * spec.stride, n_flow - 1) for i in range(spec.frames)]


def sidecar(video: Path, kind: str, suffix: str) -> Path:
    """``DIR/<kind>/<split>/<class>/<clip><suffix>`` of ``DIR/<split>/<class>/<clip>.<ext>``."""
    return video.parents[2] / kind / video.parent.parent.name / video.parent.name / \
        (video.stem + suffix)


def has_sidecars(split: Split, kind: str) -> bool:
    return bool(split.paths) and sidecar(split.paths[0], kind, "").parent.parent.is_dir()


@dataclass(frozen=True)
class VideoInfo:
    frames: int  # 0 = unreadable
    fps: float
    width: int
    height: int


def probe(path: Path) -> VideoInfo:
    """Frame count, fps and size from the container (OpenCV; no decoding). A file OpenCV cannot
    open or that reports no frames gets ``frames = 0``."""
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return VideoInfo(0, 0.0, 0, 0)
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        ok = n > 0 and cap.read()[0]
        return VideoInfo(n if ok else 0, float(cap.get(cv2.CAP_PROP_FPS)) or 1.0,
                         int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                         int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    finally:
        cap.release()

"""Video loaders: the part both share (:class:`VideoLoaderBase`: probing, bad files, epoch order,
draws) and the fallback without DALI (:class:`FallbackVideoLoader`: FFmpeg frames, torchvision
crops, torchaudio log-mel, flow sidecars), plus the evaluation loader (centre clips).

Batch names: ``clips`` (one (B, 3, T, S, S) float tensor per view, normalised like images),
``audio`` (B, 1, N_MELS, frames) log-mel dB aligned to view 0, ``flow`` (B, 2, T, S, S) px at the
crop's scale, read from the precomputed sidecars, and ``labels``. See ``clips.py`` for the
alignment rules.

Frame decoder of the fallback: FFmpeg (through ffmpeg-python) with exact YUV -> RGB rounding, so
it agrees with DALI's CPU decoder (``fastssl.data.video.read_frames``). OpenCV's VideoCapture is
faster per file but its colour conversion differs from DALI's by 38.8 dB PSNR (above the 40 dB
agreement target); torchcodec is not installed in this environment.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchaudio
from torch.nn import functional as nnf
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2 import functional as F

from fastssl.batch import Batch
from fastssl.data.layout import Split
from fastssl.data.video import dequantise_flow, read_frames
from fastssl.pipelines.batches import epoch_batches
from fastssl.pipelines.clips import (
    HOP,
    MIN_POWER,
    N_FFT,
    N_MELS,
    SAMPLE_RATE,
    ClipDraw,
    ClipSpec,
    VideoInfo,
    audio_window,
    crop_box,
    draw_clip,
    flow_indices,
    probe,
    sidecar,
)
from fastssl.pipelines.loader import LoaderSpec
from fastssl.pipelines.views import MEAN, STD
from fastssl.seeding import generator

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    index: int  # into the split (after replacing unreadable files)
    label: int
    draws: tuple[ClipDraw, ...]  # one per view; view 0 carries the audio and flow


class VideoLoaderBase:
    """Everything but the decoding: probing, unreadable files, epoch order and random draws."""

    def __init__(self, spec: LoaderSpec) -> None:
        if spec.clip is None:
            raise ValueError("a video loader needs LoaderSpec.clip")
        self.spec, self.clip, self.split = spec, spec.clip, spec.split
        self.size, self.n_views = spec.views[0].size, len(spec.views)
        self.audio, self.flow = "audio" in spec.provides, "flow" in spec.provides
        self.infos: list[VideoInfo] = [probe(p) for p in self.split.paths]
        self._bad: set[int] = set()
        for i, info in enumerate(self.infos):
            if info.frames == 0:
                self.mark_bad(i)
        self.batches_per_epoch = len(epoch_batches(len(self.split), spec.batch_size,
                                                   seed=spec.seed, epoch=0, rank=spec.rank,
                                                   world=spec.world))

    def __len__(self) -> int:
        return self.batches_per_epoch

    @property
    def corrupt_count(self) -> int:
        return len(self._bad)

    @property
    def pipelines(self) -> list:
        return []

    def mark_bad(self, i: int) -> None:
        if i not in self._bad:
            self._bad.add(i)
            log.warning("skipping unreadable video %s; replaced by the next readable one",
                        self.split.paths[i])

    def readable(self, i: int) -> int:
        n = len(self.split)
        for offset in range(n):
            if (i + offset) % n not in self._bad:
                return (i + offset) % n
        raise RuntimeError(f"no readable video in {self.split.paths[0].parent.parent}")

    def samples(self, epoch: int, start_batch: int = 0) -> list[list[Sample]]:
        """This process's batches ``start_batch ..`` of ``epoch`` with every clip's draws."""
        s = self.spec
        out = []
        for batch in epoch_batches(len(self.split), s.batch_size, seed=s.seed, epoch=epoch,
                                   rank=s.rank, world=s.world)[start_batch:]:
            row = []
            for item in batch:
                i = self.readable(item)
                info, gen = self.infos[i], generator(s.seed, epoch, item, s.rank)
                draws = tuple(draw_clip(gen, info.frames, self.clip,
                                        aspect=info.width / max(info.height, 1))
                              for _ in range(self.n_views))
                row.append(Sample(i, self.split.labels[i], draws))
            out.append(row)
        return out


# -- the fallback ------------------------------------------------------------------------------
def clip_tensor(frames: np.ndarray, draw: ClipDraw, spec: ClipSpec, size: int) -> torch.Tensor:
    """One clip (3, T, size, size) float, normalised: ``draw``'s frames, crop, flip and colour."""
    n, h, w = frames.shape[:3]
    idx = [min(draw.start + i * spec.stride, n - 1) for i in range(spec.frames)]
    x = torch.from_numpy(np.ascontiguousarray(frames[idx])).permute(0, 3, 1, 2)
    x = F.resized_crop(x, *crop_box(draw.roi, h, w), [size, size], antialias=True)
    if draw.flip:
        x = F.horizontal_flip(x)
    b, c, s = draw.colour
    if (b, c, s) != (1.0, 1.0, 1.0):
        x = F.adjust_saturation(F.adjust_contrast(F.adjust_brightness(x, b), c), s)
    x = F.normalize(x.float().div_(255), list(MEAN), list(STD))
    return x.permute(1, 0, 2, 3)


def read_wav(path: Path) -> np.ndarray:
    """16-bit PCM WAV -> float32 mono in [-1, 1] (the sidecars are 16 kHz mono)."""
    with wave.open(str(path), "rb") as f:
        if f.getsampwidth() != 2 or f.getframerate() != SAMPLE_RATE:
            raise ValueError(f"{path}: expected 16-bit {SAMPLE_RATE} Hz PCM")
        pcm = np.frombuffer(f.readframes(f.getnframes()), "<i2").reshape(-1, f.getnchannels())
    return pcm.mean(1, dtype=np.float32) / 32768.0


_MEL = torchaudio.transforms.MelSpectrogram(
    sample_rate=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS, power=2.0,
    center=True, pad_mode="reflect", norm="slaney", mel_scale="slaney")


def log_mel(audio: np.ndarray, start: int, length: int) -> torch.Tensor:
    """(1, N_MELS, frames) dB of the window [start, start + length), zero-padded past the end."""
    window = np.zeros(length, np.float32)
    part = audio[start:start + length]
    window[:len(part)] = part
    mel = _MEL(torch.from_numpy(window))
    return (10 * mel.clamp_min(MIN_POWER).log10())[None]


def flow_tensor(q: np.ndarray, draw: ClipDraw, spec: ClipSpec, size: int) -> torch.Tensor:
    """(2, T, size, size) flow at ``draw``'s frames, crop and flip, in px of the resized crop."""
    x = torch.from_numpy(dequantise_flow(q[flow_indices(draw.start, spec, len(q))]))
    x = x.permute(0, 3, 1, 2)  # (T, 2, H, W)
    top, left, h, w = crop_box(draw.roi, x.shape[2], x.shape[3])
    x = nnf.interpolate(x[..., top:top + h, left:left + w], size=(size, size), mode="bilinear",
                        align_corners=False)
    x = x * torch.tensor([size / w, size / h]).view(1, 2, 1, 1)
    if draw.flip:
        x = x.flip(-1) * torch.tensor([-1.0, 1.0]).view(1, 2, 1, 1)
    return x.permute(1, 0, 2, 3)


class _Clips(Dataset):
    """One epoch's samples; a file that fails to decode is counted and replaced by the next
    readable one of the split (in this worker and every later batch)."""

    def __init__(self, loader: FallbackVideoLoader, samples: list[Sample]) -> None:
        self.loader, self.samples = loader, samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        sample, ld = self.samples[k], self.loader
        i = sample.index
        for _ in range(len(ld.split)):
            try:
                return ld.load(i, sample)
            except (ValueError, OSError) as e:
                log.warning("skipping unreadable video %s (%s)", ld.split.paths[i], e)
                with ld.decode_failures.get_lock():
                    ld.decode_failures.value += 1
                i = (i + 1) % len(ld.split)
        raise RuntimeError(f"no readable video in {ld.split.paths[0].parent.parent}")


class FallbackVideoLoader(VideoLoaderBase):
    """Clips without DALI: a torch DataLoader (``workers`` processes) over FFmpeg-decoded frames."""

    def __init__(self, spec: LoaderSpec) -> None:
        super().__init__(spec)
        self.decode_failures = mp.Value("i", 0)  # counted across worker processes

    @property
    def corrupt_count(self) -> int:
        return len(self._bad) + self.decode_failures.value

    def load(self, i: int, sample: Sample) -> dict[str, torch.Tensor]:
        path, info = self.split.paths[i], self.infos[i]
        frames = read_frames(path, (info.width, info.height))
        out = {f"clip{v}": clip_tensor(frames, d, self.clip, self.size)
               for v, d in enumerate(sample.draws)}
        first = sample.draws[0].start
        if self.audio:
            start, length = audio_window(first, self.clip, info.fps)
            out["audio"] = log_mel(read_wav(sidecar(path, "audio", ".wav")), start, length)
        if self.flow:
            q = np.load(sidecar(path, "flow", ".npy"), mmap_mode="r")
            out["flow"] = flow_tensor(q, sample.draws[0], self.clip, self.size)
        out["labels"] = torch.tensor(self.split.labels[i])
        return out

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        rows = self.samples(epoch, start_batch)
        flat = [s for row in rows for s in row]
        dl = DataLoader(_Clips(self, flat), batch_size=self.spec.batch_size,
                        num_workers=self.spec.workers, persistent_workers=False)
        for d in dl:
            yield to_batch(d, self.n_views)


def to_batch(d: dict[str, torch.Tensor], n_views: int) -> Batch:
    batch: Batch = {"clips": [d[f"clip{v}"] for v in range(n_views)],
                    "labels": d["labels"].reshape(-1).long()}
    if "audio" in d:
        batch["audio"] = d["audio"]
    if "flow" in d:
        batch["flow"] = d["flow"]
    return batch


# -- evaluation ----------------------------------------------------------------------------
class _EvalClips(Dataset):
    def __init__(self, split: Split, spec: ClipSpec, size: int) -> None:
        self.split, self.spec, self.size = split, spec, size

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        frames = read_frames(self.split.paths[i])
        draw = draw_clip(torch.Generator(), len(frames), self.spec, train=False)
        return clip_tensor(frames, draw, self.spec, self.size), self.split.labels[i]


def eval_clip_loader(split: Split, spec: ClipSpec, size: int, *, batch_size: int = 64,
                     workers: int = 2) -> DataLoader:
    """Batches of ``(centre clips (B, 3, T, S, S), labels)`` for evaluation."""
    return DataLoader(_EvalClips(split, spec, size), batch_size=batch_size, num_workers=workers)

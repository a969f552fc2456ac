"""The DALI video loader: clips, audio and flow from one pipeline per epoch.

The host feeds each sample through ``fn.external_source`` (the encoded video, its WAV sidecar,
its quantised flow slice and the draws of ``clips.py``), so the order, sharding, resume and the
random choices are exactly the fallback's; DALI does the work: video decoding (libavcodec VP9 on
the CPU, NVDEC on CUDA where the ``.mp4`` beside each ``.webm`` is read), one crop / flip / colour
per clip applied to all its frames, audio decoding, slicing to the clip's span, spectrogram, mel
filter bank and dB, and flow resizing. DALI's ``optical_flow`` (NVOFA) is not used: the flow
comes from the precomputed sidecars (``fastssl data prepare-video --flow``).

Unreadable videos are found by the probe before the first epoch (``VideoLoaderBase``), counted
and replaced; a file that probes fine but fails inside DALI's decoder stops the epoch with DALI's
error (the fallback loader replaces those too).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from nvidia.dali import fn, pipeline_def, types
from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

from fastssl.batch import Batch
from fastssl.data.video import FLOW_SCALE, FLOW_ZERO
from fastssl.pipelines.clips import (
    HOP,
    MIN_POWER,
    N_FFT,
    N_MELS,
    SAMPLE_RATE,
    ClipDraw,
    audio_window,
    flow_indices,
    sidecar,
)
from fastssl.pipelines.loader import LoaderSpec
from fastssl.pipelines.video import Sample, VideoLoaderBase, to_batch
from fastssl.pipelines.views import MEAN, STD

log = logging.getLogger(__name__)


def _draw_arrays(d: ClipDraw) -> list[np.ndarray]:
    y0, x0, y1, x1 = d.roi
    b, c, s = d.colour
    return [np.array(d.start, np.int32), np.array([y0, x0], np.float32),
            np.array([y1, x1], np.float32), np.array(d.flip, np.int32),
            np.array(b, np.float32), np.array(c, np.float32), np.array(s, np.float32)]


def augment_clip(encoded, draw: list, *, frames: int, stride: int, size: int, device: str):
    """Decode ``frames`` frames from ``draw``'s start with ``stride``; crop the draw's window,
    resize, colour, flip and normalise: (3, T, size, size) float (layout CFHW)."""
    start, roi_start, roi_end, flip, brightness, contrast, saturation = draw
    video = fn.decoders.video(encoded, device=device, start_frame=start, sequence_length=frames,
                              stride=stride, pad_mode="edge")
    video = fn.resize(video, size=(size, size), roi_start=roi_start, roi_end=roi_end,
                      roi_relative=True, antialias=True)
    # torchvision's order: brightness, contrast (around the mean grey of each frame), saturation
    video = fn.brightness_contrast(video, brightness=brightness)
    grey = fn.reductions.mean(fn.color_space_conversion(video, image_type=types.RGB,
                                                        output_type=types.GRAY), axes=[1, 2, 3])
    video = fn.brightness_contrast(video, contrast=contrast, contrast_center=grey)
    video = fn.hsv(video, saturation=saturation)
    return fn.crop_mirror_normalize(video, mirror=flip, dtype=types.FLOAT, output_layout="CFHW",
                                    mean=[255 * m for m in MEAN], std=[255 * s for s in STD])


def log_mel(wav, start, length, *, gpu: bool):
    """(1, N_MELS, frames) dB of the window [start, start + length) of a WAV (zero-padded);
    decoding is CPU-only in DALI, the rest runs on the GPU when ``gpu`` (beside the video)."""
    audio, _ = fn.decoders.audio(wav, dtype=types.FLOAT, downmix=True)
    audio = fn.slice(audio, start, length, axes=[0], out_of_bounds_policy="pad")
    if gpu:
        audio = audio.gpu()
    spec = fn.spectrogram(audio, nfft=N_FFT, window_length=N_FFT, window_step=HOP, power=2,
                          center_windows=True, reflect_padding=True, layout="ft")
    mel = fn.mel_filter_bank(spec, sample_rate=SAMPLE_RATE, nfilter=N_MELS, normalize=True,
                             mel_formula="slaney")
    db = fn.to_decibels(mel, multiplier=10.0, reference=1.0,
                        cutoff_db=float(10 * np.log10(MIN_POWER)))
    return fn.expand_dims(db, axes=[0], new_axis_names="C")


def resize_flow(q, scale, draw: list, size: int, *, gpu: bool):
    """Quantised (T, H, W, 2) flow -> (2, T, size, size) with view 0's crop and flip, in px of
    the resized crop (``scale``: per-sample (sx, sy), sx negated for a flipped clip)."""
    _, roi_start, roi_end, flip = draw[:4]
    q = q.gpu() if gpu else q
    flow = (fn.cast(q, dtype=types.FLOAT) - FLOW_ZERO) * (1.0 / FLOW_SCALE)
    flow = fn.resize(flow, size=(size, size), roi_start=roi_start, roi_end=roi_end,
                     roi_relative=True, antialias=False)
    flow = fn.flip(flow, horizontal=flip) * scale
    return fn.transpose(flow, perm=[3, 0, 1, 2], output_layout="CFHW")


@pipeline_def
def video_pipeline(source, *, views: int, frames: int, stride: int, size: int, audio: bool,
                   flow: bool, device: str):
    """External source (see the module docstring) -> ``clip0 .. clipV-1, [audio], [flow],
    labels``."""
    n_out = 2 + 7 * views + (3 if audio else 0) + (2 if flow else 0)
    layouts = ["", ""] + [""] * 7 * views + (["", "", ""] if audio else []) \
        + (["FHWC", ""] if flow else [])
    data = list(fn.external_source(source=source, num_outputs=n_out, batch=False,
                                   layout=layouts))
    encoded, label = data[0], data[1]
    out = [augment_clip(encoded, data[2 + 7 * v: 9 + 7 * v], frames=frames, stride=stride,
                        size=size, device=device) for v in range(views)]
    rest = data[2 + 7 * views:]
    if audio:
        out.append(log_mel(*rest[:3], gpu=device == "mixed"))
        rest = rest[3:]
    if flow:
        out.append(resize_flow(rest[0], rest[1], data[2:9], size, gpu=device == "mixed"))
    return (*out, label)


class DaliVideoLoader(VideoLoaderBase):
    """Clips from DALI (see the module docstring)."""

    def __init__(self, spec: LoaderSpec) -> None:
        super().__init__(spec)
        self.cuda = spec.device_type == "cuda"
        self._pipelines: list[Any] = []
        if self.cuda and self.flow:
            log.info("flow: precomputed sidecars (DALI optical_flow on NVOFA is not wired in)")

    @property
    def pipelines(self) -> list[Any]:
        return self._pipelines

    def _video_file(self, path: Path) -> Path:
        mp4 = path.with_suffix(".mp4")  # NVDEC reads H.264; the CPU decoder VP9 only
        return mp4 if self.cuda and mp4.exists() else path

    def _sample(self, s: Sample) -> list[np.ndarray]:
        path, info = self.split.paths[s.index], self.infos[s.index]
        out: list[np.ndarray] = [np.fromfile(self._video_file(path), np.uint8),
                                 np.array(s.label, np.int64)]
        for d in s.draws:
            out += _draw_arrays(d)
        first = s.draws[0]
        if self.audio:
            start, length = audio_window(first.start, self.clip, info.fps)
            out += [np.fromfile(sidecar(path, "audio", ".wav"), np.uint8),
                    np.array([start], np.int32), np.array([length], np.int32)]
        if self.flow:
            q = np.load(sidecar(path, "flow", ".npy"), mmap_mode="r")
            y0, x0, y1, x1 = first.roi
            sx, sy = self.size / ((x1 - x0) * q.shape[2]), self.size / ((y1 - y0) * q.shape[1])
            out += [np.ascontiguousarray(q[flow_indices(first.start, self.clip, len(q))]),
                    np.array([-sx if first.flip else sx, sy], np.float32)]
        return out

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[Batch]:
        flat = [s for row in self.samples(epoch, start_batch) for s in row]

        def source(info: Any) -> list[np.ndarray]:
            if info.idx_in_epoch >= len(flat):
                raise StopIteration
            return self._sample(flat[info.idx_in_epoch])

        pipe = video_pipeline(source, views=self.n_views, frames=self.clip.frames,
                              stride=self.clip.stride, size=self.size, audio=self.audio,
                              flow=self.flow, device="mixed" if self.cuda else "cpu",
                              batch_size=self.spec.batch_size,
                              num_threads=max(1, self.spec.workers),
                              device_id=torch.cuda.current_device() if self.cuda else None,
                              prefetch_queue_depth=2, exec_dynamic=True)
        self._pipelines = [pipe]
        names = [f"clip{v}" for v in range(self.n_views)] + \
            (["audio"] if self.audio else []) + (["flow"] if self.flow else []) + ["labels"]
        it = DALIGenericIterator(pipe, names, auto_reset=False,
                                 last_batch_policy=LastBatchPolicy.DROP)
        for out in it:
            yield to_batch(out[0], self.n_views)

"""Precomputed flow (accuracy, storage format) and ``prepare-video`` (resume, failures)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from fastssl.data.av import encode, write_wav
from fastssl.data.video import (
    FLOW_SCALE,
    dequantise_flow,
    prepare_videos,
    quantise_flow,
    read_frames,
    write_flow,
)


def test_quantisation_round_trip_and_range():
    flow = np.array([[-20.0, -16.0, -0.03, 0.0, 0.06, 3.3, 15.875, 40.0]], np.float32)
    back = dequantise_flow(quantise_flow(flow))
    np.testing.assert_allclose(back, [[-16, -16, 0, 0, 0.0625 * 1, 3.25, 15.875, 15.875]],
                               atol=1 / FLOW_SCALE / 2 + 1e-6)


def _translating(tmp_path, dx: int, dy: int, frames: int = 6, size: int = 64):
    """A smooth random texture moving by (dx, dy) px per frame, encoded to VP9."""
    rng = np.random.default_rng(0)
    big = rng.uniform(0, 255, (size // 4 + 8, size // 4 + 8, 3)).astype(np.float32)
    import cv2

    tex = cv2.resize(big, (4 * big.shape[1], 4 * big.shape[0]), interpolation=cv2.INTER_CUBIC)
    tex = np.clip(tex, 0, 255).astype(np.uint8)
    video = np.stack([np.roll(tex, (t * dy, t * dx), axis=(0, 1))[:size, :size]
                      for t in range(frames)])
    wav = tmp_path / "a.wav"
    write_wav(wav, np.zeros(frames * 1000, np.float32))
    path = tmp_path / "train" / "c" / "v.webm"
    encode(video, wav, path, None)
    return path


def test_precomputed_flow_of_a_translating_pattern(tmp_path):
    path = _translating(tmp_path, 2, -1)
    out = tmp_path / "flow.npy"
    write_flow(path, out)
    flow = dequantise_flow(np.load(out))
    inner = flow[:, 12:-12, 12:-12]  # borders: pixels entering the frame have no match
    epe = np.linalg.norm(inner - np.array([2.0, -1.0]), axis=-1).mean()
    assert epe < 0.5, epe


def _sources(root, n: int):
    rng = np.random.default_rng(1)
    for i in range(n):
        video = rng.integers(0, 255, (8, 48, 64, 3), dtype=np.uint8)
        wav = root / f"{i}.wav"
        write_wav(wav, rng.normal(0, 0.1, 8000).astype(np.float32))
        encode(video, wav, None, root / "cls" / f"v{i}.mp4", fps=16)
        wav.unlink()


def test_prepare_video_outputs_failures_and_skips(tmp_path):
    src = tmp_path / "src"
    _sources(src, 2)
    (src / "cls" / "broken.mp4").write_bytes(b"not a video")
    out = tmp_path / "out"
    done, skipped, failed = prepare_videos(src, out, size=32, flow=True, workers=2,
                                           progress=False)
    assert (done, skipped, failed) == (2, 0, 1)
    frames = read_frames(out / "train" / "cls" / "v0.webm")
    assert frames.shape[1:] == (32, 42, 3)  # short side 32, aspect kept (even width)
    assert (out / "audio" / "train" / "cls" / "v0.wav").is_file()
    assert np.load(out / "flow" / "train" / "cls" / "v0.npy").shape == (7, 32, 42, 2)
    assert prepare_videos(src, out, size=32, flow=True, workers=2, progress=False) == (0, 2, 1)


@pytest.mark.timeout(120)
def test_prepare_video_resumes_after_being_killed(tmp_path):
    src = tmp_path / "src"
    _sources(src, 4)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "fastssl.cli", "data", "prepare-video", str(src), str(out),
           "--size", "32", "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)

    def finished() -> set[str]:
        return {p.name for p in out.rglob("*.webm") if not p.name.startswith(".")}

    deadline = time.time() + 60
    while time.time() < deadline and not finished():
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = finished()
    assert 1 <= len(first) < 4
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    assert f"prepared {4 - len(first)} videos" in done.stdout
    assert f"({len(first)} already done, 0 failed)" in done.stdout
    final = sorted(p.name for p in out.rglob("*.webm"))
    assert final == [f"v{i}.webm" for i in range(4)]  # no half-written leftovers
    for name in final:
        assert read_frames(out / "train" / "cls" / name).shape[0] == 8

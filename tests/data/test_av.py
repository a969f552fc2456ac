"""The synthetic audio-visual set: exact trajectories, sound on the bounces, encoded files."""

from __future__ import annotations

import numpy as np

from fastssl.data.av import CLASSES, FPS, MOTIONS, SAMPLE_RATE, render_clip, trajectory
from fastssl.data.layout import scan
from fastssl.data.video import read_frames


def test_trajectory_is_exact_and_bounces_inside():
    rng = np.random.default_rng(3)
    pos, bounces = trajectory(rng, (5, 0), 32, 64, 8)
    assert pos.min() >= 8 and pos.max() <= 64 - 1 - 8
    step = np.diff(pos, axis=0)
    assert set(np.abs(step[:, 0]).tolist()) <= {5.0, *range(5)} and not step[:, 1].any()
    # away from the walls the velocity is constant; it flips sign exactly at the bounces
    signs = np.sign(step[:, 0])
    flips = [t for t in range(1, len(signs)) if signs[t] != signs[t - 1]]
    assert bounces and set(flips) <= {b for b in bounces} | {b - 1 for b in bounces}


def test_audio_onsets_are_the_bounce_times():
    rng = np.random.default_rng(0)
    clip = render_clip(rng, label=6)  # "fast": several bounces in 2 s
    assert len(clip.bounces) >= 2
    hop = SAMPLE_RATE // 100  # 10 ms energy frames
    energy = (clip.audio[: len(clip.audio) // hop * hop].reshape(-1, hop) ** 2).mean(1)
    onsets = np.flatnonzero((energy[1:] > 0.01) & (energy[:-1] <= 0.01)) + 1
    expected = clip.bounces / FPS * 100
    assert len(onsets) == len(clip.bounces)
    assert np.abs(onsets - expected).max() <= 1


def test_classes_combine_motion_sound_and_shape():
    assert len(CLASSES) == 2 * len(MOTIONS) == len(set(CLASSES))
    pitches = [m[2] for m in MOTIONS]
    assert len(set(pitches)) == len(pitches)


def test_tiny_set_layout_and_decoded_frames(tiny_av):
    index = scan(tiny_av)
    assert len(index.train) == len(index.val) == len(CLASSES)
    clip = index.train.paths[0]
    assert clip.suffix == ".webm"
    rel = clip.relative_to(tiny_av / "train")
    for kind, ext in (("audio", ".wav"), ("truth", ".npz"), ("flow", ".npy")):
        assert (tiny_av / kind / "train" / rel).with_suffix(ext).is_file()
    truth = np.load((tiny_av / "truth" / "train" / rel).with_suffix(".npz"))
    assert CLASSES[int(truth["label"])] == index.classes[index.train.labels[0]]
    frames = read_frames(clip)
    assert frames.shape == (2 * FPS, 64, 64, 3) and frames.dtype == np.uint8
    # the object is where the truth says: its centre pixel differs from the background median
    cx, cy = truth["positions"][5].astype(int)
    background = np.median(frames[5].reshape(-1, 3), axis=0)
    assert np.abs(frames[5, cy, cx].astype(float) - background).sum() > 30

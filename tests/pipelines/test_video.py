"""The video loaders: shapes of every modality, one crop per clip, audio under the clip, corrupt
files skipped, DALI CPU agreeing with the FFmpeg fallback."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from fastssl.data.av import FPS, encode, write_wav
from fastssl.data.layout import scan
from fastssl.pipelines import dali_available
from fastssl.pipelines.clips import HOP, SAMPLE_RATE, ClipSpec
from fastssl.pipelines.loader import LoaderSpec
from fastssl.pipelines.video import FallbackVideoLoader
from fastssl.pipelines.views import MEAN, STD, view_specs

LOADERS = [FallbackVideoLoader]
if dali_available():
    from fastssl.pipelines.video_dali import DaliVideoLoader

    LOADERS.append(DaliVideoLoader)
needs_dali = pytest.mark.skipif(not dali_available(), reason="needs nvidia-dali")


DEFAULT_CLIP = ClipSpec()


def spec_for(root, *, views=2, size=32, clip=DEFAULT_CLIP, batch=4):
    vs = tuple(view_specs("simclr", crop_size=size, global_crops=views, global_scale=(0.3, 1.0)))
    return LoaderSpec(scan(root).train, vs, batch, workers=0, clip=clip)


def pixels(x: torch.Tensor) -> torch.Tensor:
    """Normalised (B, 3, T, H, W) clips back to 0..255."""
    return (x * torch.tensor(STD).view(1, 3, 1, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1, 1)) \
        * 255


@pytest.mark.parametrize("cls", LOADERS, ids=lambda c: c.__name__)
def test_every_modality_has_its_shape_and_dtype(tiny_av, cls):
    loader = cls(spec_for(tiny_av))
    assert len(loader) == 2
    batch = next(iter(loader.epoch(0)))
    assert len(batch["clips"]) == 2
    for clip in batch["clips"]:
        assert clip.shape == (4, 3, 8, 32, 32) and clip.dtype == torch.float32
    assert batch["audio"].shape == (4, 1, 40, 8 * 2 * SAMPLE_RATE // FPS // HOP + 1)
    assert batch["flow"].shape == (4, 2, 8, 32, 32) and batch["flow"].dtype == torch.float32
    assert batch["labels"].dtype == torch.int64
    # two views of one video differ (their own offset, crop, flip, colour)
    assert (batch["clips"][0] - batch["clips"][1]).abs().mean() > 0.1


def _write(root, cls, frames, audio):
    wav = root / "audio" / "train" / cls / "clip.wav"
    write_wav(wav, audio)
    encode(frames, wav, root / "train" / cls / "clip.webm", None)


@pytest.fixture(scope="module")
def static_and_flash(tmp_path_factory):
    """Two clips (classes 0 and 1): a static textured scene, and a dark scene with one white
    flash frame whose audio has one click at the flash's time."""
    root = tmp_path_factory.mktemp("sync")
    rng = np.random.default_rng(0)
    scene = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    _write(root, "a", np.repeat(scene[None], 32, 0),
           rng.normal(0, 0.01, 2 * SAMPLE_RATE).astype(np.float32))
    frames = np.full((32, 64, 64, 3), 20, np.uint8)
    frames[11] = 235
    audio = np.zeros(2 * SAMPLE_RATE, np.float32)
    click = round(11 / FPS * SAMPLE_RATE)
    audio[click:click + 80] = 0.9
    _write(root, "b", frames, audio)
    shutil.copytree(root / "train", root / "val")  # the layout needs a held-out split
    return root


@pytest.mark.parametrize("cls", LOADERS, ids=lambda c: c.__name__)
def test_all_frames_of_a_clip_share_one_crop(static_and_flash, cls):
    loader = cls(spec_for(static_and_flash, views=3, batch=2))
    batch = next(iter(loader.epoch(0)))
    static = [c[batch["labels"] == 0][0] for c in batch["clips"]]
    for clip in static:  # one crop, flip and colour for every frame of a clip
        assert (clip - clip[:, :1]).abs().max() < 0.1
    assert min((a - b).abs().mean() for a, b in [(static[0], static[1]), (static[1], static[2]),
                                                  (static[0], static[2])]) > 0.1


@pytest.mark.parametrize("cls", LOADERS, ids=lambda c: c.__name__)
def test_the_audio_window_matches_the_clip(static_and_flash, cls):
    clip = ClipSpec(frames=16, stride=1, scale=(1.0, 1.0), flip_p=0.0, jitter=False)
    loader = cls(spec_for(static_and_flash, views=1, batch=2, clip=clip))
    for epoch in range(3):  # several random temporal offsets
        batch = next(iter(loader.epoch(epoch)))
        k = int((batch["labels"] == 1).nonzero()[0])
        brightness = batch["clips"][0][k].mean(dim=(0, 2, 3))
        mel = batch["audio"][k, 0].mean(0)
        if brightness.max() < 1:  # this offset missed the flash: then the click is missed too
            assert mel.max() - mel.median() < 10
            continue
        flash_s = int(brightness.argmax()) / FPS
        click_s = int((mel[1:] - mel[:-1]).argmax() + 1) * HOP / SAMPLE_RATE
        assert abs(flash_s - click_s) <= 1 / FPS, (flash_s, click_s)


@pytest.mark.parametrize("cls", LOADERS, ids=lambda c: c.__name__)
def test_a_corrupt_video_is_a_counted_skip(tiny_av, tmp_path, cls):
    root = tmp_path / "av"
    shutil.copytree(tiny_av, root)
    victim = sorted((root / "train").rglob("*.webm"))[3]
    victim.write_bytes(victim.read_bytes()[:300])  # truncated: header only
    loader = cls(spec_for(root, batch=4))
    batches = list(loader.epoch(0))
    assert loader.corrupt_count == 1
    assert len(batches) == 2 and all(b["clips"][0].shape[0] == 4 for b in batches)


@needs_dali
def test_dali_cpu_and_the_fallback_decode_the_same_frames(tiny_av):
    clip = ClipSpec(frames=8, stride=3, scale=(1.0, 1.0), flip_p=0.0, jitter=False)
    spec = spec_for(tiny_av, views=1, size=64, clip=clip, batch=8)
    dali = next(iter(DaliVideoLoader(spec).epoch(0)))
    ref = next(iter(FallbackVideoLoader(spec).epoch(0)))
    assert torch.equal(dali["labels"], ref["labels"])
    mse = ((pixels(dali["clips"][0]) - pixels(ref["clips"][0])) ** 2).mean()
    psnr = 10 * torch.log10(255**2 / mse)
    assert psnr > 40, psnr
    torch.testing.assert_close(dali["flow"], ref["flow"], atol=1e-4, rtol=0)
    torch.testing.assert_close(dali["audio"], ref["audio"], atol=0.5, rtol=0)


def test_flow_takes_the_clips_crop_and_flip():
    from fastssl.data.video import quantise_flow
    from fastssl.pipelines.clips import ClipDraw
    from fastssl.pipelines.video import flow_tensor

    q = quantise_flow(np.tile(np.array([2.0, 1.0], np.float32), (5, 40, 64, 1)))
    draw = ClipDraw(1, (0.0, 0.5, 0.5, 1.0), True, (1.0, 1.0, 1.0))  # right-top quarter
    out = flow_tensor(q, draw, ClipSpec(frames=3, stride=1), 16)
    assert out.shape == (2, 3, 16, 16)
    # 2 px over a 32 px wide crop resized to 16 px is 1 px, flipped; 1 px over 20 px rows: 0.8
    torch.testing.assert_close(out[0], torch.full((3, 16, 16), -1.0))
    torch.testing.assert_close(out[1], torch.full((3, 16, 16), 0.8))

"""Session fixtures shared across test folders."""

from __future__ import annotations

import pytest

from fastssl.data.av import synth_av


@pytest.fixture(scope="session")
def tiny_av(tmp_path_factory):
    """The audio-visual set with one train and one val clip per class (16 clips, 2 s, 64 px,
    WebM + WAV + flow sidecars; no MP4)."""
    return synth_av(tmp_path_factory.mktemp("av") / "av", train_per_class=1, val_per_class=1,
                    workers=2, mp4=False)

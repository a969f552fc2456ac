"""Test-wide settings and session fixtures shared across test folders.

TRITON_INTERPRET must be set before triton is first imported, so Triton kernels run on CPU tensors
(the interpreter) when a test asks for backend="triton". It changes nothing else: on CPU tensors
the default backend is the PyTorch reference.
"""

import os

import pytest

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def tiny_av(tmp_path_factory):
    """The audio-visual set with one train and one val clip per class (16 clips, 2 s, 64 px,
    WebM + WAV + flow sidecars; no MP4)."""
    from fastssl.data.av import synth_av  # after the environment settings above

    return synth_av(tmp_path_factory.mktemp("av") / "av", train_per_class=1, val_per_class=1,
                    workers=2, mp4=False)

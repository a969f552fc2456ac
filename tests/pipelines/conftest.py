"""Small datasets for the pipeline tests (written once per session, tens of images)."""

from __future__ import annotations

import importlib.util

import pytest

from fastssl.data.synth import synth_shapes

HAS_DALI = importlib.util.find_spec("nvidia.dali") is not None
needs_dali = pytest.mark.skipif(not HAS_DALI, reason="nvidia.dali is not installed")


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory):
    """The shapes set with 8 train images per class (80), 32 px, exact masks."""
    return synth_shapes(tmp_path_factory.mktemp("shapes") / "shapes", train_per_class=8,
                        val_per_class=1, size=32)

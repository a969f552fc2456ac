"""Small datasets for the pipeline tests (written once per session, tens of images)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from fastssl.data.synth import synth_shapes

HAS_DALI = importlib.util.find_spec("nvidia.dali") is not None
needs_dali = pytest.mark.skipif(not HAS_DALI, reason="nvidia.dali is not installed")
# marks of a test (or a parameter) that runs DALI on the GPU: `pytest -m "gpu and dali"`, as
# benchmarks/gpu_suite.sh runs them once DALI is staged there
DALI_GPU = [pytest.mark.dali, needs_dali, pytest.mark.gpu,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory):
    """The shapes set with 8 train images per class (80), 32 px, exact masks."""
    return synth_shapes(tmp_path_factory.mktemp("shapes") / "shapes", train_per_class=8,
                        val_per_class=1, size=32)

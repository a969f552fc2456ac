"""Kernel tests run the Triton kernels in Triton's CPU interpreter, with NaN-poisoned outputs;
the ``gpu``-marked tests run the compiled kernels on CUDA tensors.

Both variables must be set before ``fastssl.kernels`` is first imported (the @triton.jit kernels
choose interpreter or compiler at import). Setting them here works when this directory is
collected first; a top-level ``tests/conftest.py`` doing the same makes it independent of order.

Where the kernels cannot run, the tests say so instead of skipping quietly: ``TRITON_INTERPRET=0``
on a machine without a GPU fails every interpreter test; a GPU test under the interpreter fails
(run ``TRITON_INTERPRET=0 python -m pytest -m gpu tests``).
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("FASTSSL_KERNELS_POISON", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from fastssl.kernels import dispatch  # noqa: E402

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items):
    # Triton's interpreter emits numpy deprecation / overflow warnings on masked lanes (the
    # values are discarded by the masks); keep them out of the report for these tests only.
    for item in items:
        if _HERE in Path(item.fspath).parents:
            item.add_marker(pytest.mark.filterwarnings("ignore::DeprecationWarning"))
            item.add_marker(pytest.mark.filterwarnings("ignore::RuntimeWarning"))


@pytest.fixture
def interpreter():
    """The Triton kernels on CPU tensors (the interpreter)."""
    if not dispatch.HAS_TRITON:
        pytest.skip("triton is not installed: only the torch backend exists")
    if dispatch.INTERPRET:
        return
    if torch.cuda.is_available():
        pytest.skip("TRITON_INTERPRET=0 on a GPU machine: these CPU-tensor tests need the "
                    "interpreter; the gpu-marked tests cover the compiled kernels")
    pytest.fail("TRITON_INTERPRET=0 was set on a machine without a GPU: the Triton kernels "
                "cannot run (unset it, or set TRITON_INTERPRET=1, before running the tests)")


@pytest.fixture
def cuda():
    """The compiled Triton kernels on a CUDA device."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (none visible to torch)")
    if not dispatch.HAS_TRITON or dispatch.INTERPRET:
        pytest.fail("the GPU kernel tests need compiled Triton: run them with TRITON_INTERPRET=0 "
                    "(tests/conftest.py sets 1 unless the variable is already set)")
    return torch.device("cuda")

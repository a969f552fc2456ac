"""Kernel tests run the Triton kernels in Triton's CPU interpreter, with NaN-poisoned outputs.

Both variables must be set before ``fastssl.kernels`` is first imported (the @triton.jit kernels
choose interpreter or compiler at import). Setting them here works when this directory is
collected first; a top-level ``tests/conftest.py`` doing the same makes it independent of order.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("FASTSSL_KERNELS_POISON", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items):
    # Triton's interpreter emits numpy deprecation / overflow warnings on masked lanes (the
    # values are discarded by the masks); keep them out of the report for these tests only.
    for item in items:
        if _HERE in Path(item.fspath).parents:
            item.add_marker(pytest.mark.filterwarnings("ignore::DeprecationWarning"))
            item.add_marker(pytest.mark.filterwarnings("ignore::RuntimeWarning"))

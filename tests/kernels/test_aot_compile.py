"""Every Triton kernel variant, specialised as at run time, compiles for sm_90 (no GPU needed)
without register spills and within the shared-memory budget (see aot_compile.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastssl.kernels import dispatch

pytestmark = pytest.mark.slow


@pytest.mark.skipif(not dispatch.HAS_TRITON, reason="needs triton")
def test_kernels_compile_for_hopper():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = Path(__file__).parents[2]
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    script = Path(__file__).with_name("aot_compile.py")
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

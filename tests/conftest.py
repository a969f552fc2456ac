"""Test-wide settings.

TRITON_INTERPRET must be set before triton is first imported, so Triton kernels run on CPU tensors
(the interpreter) when a test asks for backend="triton". It changes nothing else: on CPU tensors
the default backend is the PyTorch reference.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")

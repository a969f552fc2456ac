"""fastssl: high-throughput self-supervised pretraining for PyTorch.

Kept import-light on purpose: ``import fastssl.kernels`` must need only torch and triton.
"""

__version__ = "0.1.0"

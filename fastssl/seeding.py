"""One derivation of random seeds, shared by every loader and the epoch order.

A seed is a pure function of ``(seed, epoch, item, rank)``, so views do not depend on the worker
count, on where a resumed epoch starts, or on the global RNG (which no loader touches).
"""

from __future__ import annotations

import torch

# One large prime per level (epoch, item, rank): distinct inputs give distinct seeds for any
# realistic epoch count (< 1e6), item count (< 1e7) and world size (< 1e3).
_PRIMES = (1_000_003, 10_000_019, 1_009)


def derive_seed(seed: int, *parts: int) -> int:
    """``seed`` folded with up to three parts in the order (epoch, item, rank).

    ``derive_seed(s, e) = s * 1_000_003 + e``; each further part multiplies by the next prime and
    adds itself."""
    if len(parts) > len(_PRIMES):
        raise ValueError(f"derive_seed takes at most {len(_PRIMES)} parts, got {len(parts)}")
    value = seed
    for prime, part in zip(_PRIMES, parts, strict=False):
        value = value * prime + part
    return value


def generator(seed: int, *parts: int) -> torch.Generator:
    """A local CPU generator seeded with ``derive_seed(seed, *parts)``."""
    return torch.Generator().manual_seed(derive_seed(seed, *parts))

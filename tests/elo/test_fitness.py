"""The Zipf prior and the Zipf-KL fitness on hand-made clusterings."""

from __future__ import annotations

import math

import pytest
import torch

from fastssl.elo.fitness import cluster_distribution, kl_divergence, zipf_fitness, zipf_prior


def test_zipf_prior_is_the_normalised_power_law():
    q = zipf_prior(4, 1.0)
    h = 1 + 1 / 2 + 1 / 3 + 1 / 4
    torch.testing.assert_close(q, torch.tensor([1, 1 / 2, 1 / 3, 1 / 4], dtype=torch.float64) / h)
    assert zipf_prior(10, 2.0).sum().item() == pytest.approx(1.0)
    assert zipf_prior(5, 0.0).tolist() == [0.2] * 5  # s = 0: uniform


def test_kl_is_zero_for_equal_distributions_and_positive_otherwise():
    q = zipf_prior(6)
    assert kl_divergence(q, q) == pytest.approx(0.0, abs=1e-12)
    uniform = torch.full((6,), 1 / 6, dtype=torch.float64)
    assert kl_divergence(uniform, q) == pytest.approx(
        sum(1 / 6 * math.log((1 / 6) / qi) for qi in q.tolist()))
    assert kl_divergence(torch.tensor([1.0, 0, 0, 0, 0, 0]), q) == pytest.approx(
        -math.log(q[0].item()))


def test_cluster_distribution_is_the_sorted_mean_of_soft_assignments():
    centroids = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    x = torch.tensor([[10.0, 0.0], [10.0, 0.0], [10.0, 0.0], [0.0, 0.0]])
    p = cluster_distribution(x, centroids)
    torch.testing.assert_close(p, torch.tensor([0.75, 0.25], dtype=torch.float64))
    mid = cluster_distribution(torch.tensor([[5.0, 0.0]]), centroids)  # equidistant: halves
    torch.testing.assert_close(mid, torch.tensor([0.5, 0.5], dtype=torch.float64))


def clustering(sizes: list[int], spread: float = 20.0, seed: int = 0) -> torch.Tensor:
    """Well-separated Gaussian blobs with the given sizes (8-D)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(len(sizes), 8, generator=g) * spread
    return torch.cat([c + 0.1 * torch.randn(n, 8, generator=g)
                      for c, n in zip(centres, sizes, strict=True)])


def test_a_zipf_clustering_scores_better_than_uniform_and_a_single_cluster():
    k, n = 8, 800
    q = zipf_prior(k).tolist()
    zipf = clustering([max(1, round(n * qi)) for qi in q])
    uniform = clustering([n // k] * k)
    single = clustering([n])
    f_zipf, f_uniform, f_single = (zipf_fitness(x, k=k) for x in (zipf, uniform, single))
    assert f_zipf < 0.01
    assert f_zipf < f_uniform - 0.1
    assert f_zipf < f_single - 0.1

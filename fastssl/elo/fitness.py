"""ELo's unsupervised fitness: how far the cluster sizes of the embeddings are from Zipf's law.

k-means with ``k`` clusters on the embeddings of unlabelled clips; soft assignments
p(c|x) = softmax_c(-||x - c||^2) (equal-variance clusters with 2 sigma^2 = 1, as in the paper);
p(c) their mean over the clips, sorted in descending order; the Zipf prior
q(i) = i^-s / H(k, s); fitness = KL(p || q), lower is better. The raw embeddings are used, as in
the paper, so the softness of the assignments follows the embeddings' scale.
"""

from __future__ import annotations

import torch
from sklearn.cluster import KMeans

# The paper's exact k and s are not in our notes (docs/elo.md); s = 1 is Zipf's law itself and
# k is sized for a few hundred clips.
DEFAULT_K = 32
DEFAULT_S = 1.0


def zipf_prior(k: int, s: float = DEFAULT_S) -> torch.Tensor:
    """(k,) float64: q(i) = i^-s / H(k, s) for ranks i = 1..k (sums to 1)."""
    ranks = torch.arange(1, k + 1, dtype=torch.float64)
    w = ranks.pow(-s)
    return w / w.sum()


def cluster_distribution(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """(k,) float64: the mean over x (N, D) of p(c|x) = softmax(-||x - c||^2) over centroids
    (k, D), sorted in descending order."""
    d2 = torch.cdist(x.double(), centroids.double()).pow(2)
    return torch.softmax(-d2, dim=1).mean(0).sort(descending=True).values


def kl_divergence(p: torch.Tensor, q: torch.Tensor) -> float:
    """KL(p || q) in nats; terms with p = 0 contribute 0."""
    p, q = p.double(), q.double()
    mask = p > 0
    return float((p[mask] * (p[mask] / q[mask]).log()).sum())


def kmeans_centroids(x: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
    """(k, D) k-means centroids of x (N, D) (k-means++ start, best of 4); k is capped at N."""
    k = min(k, x.shape[0])
    km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(x.double().numpy())
    return torch.from_numpy(km.cluster_centers_)


def zipf_fitness(x: torch.Tensor, k: int = DEFAULT_K, s: float = DEFAULT_S,
                 seed: int = 0) -> float:
    """KL(p || q) of embeddings x (N, D): lower is better (see the module docstring)."""
    centroids = kmeans_centroids(x.detach().cpu(), k, seed)
    p = cluster_distribution(x.detach().cpu(), centroids)
    return kl_divergence(p, zipf_prior(len(p), s))

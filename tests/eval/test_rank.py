import pytest
import torch

from fastssl.eval.rank import effective_rank


def test_full_rank_features_use_every_dimension():
    feats = torch.eye(16).repeat(4, 1)  # 16 orthogonal directions, equal weight
    assert effective_rank(feats) == pytest.approx(16, rel=1e-4)


def test_collapsed_features_have_rank_one():
    line = torch.randn(100, 1) @ torch.randn(1, 32)
    assert effective_rank(line) == pytest.approx(1, rel=1e-3)


def test_rank_grows_with_the_dimensions_used():
    g = torch.Generator().manual_seed(0)
    low = torch.randn(500, 4, generator=g) @ torch.randn(4, 64, generator=g)
    high = torch.randn(500, 64, generator=g)
    assert effective_rank(low) < 4.5 < 40 < effective_rank(high)


def test_rejects_a_vector():
    with pytest.raises(ValueError, match="feats must be"):
        effective_rank(torch.ones(5))

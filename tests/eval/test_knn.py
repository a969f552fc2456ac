import torch

from fastssl.eval.knn import knn_top1
from fastssl.eval.linear import linear_top1


def _blobs(n, seed):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    centres = torch.eye(8)[:4] * 5
    return centres[labels] + torch.randn(n, 8, generator=g), labels


def test_knn_separable_and_random():
    train, test = _blobs(200, 0), _blobs(80, 1)
    assert knn_top1(*train, *test, k=20) == 100.0
    shuffled = (train[0], train[1][torch.randperm(200, generator=torch.Generator().manual_seed(2))])
    assert knn_top1(*shuffled, *test, k=20) < 50.0


def test_knn_caps_k_at_bank_size():
    train, test = _blobs(8, 0), _blobs(8, 1)
    assert knn_top1(*train, *test, k=200) >= 0


def test_linear_probe_separable():
    train, test = _blobs(200, 0), _blobs(80, 1)
    assert linear_top1(*train, *test, epochs=20) == 100.0

"""Wrong calls of the public losses fail up front with a ValueError naming the argument, on every
backend (the checks run before the backend is chosen, so no interpreter or GPU is needed)."""

from __future__ import annotations

import pytest
import torch

import fastssl.kernels as K

BACKENDS = ["torch", "triton"]
x8 = torch.randn(8, 16)


def _raises(match: str, fn, *args, **kwargs) -> None:
    with pytest.raises(ValueError, match=match):
        fn(*args, **kwargs)


@pytest.mark.parametrize("backend", BACKENDS)
class TestShapes:
    def test_barlow_widths_differ(self, backend):
        _raises(r"barlow_twins_loss: z2 must have the shape of z1 \(8, 16\), got \(8, 17\)",
                K.barlow_twins_loss, x8, torch.randn(8, 17), backend=backend)

    def test_info_nce_fewer_keys_than_queries(self, backend):
        _raises(r"info_nce: key must have the shape of query \(8, 16\), got \(7, 16\)",
                K.info_nce, x8, torch.randn(7, 16), backend=backend)

    def test_info_nce_queue_width(self, backend):
        _raises(r"info_nce: queue must have the query's 16 features, got shape \(20, 15\)",
                K.info_nce, x8, x8, torch.randn(20, 15), backend=backend)

    def test_nt_xent_views_differ(self, backend):
        _raises(r"nt_xent: z2 must have the shape of z1", K.nt_xent, x8, torch.randn(9, 16),
                backend=backend)

    def test_negative_cosine_shapes_differ(self, backend):
        _raises(r"negative_cosine: z must have the shape of p", K.negative_cosine, x8,
                torch.randn(8, 3), backend=backend)

    @pytest.mark.parametrize("fn", ["info_nce", "nt_xent", "barlow_twins_loss",
                                    "negative_cosine"])
    def test_one_dimensional(self, fn, backend):
        v = torch.randn(16)
        _raises(rf"{fn}: \w+ must be 2-D \(rows × features\), got shape \(16,\)",
                getattr(K, fn), v, v, backend=backend)

    def test_sinkhorn_one_dimensional(self, backend):
        _raises(r"sinkhorn_knopp: scores must be 2-D", K.sinkhorn_knopp, torch.randn(30),
                backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
class TestEmpty:
    @pytest.mark.parametrize("fn", ["info_nce", "nt_xent", "barlow_twins_loss",
                                    "negative_cosine"])
    def test_empty_batch(self, fn, backend):
        e = torch.randn(0, 16)
        _raises(rf"{fn}: \w+ is empty or too small, got shape \(0, 16\)", getattr(K, fn), e, e,
                backend=backend)

    def test_zero_features(self, backend):
        e = torch.randn(8, 0)
        _raises(r"info_nce: query is empty or too small, got shape \(8, 0\)", K.info_nce, e, e,
                backend=backend)

    def test_empty_queue(self, backend):
        _raises(r"info_nce: queue is empty", K.info_nce, x8, x8, torch.randn(0, 16),
                backend=backend)

    def test_barlow_single_sample(self, backend):
        one = torch.randn(1, 16)
        _raises(r"barlow_twins_loss: z1 is empty or too small, got shape \(1, 16\), needs at "
                r"least 2 rows", K.barlow_twins_loss, one, one, backend=backend)

    def test_sinkhorn_empty(self, backend):
        _raises(r"sinkhorn_knopp: scores is empty", K.sinkhorn_knopp, torch.randn(0, 5),
                backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
class TestDtypesAndDevices:
    @pytest.mark.parametrize("fn", ["info_nce", "nt_xent", "barlow_twins_loss",
                                    "negative_cosine"])
    def test_integer_inputs(self, fn, backend):
        i = torch.ones(8, 16, dtype=torch.int64)
        _raises(rf"{fn}: \w+ must have a floating dtype, got torch.int64", getattr(K, fn), i, i,
                backend=backend)

    def test_integer_queue(self, backend):
        _raises(r"info_nce: queue must have a floating dtype, got torch.int32", K.info_nce, x8,
                x8, torch.ones(20, 16, dtype=torch.int32), backend=backend)

    def test_sinkhorn_integer_scores(self, backend):
        _raises(r"sinkhorn_knopp: scores must have a floating dtype", K.sinkhorn_knopp,
                torch.ones(4, 5, dtype=torch.int64), backend=backend)

    def test_not_a_tensor(self, backend):
        _raises(r"nt_xent: z1 must be a torch.Tensor, got list", K.nt_xent, [[1.0]], x8,
                backend=backend)

    def test_devices_differ(self, backend):
        meta = torch.empty(8, 16, device="meta")
        _raises(r"barlow_twins_loss: all tensors must be on one device, got z1 on cpu, z2 on "
                r"meta", K.barlow_twins_loss, x8, meta, backend=backend)

    def test_queue_on_another_device(self, backend):
        _raises(r"info_nce: all tensors must be on one device, got query on cpu, queue on meta",
                K.info_nce, x8, x8, torch.empty(20, 16, device="meta"), backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
class TestScalars:
    @pytest.mark.parametrize("tau", [0, 0.0, -0.1, float("nan"), float("inf")])
    def test_info_nce_temperature(self, tau, backend):
        _raises(r"info_nce: temperature must be finite and > 0, got", K.info_nce, x8, x8,
                temperature=tau, backend=backend)

    @pytest.mark.parametrize("tau", [0.0, -1.0, float("nan")])
    def test_nt_xent_temperature(self, tau, backend):
        _raises(r"nt_xent: temperature must be finite and > 0", K.nt_xent, x8, x8,
                temperature=tau, backend=backend)

    def test_temperature_not_a_number(self, backend):
        _raises(r"info_nce: temperature must be a float, got str '0.2'", K.info_nce, x8, x8,
                temperature="0.2", backend=backend)

    @pytest.mark.parametrize("lambd", [-0.01, float("nan"), float("inf")])
    def test_barlow_lambd(self, lambd, backend):
        _raises(r"barlow_twins_loss: lambd must be finite and >= 0", K.barlow_twins_loss, x8,
                x8, lambd=lambd, backend=backend)

    @pytest.mark.parametrize("eps", [0, 0.0, -0.05, float("nan"), float("inf")])
    def test_sinkhorn_eps(self, eps, backend):
        _raises(r"sinkhorn_knopp: eps must be finite and > 0, got", K.sinkhorn_knopp, x8,
                eps=eps, backend=backend)

    @pytest.mark.parametrize("iters", [0, -1])
    def test_sinkhorn_iters(self, iters, backend):
        _raises(rf"sinkhorn_knopp: iters must be >= 1, got {iters}", K.sinkhorn_knopp, x8,
                iters=iters, backend=backend)

    def test_sinkhorn_iters_not_int(self, backend):
        _raises(r"sinkhorn_knopp: iters must be an int, got float 3.0", K.sinkhorn_knopp, x8,
                iters=3.0, backend=backend)

    def test_queue_normalized_not_bool(self, backend):
        _raises(r"info_nce: queue_normalized must be a bool, got str", K.info_nce, x8, x8,
                x8, queue_normalized="yes", backend=backend)


def test_valid_edge_cases_still_work():
    """The smallest valid calls go through: one pair, zero λ, one Sinkhorn iteration."""
    one = torch.randn(1, 4)
    assert torch.isfinite(K.info_nce(one, one, backend="torch"))
    assert torch.isfinite(K.nt_xent(one, one, backend="torch"))
    assert torch.isfinite(K.barlow_twins_loss(torch.randn(2, 4), torch.randn(2, 4), lambd=0,
                                              backend="torch"))
    assert K.sinkhorn_knopp(torch.randn(3, 5), iters=1, backend="torch").shape == (3, 5)

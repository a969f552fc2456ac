"""BG_Swaps in the methods: MoCo v2's hard negatives join the queue term (not enqueued) and the
extra positive adds two terms (as a key and as a query); SimCLR consumes the pair too."""

from __future__ import annotations

import torch

from fastssl.batch import SWAPS_SHIFT
from fastssl.kernels import info_nce
from tests.helpers import make_method

SWAPS = ("views", "labels", "bg_positive", "bg_negative")
TINY = {"backbone": "small_cnn", "crop_size": 16, "proj_hidden_dim": 32, "proj_dim": 16,
        "queue_size": 24, "bn_splits": 1}


def batch(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    v = [torch.randn(8, 3, 16, 16, generator=g) for _ in range(4)]
    return {"views": v[:2], "bg_positive": v[2], "bg_negative": v[3]}


def test_mocov2_hard_negatives_join_the_queue_term():
    _, model = make_method("mocov2", inputs=SWAPS, **TINY)
    assert model.bg_swaps
    b = batch()
    out = model(b)
    with torch.no_grad():
        hard = torch.nn.functional.normalize(model.key_encoder(b["bg_negative"]), dim=1)

        def per_query(q, keys):  # query i against every hard negative but its own foreground's
            return torch.stack([
                info_nce(q[i:i + 1], keys[i:i + 1],
                         torch.cat([hard[torch.arange(8) != (i - SWAPS_SHIFT) % 8], model.queue]),
                         temperature=model.temperature) for i in range(8)]).mean()

        q, key = model._query(b["views"][0]), model.key_encoder(b["views"][1])
        expected = (per_query(q, key) + per_query(q, model.key_encoder(b["bg_positive"]))
                    + per_query(model._query(b["bg_positive"]), key))  # the positive as a query
    torch.testing.assert_close(out["loss"].detach(), expected, rtol=1e-4, atol=1e-4)
    # a hard negative that is the key's own image scores like the positive: the loss rises
    same = model({**b, "bg_negative": b["views"][1]})["loss"]
    assert same > out["loss"] + 0.1
    model.on_train_step_end(out, 0)
    assert int(model.queue_ptr) == 8  # the keys only; hard negatives are not enqueued


def test_mocov2_without_the_pair_ignores_it():
    _, model = make_method("mocov2", **TINY)
    assert not model.bg_swaps
    b = batch()
    torch.testing.assert_close(model(b)["loss"], model({"views": b["views"]})["loss"])


def test_simclr_consumes_the_pair():
    _, model = make_method("simclr", inputs=SWAPS, backbone="small_cnn", crop_size=16,
                           proj_hidden_dim=32, proj_dim=16)
    assert model.bg_swaps
    b = batch()
    with_pair = model(b)["loss"]
    model.bg_swaps = False
    assert not torch.allclose(with_pair, model({"views": b["views"]})["loss"])


def test_simclr_swaps_term_pushes_every_embedding():
    """The hard negatives and extra positives get gradient (a stop-gradient on the negatives let
    the embeddings collapse); the anchor's own positive is the target."""
    from fastssl.methods.simclr import swaps_loss

    g = torch.Generator().manual_seed(0)
    z1, pos, neg = (torch.randn(8, 16, generator=g, requires_grad=True) for _ in range(3))
    swaps_loss(z1, pos, neg, 0.5).backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in (z1, pos, neg))
    anchors = torch.eye(8, 16)
    assert swaps_loss(anchors, anchors, -anchors, 0.1) < swaps_loss(anchors, anchors.roll(1, 0),
                                                                     -anchors, 0.1)


def test_simclr_swaps_term_leaves_out_the_anchors_own_foreground():
    """Hard negative i - SWAPS_SHIFT shows anchor i's foreground (its partner is i): scored as a
    negative it would tie with the extra positive (loss log 2 here); it is left out."""
    from fastssl.methods.simclr import swaps_loss

    anchors = torch.eye(8, 16)
    own = anchors.roll(-SWAPS_SHIFT, 0)  # row i - SWAPS_SHIFT is anchor i
    assert swaps_loss(anchors, anchors, own, 0.05) < 1e-3
    assert swaps_loss(anchors, anchors, anchors, 0.05) > 0.6  # a hard negative that is not its own

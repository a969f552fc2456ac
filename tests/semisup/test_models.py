"""The classifier, its pretrained initialisation, pseudo-labels and the self-training student."""

import pytest
import torch

from fastssl.checkpoint import save_atomic
from fastssl.methods.base import MethodContext
from fastssl.semisup.commands import _initialised
from fastssl.semisup.models import (
    Classifier,
    FinetuneArgs,
    SelfTrain,
    SelfTrainArgs,
    head_width,
    ssl_encoder,
)
from fastssl.semisup.predict import pseudo_targets
from tests.helpers import make_method

CTX = MethodContext()


def _ssl_checkpoint(tmp_path, method="simclr_v2"):
    cfg, model = make_method(method, proj_hidden_dim=24, proj_dim=8, crop_size=16)
    for p in model.parameters():  # not the init a fresh classifier would draw
        torch.nn.init.normal_(p)
    path = tmp_path / f"{method}.pt"
    save_atomic({"model": model.state_dict(), "config": cfg.to_dict()}, path)
    return model, path


def test_fine_tuning_from_the_head_layer_uses_exactly_the_first_head_layer(tmp_path):
    ssl, path = _ssl_checkpoint(tmp_path)
    encoder, _ = ssl_encoder(str(path), from_head_layer=True)
    assert head_width(encoder) == 24
    clf = _initialised(Classifier(FinetuneArgs(head_dim=24, num_classes=5), CTX), encoder)
    # the backbone and projector layer 1 (Linear-BN-ReLU), nothing of layers 2 and 3
    assert [type(m).__name__ for m in clf.head] == ["Linear", "BatchNorm1d", "ReLU"]
    expected = {**{f"backbone.{k}": v for k, v in ssl.backbone.state_dict().items()},
                **{f"head.{k}": v for k, v in ssl.projector[:3].state_dict().items()}}
    got = {k: v for k, v in clf.state_dict().items() if not k.startswith("fc.")}
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    assert clf.fc.in_features == 24
    x = torch.randn(4, 3, 16, 16)
    ssl.eval(), clf.eval()
    torch.testing.assert_close(clf.embed(x), ssl.encoder(head_layers=1)(x))


def test_fine_tuning_from_the_backbone_and_methods_without_a_head_layer(tmp_path):
    ssl, path = _ssl_checkpoint(tmp_path)
    encoder, _ = ssl_encoder(str(path), from_head_layer=False)
    assert head_width(encoder) == 0
    clf = _initialised(Classifier(FinetuneArgs(num_classes=5), CTX), encoder)
    assert len(clf.head) == 0 and clf.fc.in_features == clf.feat_dim
    assert torch.equal(clf.backbone[0].weight, ssl.backbone[0].weight)
    _, byol = _ssl_checkpoint(tmp_path, "byol")
    with pytest.raises(ValueError, match="no projection head layer"):
        ssl_encoder(str(byol), from_head_layer=True)


def test_pseudo_labels_are_thresholded_and_skip_labelled_images():
    probs = torch.tensor([[0.9, 0.1], [0.55, 0.45], [0.2, 0.8], [0.5, 0.5]])
    labelled = torch.tensor([False, False, True, False])
    soft = pseudo_targets(probs, labelled, "soft", threshold=0.6)
    torch.testing.assert_close(soft, torch.tensor([[0.9, 0.1], [0, 0], [0, 0], [0, 0]]))
    hard = pseudo_targets(probs, labelled, "hard", threshold=0.5)
    torch.testing.assert_close(hard, torch.tensor([[1.0, 0], [1, 0], [0, 0], [1, 0]]))
    with pytest.raises(ValueError, match="--pseudo"):
        pseudo_targets(probs, labelled, "sharp", 0.5)


def test_self_training_student_combines_human_and_pseudo_losses():
    human = torch.tensor([1, -1, -1, 0])
    pseudo = torch.tensor([[0, 0], [0.3, 0.7], [0, 0], [0, 0]])
    args = SelfTrainArgs(num_classes=2, alpha=2.0, mean_momentum=0.5)
    torch.manual_seed(0)
    model = SelfTrain(args, CTX, human, pseudo)
    batch = {"views": [torch.randn(4, 3, 16, 16)], "labels": torch.tensor([0, 1, 2, 3])}
    out = model(batch)
    logp = torch.log_softmax(model.logits(batch["views"][0]), 1).detach()
    l_h = -(logp[0, 1] + logp[3, 0]) / 2
    l_p = -(0.3 * logp[1, 0] + 0.7 * logp[1, 1])
    torch.testing.assert_close(out["loss_h"], l_h)
    torch.testing.assert_close(out["loss_p"], l_p)
    # first step: the running means are the losses themselves, so L_p is scaled to L_h
    torch.testing.assert_close(out["loss"].detach(), (l_h + 2 * l_h) / 3)
    model.on_train_step_end(out, 0)
    assert model.seen_h == 1 and model.mean_p == out["loss_p"]
    only_h = model({"views": [batch["views"][0][:2]], "labels": torch.tensor([0, 3])})
    assert only_h["loss_p"] == 0 and torch.equal(only_h["mean_p"], model.mean_p)

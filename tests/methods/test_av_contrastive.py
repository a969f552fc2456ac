"""av_contrastive: the cross-modal loss against the reference InfoNCE, gradients into every
encoder, clip embeddings for kNN; the video encoders' shapes."""

from __future__ import annotations

import json

import pytest
import torch

from fastssl.kernels.reference import info_nce
from fastssl.methods import MethodContext, build_method
from fastssl.models.video import audio_cnn, video_backbone
from tests.helpers import make_method, run_cli

INPUTS = ("clips", "audio", "flow", "labels")


def batch(b: int = 6) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"clips": [torch.randn(b, 3, 4, 16, 16, generator=g)],
            "audio": torch.randn(b, 1, 40, 33, generator=g) * 10 - 40,
            "flow": torch.randn(b, 2, 4, 16, 16, generator=g)}


def test_loss_is_the_two_way_cross_modal_info_nce():
    _, model = make_method("av_contrastive", inputs=INPUTS, proj_hidden_dim=32, proj_dim=16)
    model.eval()  # BatchNorm in eval mode: the reference sees the same embeddings
    x = batch()
    out = model(x)
    z = {k: model.heads[k](net(x[inp] if inp != "clips" else x["clips"][0]))
         for k, net, inp in (("rgb", model.backbone, "clips"), ("audio", model.audio_net, "audio"),
                             ("flow", model.flow_net, "flow"))}
    t = model.temperature
    ref_a = 0.5 * (info_nce(z["rgb"], z["audio"], temperature=t)
                   + info_nce(z["audio"], z["rgb"], temperature=t))
    ref_f = 0.5 * (info_nce(z["rgb"], z["flow"], temperature=t)
                   + info_nce(z["flow"], z["rgb"], temperature=t))
    torch.testing.assert_close(out["loss"], ref_a + ref_f, rtol=1e-4, atol=1e-5)


def test_other_times_of_the_same_videos_are_negatives_of_audio_and_flow():
    """A second clip per video (another time): the audio and flow queries also score against
    the other-time clips of every video, their own included, as negatives."""
    _, model = make_method("av_contrastive", inputs=INPUTS, proj_hidden_dim=32, proj_dim=16)
    model.eval()
    x = batch()
    other = torch.randn_like(x["clips"][0])
    both = model({**x, "clips": [x["clips"][0], other]})
    z_v, z_o = (model.heads["rgb"](model.backbone(c)) for c in (x["clips"][0], other))
    t = model.temperature
    for name, z in (("audio", model.heads["audio"](model.audio_net(x["audio"]))),
                    ("flow", model.heads["flow"](model.flow_net(x["flow"])))):
        expected = (0.5 * (info_nce(z_v, z, temperature=t) + info_nce(z, z_v, temperature=t))
                    + info_nce(z, z_v, z_o, temperature=t))
        torch.testing.assert_close(both[f"loss_{name}"], expected, rtol=1e-4, atol=1e-5)


def test_every_encoder_gets_a_gradient_and_embed_gives_clip_features():
    _, model = make_method("av_contrastive", inputs=INPUTS, proj_hidden_dim=32, proj_dim=16)
    model(batch())["loss"].backward()
    for net in (model.backbone, model.audio_net, model.flow_net):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    assert model.embed(batch()["clips"][0]).shape == (6, model.feat_dim)


def test_the_method_refuses_an_image_loader():
    cfg, _ = make_method("av_contrastive", inputs=INPUTS, proj_hidden_dim=32, proj_dim=16)
    with pytest.raises(ValueError, match="needs the inputs"):
        build_method(cfg, MethodContext(inputs=frozenset({"views", "labels"})))


@pytest.mark.parametrize("name", ["small3d", "r3d_18", "r2plus1d_18"])
def test_video_backbones_take_rgb_and_flow(name):
    for channels in (3, 2):
        net, dim = video_backbone(name, channels)
        assert net(torch.randn(2, channels, 4, 16, 16)).shape == (2, dim)
    net, dim = audio_cnn()
    assert net(torch.randn(2, 1, 40, 33)).shape == (2, dim)


def test_fastssl_train_on_the_av_set(tiny_av, tmp_path):
    """The normal loop with the video loader: two steps, then kNN on centre clips."""
    out = tmp_path / "run"
    proc = run_cli("train", "--method", "av_contrastive", "--data", str(tiny_av), "--epochs", "1",
                   "--batch_size", "4", "--crop_size", "16", "--workers", "0", "--knn_k", "3",
                   "--progress", "false", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1].startswith("knn_top1=")
    assert "loader: video" in proc.stderr
    records = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [2]
    assert {"loss_audio", "loss_flow"} <= set(next(r for r in records if "loss" in r))


def test_residual_input_feeds_the_backbone_frame_differences():
    net, _ = video_backbone("small3d", 3, residual=True)
    x = torch.randn(2, 3, 5, 16, 16)
    static = x[:, :, :1].expand_as(x)  # a still clip: every residual frame is zero
    torch.testing.assert_close(net[0](static), torch.zeros(2, 3, 4, 16, 16))
    torch.testing.assert_close(net[0](x), x[:, :, 1:] - x[:, :, :-1])
    assert net(x).shape == (2, 128)

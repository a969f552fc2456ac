"""Each ELo task's loss on hand-made inputs: chance levels, perfect predictors, the permutations,
and the method's weighted sum of them."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fastssl.kernels.reference import info_nce
from fastssl.methods.elo import load_weights
from fastssl.methods.elo.tasks import (
    AlignTask,
    ContrastTask,
    Encoded,
    OrderTask,
    PredictTask,
    TransferTask,
    alignment_loss,
    order_loss,
    order_permutations,
    prediction_loss,
)
from tests.helpers import make_method

INPUTS = ("clips", "audio", "flow", "labels")


def test_order_loss_is_ln3_at_chance_and_near_zero_for_a_perfect_classifier():
    labels = torch.arange(30) % 3
    assert order_loss(torch.zeros(30, 3), labels).item() == pytest.approx(math.log(3))
    random_logits = torch.randn(3000, 3, generator=torch.Generator().manual_seed(0)) * 0.01
    assert order_loss(random_logits, torch.arange(3000) % 3).item() == pytest.approx(
        math.log(3), abs=1e-3)
    assert order_loss(20 * nn.functional.one_hot(labels, 3).float(), labels).item() < 1e-6


def test_order_permutations_are_forward_reversed_and_neither():
    p = order_permutations(4)
    assert p.tolist() == [[0, 1, 2, 3], [3, 2, 1, 0], [0, 2, 1, 3]]


class TimeProfile(nn.Module):
    """A stand-in encoder whose features are the clip's per-frame means (order is visible)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 3, 4))


def test_order_task_a_perfect_head_reaches_zero_and_a_zero_head_chance():
    x = torch.arange(4.0).view(1, 1, 4, 1, 1).expand(6, 3, 4, 2, 2).contiguous()  # frames 0..3
    enc = Encoded({"rgb": x}, {"rgb": TimeProfile()}, {})
    task = OrderTask("rgb", 4)
    nn.init.zeros_(task.head.weight)
    nn.init.zeros_(task.head.bias)
    assert task(enc).item() == pytest.approx(math.log(3))
    with torch.no_grad():  # forward [0,1,2,3], reversed [3,2,1,0], shuffled [0,2,1,3]
        task.head.weight.copy_(50 * torch.tensor([[-1.0, -1, 1, 1], [1, 1, -1, -1],
                                                  [-1, 1, -1, 1]]))
    assert task(enc).item() < 1e-3


def test_predict_task_targets_and_losses():
    x = torch.randn(2, 3, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    src, tgt = PredictTask("rgb", 8, 3, horizon=1).split(x)
    assert src.shape[2] == 3 and torch.equal(tgt, x[:, :, 3:])
    src, tgt = PredictTask("rgb", 8, 3, horizon=0).split(x)
    assert torch.equal(src, x) and torch.equal(tgt, x[:, :, -1:])
    assert prediction_loss(tgt, tgt).item() == 0.0
    assert prediction_loss(torch.zeros_like(tgt), tgt).item() == pytest.approx(
        tgt.pow(2).mean().item())
    task = PredictTask("rgb", 8, 3, horizon=1)
    enc = Encoded({"rgb": x}, {"rgb": nn.Sequential(nn.Flatten(), nn.LazyLinear(8))},
                  {"rgb": torch.zeros(2, 8)})
    assert task(enc).ndim == 0
    with pytest.raises(ValueError, match="cannot predict"):
        PredictTask("rgb", 8, 3, horizon=4).split(x)


def test_alignment_loss_chance_and_perfect():
    assert alignment_loss(torch.zeros(5), torch.zeros(5)).item() == pytest.approx(math.log(2))
    assert alignment_loss(torch.full((5,), 30.0), torch.full((5,), -30.0)).item() < 1e-6
    assert alignment_loss(torch.full((5,), -30.0), torch.full((5,), 30.0)).item() > 10


def test_align_task_pairs_the_modality_with_another_moments_rgb():
    task = AlignTask("audio", 3, 4, 8)
    rgb, other, audio = torch.randn(2, 3), torch.randn(2, 3), torch.randn(2, 4)
    enc = Encoded({}, {}, {"rgb": rgb, "audio": audio}, [other])
    aligned = task.head(torch.cat([rgb, audio], 1)).squeeze(1)
    shifted = task.head(torch.cat([other, audio], 1)).squeeze(1)
    torch.testing.assert_close(task(enc), alignment_loss(aligned, shifted))


def test_align_task_without_a_second_clip_rolls_the_modality_in_time():
    seen = []

    class Record(nn.Module):
        def forward(self, x):
            seen.append(x)
            return x.mean(dim=(1, 2)).view(x.shape[0], -1)[:, :4]

    audio = torch.arange(8.0).view(1, 1, 1, 8).expand(2, 1, 2, 8)
    enc = Encoded({"audio": audio}, {"audio": Record()},
                  {"rgb": torch.zeros(2, 3), "audio": torch.zeros(2, 4)})
    AlignTask("audio", 3, 4, 8)(enc)
    assert torch.equal(seen[0], audio.roll(4, dims=3))


def test_contrast_task_is_the_fused_info_nce_with_other_moments_as_negatives():
    g = torch.Generator().manual_seed(2)
    task = ContrastTask("audio", 5, 6, 8, 4, temperature=0.1).eval()
    rgb, audio, other = (torch.randn(4, d, generator=g) for d in (5, 6, 5))
    enc = Encoded({}, {}, {"rgb": rgb, "audio": audio}, [other])
    z_r, z_a, z_o = task.rgb_head(rgb), task.head(audio), task.rgb_head(other)
    ref = 0.5 * (info_nce(z_r, z_a, temperature=0.1) + info_nce(z_a, z_r, temperature=0.1)) \
        + info_nce(z_a, z_r, z_o, temperature=0.1)
    torch.testing.assert_close(task(enc), ref, rtol=1e-4, atol=1e-5)
    single = Encoded({}, {}, {"rgb": rgb, "audio": audio})
    assert task(single).item() < task(enc).item()  # the hard negatives only add loss


def test_transfer_task_is_zero_for_a_perfect_predictor_and_does_not_train_the_target():
    task = TransferTask("flow", 4, 4, 8)
    task.head = nn.Identity()
    target = torch.randn(3, 4, requires_grad=True)
    assert task(Encoded({}, {}, {"rgb": target.detach(), "flow": target})).item() == 0.0
    rgb = torch.zeros(3, 4, requires_grad=True)
    task(Encoded({}, {}, {"rgb": rgb, "flow": target})).backward()
    assert target.grad is None and rgb.grad is not None


def batch(b: int = 6) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"clips": [torch.randn(b, 3, 4, 16, 16, generator=g) for _ in range(2)],
            "audio": torch.randn(b, 1, 40, 33, generator=g),
            "flow": torch.randn(b, 2, 4, 16, 16, generator=g)}


def test_the_method_weighs_its_terms_and_builds_only_the_weighted_ones():
    spec = "order:rgb=0.5,contrast:audio=1,distill:flow@3=0.25,align:flow=0"
    _, model = make_method("elo", inputs=INPUTS, elo_weights=spec)
    assert set(model.tasks) == {"order:rgb", "contrast:audio"}
    assert set(model.distillers) == {"distill:flow@3"}
    out = model(batch())
    terms = {k[5:]: v for k, v in out.items() if k.startswith("loss_")}
    expected = 0.5 * terms["order:rgb"] + terms["contrast:audio"] + 0.25 * terms["distill:flow@3"]
    torch.testing.assert_close(out["loss"], expected)
    out["loss"].backward()
    assert model.audio_net is not None and model.flow_net is not None


def test_weights_from_a_file_and_errors(tmp_path):
    f = tmp_path / "best.json"
    f.write_text('{"weights": {"order:rgb": 0.3}, "fitness": 0.1}')
    assert load_weights(str(f), (3,)) == {"order:rgb": 0.3}
    with pytest.raises(ValueError, match="unknown term"):
        load_weights("order:sound=1", (3,))
    with pytest.raises(ValueError, match="outside"):
        load_weights("order:rgb=1.5", (3,))
    assert load_weights("distill:audio@2=0.5", (3,)) == {"distill:audio@2": 0.5}
    with pytest.raises(ValueError, match="unknown term"):
        load_weights("distill:rgb@2=0.5", (3,))
    with pytest.raises(ValueError, match="3 blocks"):
        make_method("elo", inputs=INPUTS, elo_weights="distill:flow@4=1")


def test_all_zero_weights_still_give_a_loss_with_a_graph():
    _, model = make_method("elo", inputs=INPUTS, elo_weights="order:rgb=0")
    out = model(batch())
    assert out["loss"].item() == 0.0
    out["loss"].backward()

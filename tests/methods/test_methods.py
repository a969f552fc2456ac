"""Every method: a finite loss and gradients on tiny inputs, the hooks doing what they claim, the
paper presets resolving, and the registry / config wiring."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fastssl.config import CONFIG_DIR, Config, load_preset
from fastssl.kernels import info_nce
from fastssl.methods import METHODS, resolve_config
from fastssl.methods.mocov2 import random_permutation
from fastssl.optim import build_optimizer, set_lr
from tests.helpers import make_method

TINY = {"backbone": "small_cnn", "crop_size": 16, "local_crop_size": 8, "epochs": 2,
        "proj_hidden_dim": 32, "proj_dim": 16}
EXTRA = {
    "byol": {"pred_hidden_dim": 32},
    "simsiam": {"pred_hidden_dim": 8},
    "mocov3": {"pred_hidden_dim": 32},
    "swav": {"n_prototypes": 12},
    "mocov2": {"queue_size": 24, "bn_splits": 2},
}
PRESETS = ["simclr", "simclr_v2", "byol", "simsiam", "barlow_twins", "swav", "mocov2", "mocov3",
           "mocov3_vit"]


# methods on image views (the video methods have their own tests)
IMAGE_METHODS = sorted(n for n, c in METHODS.items() if "views" in c.inputs)

def tiny(name: str, steps_per_epoch: int = 5, **kw):
    """A tiny method (2 epochs of 5 steps unless told otherwise) and its config."""
    return make_method(name, steps_per_epoch=steps_per_epoch,
                       **{**TINY, **EXTRA.get(name, {}), **kw})


def views_for(cfg, batch: int = 8) -> list[torch.Tensor]:
    sizes = [cfg.crop_size] * cfg.global_crops + [cfg.local_crop_size] * cfg.local_crops
    return [torch.randn(batch, 3, s, s) for s in sizes]


def step(model, cfg, views, k: int, lr: float = 0.1):
    """One optimiser step through the method's hooks, as ``fastssl.train.train_step`` does."""
    opt = getattr(model, "_test_opt", None)
    if opt is None:
        opt = model._test_opt = torch.optim.SGD(
            [p for p in model.parameters() if p.requires_grad], lr=lr)
    out = model({"views": views})
    opt.zero_grad(set_to_none=True)
    out["loss"].backward()
    model.before_optimizer_step(out, k)
    opt.step()
    model.on_train_step_end(out, k)
    return out


@pytest.mark.parametrize("name", IMAGE_METHODS)
def test_forward_backward_finite_loss_and_gradients(name):
    cfg, model = tiny(name)
    out = model({"views": views_for(cfg)})
    loss = out["loss"]
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    for n, p in trainable:
        assert p.grad is not None, f"{name}: no gradient for {n}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {n}"
    assert any(p.grad.abs().sum() > 0 for _, p in trainable)
    emb = model.embed(views_for(cfg)[0])
    assert emb.shape == (8, model.feat_dim) and torch.isfinite(emb).all()


@pytest.mark.parametrize("name", sorted(METHODS))
def test_param_groups_cover_every_trainable_parameter_once(name):
    cfg, model = tiny(name)
    groups = model.param_groups(cfg)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}
    build_optimizer(groups, cfg)  # the optimiser accepts the group flags


def test_no_method_argument_shadows_a_general_config_key():
    general = {f.name for f in dataclasses.fields(Config)}
    for name, cls in METHODS.items():
        clash = general & {f.name for f in dataclasses.fields(cls.Args)}
        assert not clash, f"{name}: Args fields {clash} can never be set (general keys win)"


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_resolve(preset):
    assert (CONFIG_DIR / f"{preset}.yaml").is_file()
    cfg = resolve_config(load_preset(preset))
    assert cfg.backbone in ("resnet50", "vit_b", "vit_s") and cfg.small_stem is False
    assert cfg.crop_size == 224


def test_swav_preset_is_multi_crop():
    cfg = resolve_config(load_preset("swav"))
    assert (cfg.global_crops, cfg.crop_size, cfg.global_scale) == (2, 224, (0.14, 1.0))
    assert (cfg.local_crops, cfg.local_crop_size, cfg.local_scale) == (6, 96, (0.05, 0.14))
    assert cfg.args.n_prototypes == 3000 and cfg.args.sinkhorn_iters == 3


def test_mocov3_vit_preset_builds_three_layer_projector():
    _, model = make_method(config="mocov3_vit", backbone="vit_s", crop_size=32,
                           proj_hidden_dim=64, proj_dim=16, pred_hidden_dim=64)
    linears = [m for m in model.projector if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 3 and all(m.bias is None for m in linears)
    assert not model.backbone.net.conv_proj.weight.requires_grad  # frozen random patch proj.
    assert not model.backbone.net.encoder.pos_embedding.requires_grad  # fixed sin-cos


@pytest.mark.parametrize("name", ["byol", "mocov3", "mocov2"])
def test_momentum_target_moves_toward_online_after_a_step(name):
    cfg, model = tiny(name)
    target = {"byol": "target", "mocov3": "momentum_encoder", "mocov2": "key_encoder"}[name]
    online = getattr(model, {"byol": "online", "mocov3": "base_encoder",
                             "mocov2": "query_encoder"}[name])
    before_t = [p.clone() for p in getattr(model, target).parameters()]
    assert all(torch.equal(a, b) for a, b in zip(before_t, online().parameters(), strict=True))
    assert not any(p.requires_grad for p in getattr(model, target).parameters())
    step(model, cfg, views_for(cfg), 0)
    after_t = list(getattr(model, target).parameters())
    moved = any(not torch.equal(a, b) for a, b in zip(before_t, after_t, strict=True))
    differs = any(not torch.equal(a, b) for a, b in zip(after_t, online().parameters(),
                                                         strict=True))
    assert moved and differs  # EMA moved the target, but only part of the way


def test_cosine_momentum_schedules_increase_to_one():
    cfg, model = tiny("byol", tau_base=0.9, steps_per_epoch=1, epochs=3)
    views = views_for(cfg)
    seen = []
    for k in range(3):
        step(model, cfg, views, k)
        seen.append(model.momentum)
    assert seen[0] == pytest.approx(0.9) and seen[0] < seen[1] < seen[2] < 1.0
    _, v3 = tiny("mocov3", ema_momentum=0.99)
    v3.on_train_step_end({}, 10)
    assert v3.momentum == pytest.approx(1.0)


def test_mocov2_queue_pointer_advances_and_wraps():
    cfg, model = tiny("mocov2")
    views = views_for(cfg)
    out = step(model, cfg, views, 0)
    assert torch.isfinite(out["loss"])
    assert int(model.queue_ptr) == 8
    torch.testing.assert_close(model.queue[:8], out["keys"])
    torch.testing.assert_close(model.queue.norm(dim=1), torch.ones(24))
    step(model, cfg, views, 1)
    step(model, cfg, views, 2)
    assert int(model.queue_ptr) == 0  # 3 x 8 keys filled the 24 slots and wrapped
    assert model.queue.grad is None and not model.queue.requires_grad


def test_mocov2_reads_its_queue_as_stored():
    """The queue is normalised and converted once, at enqueue: a step neither converts it nor
    re-normalises it (only the score matmul reads it)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    cfg, model = tiny("mocov2", queue_size=64)
    queue_ptr = model.queue.data_ptr()

    class QueueOps(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops: set[str] = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            flat = [*args, *(kwargs or {}).values()]
            if any(isinstance(a, torch.Tensor) and a.data_ptr() == queue_ptr for a in flat):
                self.ops.add(func.__name__.split(".")[0])
            return func(*args, **(kwargs or {}))

    with QueueOps() as seen:
        model({"views": views_for(cfg)})["loss"].backward()
    assert seen.ops, "the queue was not read at all"
    assert seen.ops <= {"detach", "alias", "t", "transpose", "permute", "view", "mm", "matmul",
                        "addmm", "expand"}, seen.ops
    torch.testing.assert_close(model.queue.norm(dim=1), torch.ones(64))  # stored normalised


def test_mocov2_single_process_shuffle_bn_normalises_keys_in_shuffled_groups():
    cfg, model = tiny("mocov2")  # bn_splits=2: two emulated devices of 4 samples each
    x = torch.randn(8, 3, 16, 16)
    torch.manual_seed(3)
    keys = model._keys_of(x)
    torch.manual_seed(3)
    perm = random_permutation(8, x.device)
    for group in perm.chunk(2):  # each key is what its shuffled group alone gives it
        torch.testing.assert_close(keys[group], model.key_encoder(x[group]))
    assert not torch.allclose(keys, model.key_encoder(x), atol=1e-4)  # not one BN batch
    with pytest.raises(ValueError, match="bn_splits"):
        model._split_bn(model.key_encoder, torch.randn(5, 3, 16, 16))
    with pytest.raises(ValueError, match="bn_splits"):
        tiny("mocov2", bn_splits=0)
    assert tiny("mocov2", sync_bn=True)[1].bn_splits == 1  # global statistics: nothing to split


def test_mocov2_symmetric_sums_both_directions_and_enqueues_both_keys():
    cfg, model = tiny("mocov2", symmetric=True, bn_splits=1)
    v1, v2 = views_for(cfg)
    total = model({"views": [v1, v2]})["loss"]
    model.symmetric = False
    one_way = model({"views": [v1, v2]})["loss"] + model({"views": [v2, v1]})["loss"]
    torch.testing.assert_close(total, one_way)
    model.symmetric = True
    out = step(model, cfg, [v1, v2], 0)
    assert int(model.queue_ptr) == 16  # keys of both views: 2 x 8
    torch.testing.assert_close(model.queue[:16], out["keys"])


def test_mocov2_shuffle_bn_compiles():
    # inductor rewrites x[torch.randperm(n)] and failed on the shuffled key batch (torch 2.11)
    cfg, model = tiny("mocov2")
    loss = torch.compile(model)({"views": views_for(cfg)})["loss"]
    loss.backward()
    assert torch.isfinite(loss)


def test_swav_prototypes_normalised_and_frozen_during_freeze():
    cfg, model = tiny("swav", freeze_prototypes_iters=2)
    views = views_for(cfg)
    assert len(views) == 4  # 2 global + 2 local crops by default
    torch.testing.assert_close(model.prototypes.weight.norm(dim=1), torch.ones(12))
    w0 = model.prototypes.weight.clone()
    step(model, cfg, views, 0)
    torch.testing.assert_close(model.prototypes.weight, w0)  # frozen: no update at all
    step(model, cfg, views, 1)
    torch.testing.assert_close(model.prototypes.weight, w0)
    step(model, cfg, views, 2)  # iteration 2 >= freeze: learns, then is re-normalised
    assert not torch.allclose(model.prototypes.weight, w0)
    torch.testing.assert_close(model.prototypes.weight.norm(dim=1), torch.ones(12))


def test_swav_freeze_defaults_to_one_epoch():
    cfg, model = tiny("swav", epochs=2)  # 5 steps per epoch -> 5 frozen iterations
    out = model({"views": views_for(cfg)})
    out["loss"].backward()
    model.before_optimizer_step(out, 4)
    assert model.prototypes.weight.grad is None
    out = model({"views": views_for(cfg)})
    out["loss"].backward()
    model.before_optimizer_step(out, 5)
    assert model.prototypes.weight.grad is not None


def test_swav_queue_fills_from_start_epoch_then_is_used():
    cfg, model = tiny("swav", queue_length=16, queue_start_epoch=1, epochs=2,
                      freeze_prototypes_iters=0)
    views = views_for(cfg)
    step(model, cfg, views, 0)  # epoch 0 of 2 (5 steps each): queue not started
    assert not model.queue.any() and model.queue_filled == 0
    step(model, cfg, views, 5)  # epoch 1: 8 of 16 rows filled
    assert model.queue[:, :8].any() and not model.queue[:, 8:].any()
    assert model.queue_filled == 8
    step(model, cfg, views, 6)  # full: the next forward prepends the queue to Sinkhorn
    assert model.queue_filled == 16
    torch.testing.assert_close(model.queue.norm(dim=2), torch.ones(2, 16))
    out = step(model, cfg, views, 7)
    assert torch.isfinite(out["loss"])


@pytest.mark.parametrize("name,kw", [("simsiam", {}), ("byol", {"fixed_predictor_lr": True})])
def test_predictor_lr_is_fixed(name, kw):
    cfg, model = tiny(name, lr=0.1, **kw)
    opt = build_optimizer(model.param_groups(cfg), cfg)
    set_lr(opt, 0.25)
    pred = {id(p) for p in model.predictor.parameters()}
    for g in opt.param_groups:
        is_pred = {id(p) for p in g["params"]} <= pred
        assert g["lr"] == pytest.approx(g["base_lr"] * (1.0 if is_pred else 0.25))
    assert any({id(p) for p in g["params"]} <= pred for g in opt.param_groups)


def test_byol_predictor_lr_scheduled_by_default():
    cfg, model = tiny("byol", lr=0.1)
    opt = build_optimizer(model.param_groups(cfg), cfg)
    assert not any(g.get("fixed_lr") for g in opt.param_groups)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(
        [p for p in model.parameters() if p.requires_grad])  # no target parameter, none missed


def test_byol_proj_last_bn_centres_target_outputs():
    cfg, model = tiny("byol", proj_last_bn=True)
    assert not isinstance(tiny("byol")[1].projector[-1], torch.nn.BatchNorm1d)  # paper: off
    last = model.projector[-1]
    assert isinstance(last, torch.nn.BatchNorm1d) and not last.affine
    assert isinstance(model.target[1][-1], torch.nn.BatchNorm1d)  # the target is a copy
    z = model.target(views_for(cfg)[0])
    torch.testing.assert_close(z.mean(0), torch.zeros(z.shape[1]), atol=1e-5, rtol=0)


def test_barlow_twins_bias_lr_ratio():
    cfg, model = tiny("barlow_twins", bias_lr_ratio=0.024)
    groups = model.param_groups(cfg)
    assert {g["exclude"]: g.get("lr_scale", 1.0) for g in groups} == {False: 1.0, True: 0.024}
    linears = [m for m in model.projector if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 3 and all(m.bias is None for m in linears)


def test_simclr_v2_three_layer_head_and_first_layer_encoder():
    cfg, model = tiny("simclr_v2")
    assert cfg.args.head_layers == 3
    linears = [m for m in model.projector if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 3 and isinstance(model.projector[-1], torch.nn.BatchNorm1d)
    model.eval()
    x = views_for(cfg)[0]
    enc = model.encoder(head_layers=1)
    assert enc(x).shape == (8, 32)  # backbone + Linear-BN-ReLU of the head's first layer
    assert enc[0] is model.backbone and enc[1] is model.projector[0]
    _, model1 = tiny("simclr_v2", embed_head_layers=1)
    model1.eval()
    assert model1.embed(x).shape == (8, 32)
    with pytest.raises(ValueError, match="embed_head_layers"):
        tiny("simclr_v2", embed_head_layers=3)


def test_mocov3_loss_is_scaled_by_two_tau():
    # tau = 0.2, not 0.5: at 0.5 the factor 2 tau is 1 and dropping it would pass
    cfg, model = tiny("mocov3", temperature=0.2)
    q, k = torch.randn(8, 16), torch.randn(8, 16)
    torch.testing.assert_close(model._ctr(q, k), info_nce(q, k, temperature=0.2) * 0.4)

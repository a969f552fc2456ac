"""``fastssl finetune | distill | selftrain``: each resolves its config (the general options of
``fastssl train`` plus its own), prepares the labelled subset, teacher and initial weights, and
runs ``fastssl.train.train`` with a classifier ``Task``. The last printed line is a summary
starting ``top1=``."""

from __future__ import annotations

import dataclasses
import logging
import sys
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from fastssl import distributed
from fastssl.config import Config, ConfigError, help_text, load_preset, parse_overrides, resolve
from fastssl.data import dataset_index
from fastssl.data.layout import DatasetIndex
from fastssl.methods.base import MethodContext
from fastssl.semisup.models import (
    COMMANDS,
    Classifier,
    Distill,
    FinetuneArgs,
    SelfTrain,
    SelfTrainArgs,
    head_width,
    load_classifier,
    ssl_encoder,
)
from fastssl.semisup.predict import probabilities, pseudo_targets, top1
from fastssl.semisup.subsets import (
    human_labels,
    label_subset,
    oversampled,
    subset_split,
    with_ids,
    write_subset,
)
from fastssl.train import Result, Task, train

log = logging.getLogger("fastssl.semisup")
M = TypeVar("M", bound=Classifier)

USAGE = {
    "finetune": "usage: fastssl finetune [--checkpoint CKPT [--from_head_layer]] "
                "[--labels 1%|10%|N] [--config finetune_lars|finetune_sgd|finetune_adamw] "
                "[--KEY=VALUE ...]",
    "distill": "usage: fastssl distill --teacher CKPT [--student BACKBONE] [--temperature T] "
               "[--alpha A --labels 10%] [--KEY=VALUE ...]",
    "selftrain": "usage: fastssl selftrain [--labels 10%] [--teacher CKPT] [--checkpoint SSL_CKPT]"
                 " [--views s1|s2|s3|s4] [--pseudo soft|hard] [--threshold P] [--iterations K] "
                 "[--KEY=VALUE ...]",
}


def resolve_command(name: str, tokens: list[str]) -> Config:
    """The run config of command ``name``: ``Config`` -> the command's defaults -> ``--config
    PRESET`` -> options (its own options are those of its ``Args``)."""
    overrides = parse_overrides(tokens)
    preset = load_preset(overrides.pop("config")) if "config" in overrides else {}
    if "method" in overrides or "method" in preset:
        raise ConfigError(f"--method is not an option of fastssl {name} (the SSL method comes "
                          "from --checkpoint)")
    return resolve(preset, {**overrides, "method": name}, COMMANDS)


def _labelled(cfg: Config, index: DatasetIndex) -> list[int]:
    """The labelled subset's indices into train/, also written to OUT/labels.txt."""
    indices = label_subset(index.train, cfg.args.labels, cfg.seed)
    write_subset(index, indices, Path(cfg.out) / "labels.txt")
    log.info("labelled subset: %d of %d train images (%s)", len(indices), len(index.train),
             Path(cfg.out) / "labels.txt")
    return indices


def _initialised(model: M, encoder: nn.Sequential | None) -> M:
    """``model`` with the pretrained encoder's weights (strict: exactly its layers)."""
    if encoder is not None:
        model.encoder().load_state_dict(encoder.state_dict())
    return model


def _pretrained(cfg: Config) -> nn.Sequential | None:
    """The SSL encoder of ``--checkpoint`` (None without one); the run adopts its backbone and,
    with ``--from_head_layer``, the head layer's width."""
    a = cfg.args
    if not a.checkpoint:
        if a.from_head_layer:
            raise ConfigError("--from_head_layer needs --checkpoint (a random-init head layer "
                              "is --head_dim N)")
        return None
    encoder, ssl_cfg = ssl_encoder(a.checkpoint, a.from_head_layer)
    cfg.backbone, cfg.small_stem = ssl_cfg.backbone, ssl_cfg.small_stem
    a.head_dim = head_width(encoder)
    return encoder


def _classes(cfg: Config, index: DatasetIndex) -> None:
    cfg.args.num_classes = cfg.args.num_classes or len(index.classes)


def finetune(cfg: Config) -> Result:
    """Fine-tune from ``--checkpoint`` (or train from random init) on the labelled subset."""
    index = dataset_index(cfg.data)
    _classes(cfg, index)
    encoder = _pretrained(cfg)
    subset = subset_split(index.train, _labelled(cfg, index))

    def build(c: Config, ctx: MethodContext) -> Classifier:
        return _initialised(Classifier(c.args, ctx), encoder)

    return train(cfg, Task(Classifier, build, subset, top1, "top1", "init_top1"))


def distill(cfg: Config) -> tuple[Result, float]:
    """Distil ``--teacher`` into a student on every train image; returns the student's result
    and the teacher's top-1."""
    a = cfg.args
    if not a.teacher:
        raise ConfigError("fastssl distill needs --teacher CKPT (a finetune / distill / "
                          "selftrain checkpoint)")
    teacher, t_cfg = load_classifier(a.teacher)
    index = dataset_index(cfg.data)
    cfg.backbone, cfg.small_stem = a.student or t_cfg.backbone, t_cfg.small_stem
    a.num_classes = t_cfg.args.num_classes
    # self-distillation copies the whole architecture; a different student gets a linear layer
    a.head_dim = t_cfg.args.head_dim if cfg.backbone == t_cfg.backbone else 0
    labelled = _labelled(cfg, index) if a.alpha > 0 else []
    human = human_labels(index.train, labelled)
    device = distributed.resolve_device(cfg.device)
    teacher_top1 = top1(teacher.to(device), index, cfg, device)
    log.info("teacher %s: top-1 %.2f", a.teacher, teacher_top1)

    def build(c: Config, ctx: MethodContext) -> Distill:
        return Distill(c.args, ctx, teacher, human)

    result = train(cfg, Task(Distill, build, with_ids(index.train), top1, "top1", "init_top1"))
    return result, teacher_top1


def _stage(cfg: Config, out: Path, args: FinetuneArgs, **changes: Any) -> Config:
    return dataclasses.replace(cfg, out=str(out), args=args, **changes)


def selftrain(cfg: Config) -> tuple[Result, list[float]]:
    """Teacher (trained on the labelled subset, or ``--teacher``) -> pseudo-labels -> student on
    human + pseudo labels, ``--iterations`` times. Returns the last student's result and the
    top-1 of each teacher (the first, then every student that became one)."""
    a: SelfTrainArgs = cfg.args
    if a.iterations < 1:
        raise ConfigError(f"--iterations must be >= 1, got {a.iterations}")
    index = dataset_index(cfg.data)
    _classes(cfg, index)
    encoder = _pretrained(cfg)
    labelled = _labelled(cfg, index)
    out, device = Path(cfg.out), distributed.resolve_device(cfg.device)
    if a.teacher:
        teacher, _ = load_classifier(a.teacher)
        teacher_top1 = top1(teacher.to(device), index, cfg, device)
    else:  # a fine-tuning run on the labelled subset, from the same initialisation
        t_args = FinetuneArgs(**{f.name: getattr(a, f.name)
                                 for f in dataclasses.fields(FinetuneArgs)})
        t_cfg = _stage(cfg, out / "teacher", t_args, method="finetune",
                       epochs=a.teacher_epochs, batch_size=a.teacher_batch_size)
        teacher_top1 = finetune(t_cfg).knn_top1
        teacher, _ = load_classifier(out / "teacher" / "checkpoints" / "last.pt")
    tops = [teacher_top1]
    human = human_labels(index.train, labelled)
    ids = oversampled(index.train, labelled, a.labelled_share)
    result = None
    for k in range(1, a.iterations + 1):
        probs, _ = probabilities(teacher.to(device), index.train, crop_size=cfg.crop_size,
                                 workers=cfg.workers, device=device)
        pseudo = pseudo_targets(probs, human >= 0, a.pseudo, a.threshold)
        log.info("iteration %d: pseudo-labels on %d of %d unlabelled images (threshold %.2f)",
                 k, int((pseudo.sum(1) > 0).sum()), int((human < 0).sum()), a.threshold)
        s_cfg = _stage(cfg, out / f"student_{k}", a)
        build = partial(_student, encoder=encoder, human=human, pseudo=pseudo)
        result = train(s_cfg, Task(SelfTrain, build, ids, top1, "top1", "init_top1"))
        if result.stopped_early:
            break
        teacher, _ = load_classifier(out / f"student_{k}" / "checkpoints" / "last.pt")
        tops.append(result.knn_top1)
    assert result is not None
    return result, tops


def _student(c: Config, ctx: MethodContext, *, encoder: nn.Sequential | None,
             human: torch.Tensor, pseudo: torch.Tensor) -> SelfTrain:
    return _initialised(SelfTrain(c.args, ctx, human, pseudo), encoder)


def main(name: str, tokens: list[str]) -> int:
    """Run command ``name`` (``finetune``, ``distill`` or ``selftrain``) with its options."""
    if "-h" in tokens or "--help" in tokens:
        cls = COMMANDS[name]
        print(f"{USAGE[name]}\n\n{help_text(cls.Args, name, cls.config_defaults)}")
        return 0
    cfg = resolve_command(name, tokens)
    teacher = ""
    if name == "finetune":
        result = finetune(cfg)
    elif name == "distill":
        result, t = distill(cfg)
        teacher = f" teacher_top1={t:.2f}"
    else:
        result, tops = selftrain(cfg)
        teacher = f" teacher_top1={tops[0]:.2f}" + "".join(
            f" student{k}_top1={t:.2f}" for k, t in enumerate(tops[1:], 1))
    if result.stopped_early:
        print(f"stopped at step {result.steps}; resume with: fastssl {name} --out {cfg.out} "
              "--resume (and the same options)", file=sys.stderr)
        return 143
    print(result.summary() + teacher, flush=True)
    return 0

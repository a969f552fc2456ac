"""The networks the semi-supervised commands train, as ``fastssl.methods`` methods (the one
training loop runs them): a classifier over a backbone (+ SimCLR's first head layer), its
distillation student and its self-training student."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from fastssl import checkpoint
from fastssl.batch import Batch
from fastssl.config import Config, from_dict, opt
from fastssl.methods import load_method
from fastssl.methods.base import Method, MethodContext, Outputs
from fastssl.models.heads import mlp
from fastssl.semisup.losses import (
    distill_loss,
    masked_mean,
    normalised_loss,
    running_mean,
    soft_cross_entropy,
)

# Small-data defaults (the embedded shapes set on a CPU; the paper settings are the
# configs/finetune_{lars,sgd,adamw}.yaml presets): AdamW at 1e-3 for a batch of 32, cosine to 0,
# no warm-up, one top-1 evaluation at the end.
CLASSIFIER_DEFAULTS: dict[str, Any] = {"batch_size": 32, "epochs": 30, "lr": 8e-3,
                                       "weight_decay": 1e-4, "warmup_epochs": 0.0,
                                       "min_lr_ratio": 0.0, "eval_every": 0}


@dataclass
class ClassifierArgs:
    labels: str = opt("10%", "labelled subset of train/: P% or N images, class-balanced, seeded")
    head_dim: int = opt(0, "width of the head layer under the classifier (set from the "
                           "checkpoint by --from_head_layer); 0 = backbone features")
    num_classes: int = opt(0, "classes; 0 = the data set's")


@dataclass
class FinetuneArgs(ClassifierArgs):
    checkpoint: str = opt("", "SSL checkpoint to start from; empty = random init (supervised)")
    from_head_layer: bool = opt(False, "start from SimCLR v2's first head layer, not the backbone")


@dataclass
class DistillArgs(ClassifierArgs):
    teacher: str = opt("", "classifier checkpoint to distil (from finetune / distill / selftrain)")
    student: str = opt("", "student backbone; empty = the teacher's (self-distillation)")
    temperature: float = opt(1.0, "distillation temperature")
    alpha: float = opt(0.0, "weight of the cross-entropy on the labelled subset; 0 = none")


@dataclass
class SelfTrainArgs(FinetuneArgs):
    teacher: str = opt("", "classifier checkpoint as the first teacher; empty = train one on "
                          "the labelled subset")
    teacher_epochs: int = opt(30, "epochs of the teacher trained on the labelled subset")
    teacher_batch_size: int = opt(32, "batch of the teacher trained on the labelled subset")
    pseudo: str = opt("soft", "pseudo-labels: soft (teacher probabilities) | hard (one-hot)")
    threshold: float = opt(0.3, "unlabelled images whose top teacher probability is lower get "
                                "no pseudo-label")
    labelled_share: float = opt(0.5, "share of each student epoch drawn from the labelled "
                                     "images (repeated); 0 = their natural share")
    alpha: float = opt(1.0, "weight of the pseudo-label loss")
    normalise: bool = opt(True, "Zoph et al.'s loss normalisation by running means")
    mean_momentum: float = opt(0.99, "momentum of the running means of the two losses")
    iterations: int = opt(1, "student generations; each student is the next teacher")


class Classifier(Method):
    """Backbone (+ SimCLR's first head layer, Linear-BN-ReLU) + a linear classifier, trained
    with cross-entropy on the labelled subset (the batch ``labels`` are classes)."""

    name = "finetune"
    views = "s1"
    inputs = ("views", "labels")
    Args: ClassVar[type] = FinetuneArgs
    config_defaults = CLASSIFIER_DEFAULTS

    def __init__(self, args: ClassifierArgs, ctx: MethodContext) -> None:
        super().__init__(args, ctx)
        if args.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {args.num_classes}")
        # SimCLR's hidden head layer (``mlp``'s Linear-BN-ReLU), so its weights load 1:1
        layer = list(mlp([self.feat_dim, args.head_dim, 1]))[:3] if args.head_dim > 0 else []
        self.head = nn.Sequential(*layer)
        self.fc = nn.Linear(args.head_dim or self.feat_dim, args.num_classes)

    def encoder(self) -> nn.Sequential:
        """Backbone + head layer: the same layout as ``SimCLR.encoder(head_layers=1)``."""
        return nn.Sequential(self.backbone, *self.head)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(self.head(self.backbone(images)))

    def forward(self, batch: Batch) -> Outputs:
        return {"loss": F.cross_entropy(self.logits(batch["views"][0]), batch["labels"])}

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))


class Distill(Classifier):
    """SimCLR v2 distillation: the student learns the frozen teacher's softened predictions on
    every train image (the same augmented view for both), plus ``alpha`` times the
    cross-entropy on the labelled subset. The batch ``labels`` are sample ids
    (``subsets.with_ids``)."""

    name = "distill"
    Args = DistillArgs
    human: torch.Tensor
    config_defaults = {**CLASSIFIER_DEFAULTS, "batch_size": 64, "epochs": 20}

    def __init__(self, args: DistillArgs, ctx: MethodContext, teacher: Classifier,
                 human: torch.Tensor) -> None:
        super().__init__(args, ctx)
        self.temperature, self.alpha = args.temperature, args.alpha
        # frozen: ``split_decay`` leaves parameters without gradient out of the optimiser
        self.teacher = teacher.requires_grad_(False).eval()
        self.register_buffer("human", human.clone())

    def train(self, mode: bool = True) -> Distill:
        super().train(mode)
        self.teacher.eval()  # frozen, BatchNorm statistics included
        return self

    def forward(self, batch: Batch) -> Outputs:
        images = batch["views"][0]
        with torch.no_grad():
            teacher = self.teacher.logits(images)
        logits = self.logits(images)
        loss_d = distill_loss(logits, teacher, self.temperature)
        out = {"loss_distill": loss_d.detach()}
        if self.alpha > 0:
            y = self.human[batch["labels"]]
            loss_h = masked_mean(F.cross_entropy(logits, y.clamp(min=0), reduction="none"),
                                 y >= 0)
            out["loss_h"] = loss_h.detach()
            loss_d = loss_d + self.alpha * loss_h
        return {"loss": loss_d, **out}


class SelfTrain(Classifier):
    """Zoph et al. 2020's student: cross-entropy on human labels (L_h) and on the teacher's
    pseudo-labels (L_p) of the other images, combined by ``normalised_loss`` with running means
    kept in buffers (checkpointed). The batch ``labels`` are sample ids; ``human`` (N,) holds
    the class or -1 and ``pseudo`` (N, C) the pseudo-label distribution (zero rows: none)."""

    name = "selftrain"
    Args = SelfTrainArgs
    human: torch.Tensor
    pseudo: torch.Tensor
    mean_h: torch.Tensor
    mean_p: torch.Tensor
    seen_h: torch.Tensor
    seen_p: torch.Tensor
    config_defaults = {**CLASSIFIER_DEFAULTS, "batch_size": 64, "epochs": 20}

    def __init__(self, args: SelfTrainArgs, ctx: MethodContext, human: torch.Tensor,
                 pseudo: torch.Tensor) -> None:
        super().__init__(args, ctx)
        self.alpha, self.normalise, self.momentum = args.alpha, args.normalise, args.mean_momentum
        self.register_buffer("human", human.clone())
        self.register_buffer("pseudo", pseudo.clone())
        for name in ("mean_h", "mean_p", "seen_h", "seen_p"):
            self.register_buffer(name, torch.zeros(()))

    def forward(self, batch: Batch) -> Outputs:
        ids = batch["labels"]
        logits = self.logits(batch["views"][0])
        y, q = self.human[ids], self.pseudo[ids]
        has_h, has_p = y >= 0, q.sum(1) > 0
        loss_h = masked_mean(F.cross_entropy(logits, y.clamp(min=0), reduction="none"), has_h)
        loss_p = masked_mean(soft_cross_entropy(logits, q), has_p)
        seen_h, seen_p = self.seen_h > 0, self.seen_p > 0
        mean_h = torch.where(has_h.any(), running_mean(self.mean_h, loss_h, seen_h,
                                                       self.momentum), self.mean_h)
        mean_p = torch.where(has_p.any(), running_mean(self.mean_p, loss_p, seen_p,
                                                       self.momentum), self.mean_p)
        if self.normalise:  # before both means exist the ratio is 1
            ready = (seen_h | has_h.any()) & (seen_p | has_p.any())
            loss = normalised_loss(loss_h, loss_p, torch.where(ready, mean_h, 1.0),
                                   torch.where(ready, mean_p, 1.0), self.alpha)
        else:
            loss = (loss_h + self.alpha * loss_p) / (1 + self.alpha)
        return {"loss": loss, "loss_h": loss_h.detach(), "loss_p": loss_p.detach(),
                "mean_h": mean_h, "mean_p": mean_p,
                "seen_h": (seen_h | has_h.any()).float(), "seen_p": (seen_p | has_p.any()).float()}

    def on_train_step_end(self, outputs: Outputs, step: int) -> None:
        for name in ("mean_h", "mean_p", "seen_h", "seen_p"):
            getattr(self, name).copy_(outputs[name])


def ssl_encoder(path: str, from_head_layer: bool) -> tuple[nn.Sequential, Config]:
    """The pretrained encoder of an SSL checkpoint (``fastssl train``): the backbone, or with
    ``from_head_layer`` the backbone + the first projection-head layer (SimCLR v2), and the
    checkpoint's config."""
    model, cfg = load_method(path)
    if not from_head_layer:
        return nn.Sequential(model.backbone), cfg
    encoder = getattr(model, "encoder", None)
    if encoder is None:
        raise ValueError(f"{path}: method '{cfg.method}' has no projection head layer to "
                         "fine-tune from; drop --from_head_layer")
    return encoder(head_layers=1), cfg


def head_width(encoder: nn.Sequential) -> int:
    """Output width of the head layer in ``encoder`` (0 when it is the backbone alone)."""
    linears = [m for m in list(encoder)[1:] if isinstance(m, nn.Linear)]
    return linears[0].out_features if linears else 0


COMMANDS: dict[str, type[Classifier]] = {c.name: c for c in (Classifier, Distill, SelfTrain)}


def load_classifier(path: str | Path) -> tuple[Classifier, Config]:
    """The classifier of a ``finetune`` / ``distill`` / ``selftrain`` checkpoint (without a
    distillation teacher or self-training buffers) and the checkpoint's config."""
    state = checkpoint.load(path)
    method = state.get("config", {}).get("method")
    if method not in COMMANDS:
        raise ValueError(f"{path} is a '{method}' checkpoint, not a classifier (from fastssl "
                         f"{' / '.join(COMMANDS)})")
    cfg = from_dict(state["config"], COMMANDS)
    a = cfg.args
    ctx = MethodContext.from_config(cfg, steps_per_epoch=1, inputs={"views", "labels"})
    model = Classifier(ClassifierArgs(head_dim=a.head_dim, num_classes=a.num_classes), ctx)
    own = model.state_dict().keys()
    model.load_state_dict({k: v for k, v in state["model"].items() if k in own})
    return model, cfg

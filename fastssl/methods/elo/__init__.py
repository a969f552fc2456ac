"""ELo (Piergiovanni, Angelova, Ryoo, CVPR 2020): multi-modal, multi-task self-supervised video
learning with the flow and audio networks distilled into the RGB network. The loss of one
candidate is L = sum_t w_t L_t + sum_d w_d L_d with every weight in [0, 1] (the tasks of
``tasks.py``, the distillation of ``distill.py`` beside this file); ``fastssl elo search`` finds
the weights without labels, ``--elo_weights FILE`` trains with them. ``embed`` is the RGB
network (kNN on clips, like every video method).

Terms (weight names): ``reconstruct:rgb``, ``predict:rgb``, ``predict:flow``, ``order:rgb``,
``order:flow``, ``contrast:audio``, ``contrast:flow``, ``contrast:rgb`` (RGB-only baseline),
``align:audio``, ``align:flow``, ``transfer:audio``, ``transfer:flow``,
``distill:<flow|audio>@<block>`` (1-based blocks; ``--distill_layers`` without weights). A term
with weight 0 is not built (no head, no compute).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fastssl.batch import Batch
from fastssl.config import ConfigError, opt
from fastssl.methods.base import Method, MethodContext, Outputs
from fastssl.methods.elo.distill import Distiller, block_widths, tap
from fastssl.methods.elo.tasks import (
    AlignTask,
    ContrastTask,
    Encoded,
    OrderTask,
    PredictTask,
    TransferTask,
    ViewContrastTask,
)
from fastssl.models.video import audio_cnn, rgb_backbone, video_backbone

TASK_TERMS = ("reconstruct:rgb", "predict:rgb", "predict:flow", "order:rgb", "order:flow",
              "contrast:audio", "contrast:flow", "contrast:rgb", "align:audio", "align:flow",
              "transfer:audio", "transfer:flow")
# the loss of the default run (no --elo_weights): the paper's terms that apply, weight 1
DEFAULT_TERMS = ("reconstruct:rgb", "predict:rgb", "order:rgb", "contrast:audio",
                 "contrast:flow", "align:audio", "transfer:flow")
DISTILL_TERM = re.compile(r"distill:(flow|audio)@[1-9][0-9]*")
CHANNELS = {"rgb": 3, "flow": 2}
# one sample of each modality, only to read the blocks' channel counts
PROBE_SHAPES = {"rgb": (3, 4, 16, 16), "flow": (2, 4, 16, 16), "audio": (1, 40, 50)}


def distill_terms(layers: tuple[int, ...]) -> tuple[str, ...]:
    return tuple(f"distill:{m}@{i}" for m in ("flow", "audio") for i in layers)


def parse_layers(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--distill_layers: expected block numbers like 2,3, got {text!r}") \
            from None


def load_weights(spec: str, layers: tuple[int, ...]) -> dict[str, float]:
    """The loss weights of ``spec``: a JSON file (``{"weights": {name: w}}``, as ``fastssl elo
    search`` writes, or a plain mapping), inline ``name=w,name=w``, or empty (every default
    term and distillation pair at ``layers`` at 1). Terms not named weigh 0."""
    if not spec:
        return {t: 1.0 for t in (*DEFAULT_TERMS, *distill_terms(layers))}
    if "=" in spec:
        pairs = (item.split("=", 1) for item in spec.split(",") if item.strip())
        raw: dict[str, float] = {k.strip(): float(v) for k, v in pairs}
    else:
        data = json.loads(Path(spec).read_text())
        raw = {k: float(v) for k, v in data.get("weights", data).items()}
    for name, w in raw.items():
        if name not in TASK_TERMS and not DISTILL_TERM.fullmatch(name):
            raise ConfigError(f"--elo_weights: unknown term {name!r} (known: "
                              f"{', '.join(TASK_TERMS)}, distill:<flow|audio>@<block>)")
        if not 0.0 <= w <= 1.0:
            raise ConfigError(f"--elo_weights: {name} = {w} is outside [0, 1]")
    return raw


@dataclass
class EloArgs:
    elo_weights: str = opt("", "loss weights: a JSON file from `fastssl elo search` (best.json), "
                           "inline name=w,name=w, or empty (the default terms at 1)")
    video_backbone: str = opt("small3d", "small3d | r3d_18 | r2plus1d_18 (RGB and flow)")
    rgb_input: str = opt("residual", "rgb | residual: the RGB network reads raw frames or "
                         "differences of consecutive frames (as av_contrastive)")
    distill_layers: str = opt("3", "blocks of the RGB network distilled from flow and audio "
                              "without --elo_weights (comma-separated, 1-based; weights name "
                              "their blocks: distill:flow@2)")
    horizon: int = opt(1, "predict:* predicts this many frames from the clip's others")
    temperature: float = opt(0.1, "InfoNCE temperature of the contrastive tasks")
    proj_hidden_dim: int = opt(128, "hidden width of the task heads")
    proj_dim: int = opt(64, "output width of the contrastive heads")


class Elo(Method):
    name = "elo"
    inputs = ("clips", "audio", "flow")
    Args = EloArgs
    # two clips per video: the second is "another moment" (contrastive negatives, contrast:rgb);
    # compile off: with the default terms, torch.compile's backward fails on CPU with an in-place
    # version error on a 128-wide tensor (each term alone compiles; not resolved yet)
    config_defaults = {"global_crops": 2, "crop_size": 32, "global_scale": (0.5, 1.0),
                       "channels_last": False, "compile": "off"}

    def __init__(self, args: EloArgs, ctx: MethodContext) -> None:
        super().__init__(args, ctx)
        layers = parse_layers(args.distill_layers)
        self.weights = {k: w for k, w in load_weights(args.elo_weights, layers).items() if w > 0}
        self.backbone, self.feat_dim = rgb_backbone(args.video_backbone, args.rgb_input)
        used = {t.split(":")[1].split("@")[0] for t in self.weights}
        dims = {"rgb": self.feat_dim}
        self.flow_net: nn.Module | None = None
        self.audio_net: nn.Module | None = None
        if "flow" in used:
            self.flow_net, dims["flow"] = video_backbone(args.video_backbone, 2)
        if "audio" in used:
            self.audio_net, dims["audio"] = audio_cnn()
        self.tasks = nn.ModuleDict({t: self._task(t, args, dims) for t in TASK_TERMS
                                    if t in self.weights})
        self.distillers = nn.ModuleDict()
        self.layers = sorted({int(t.split("@")[1]) for t in self.weights if "@" in t})
        if self.layers:
            widths = {m: block_widths(net, PROBE_SHAPES[m]) for m, net in self.encoders().items()}
            for t in self.weights:
                if t.startswith("distill:"):
                    m, i = t.split(":")[1].split("@")
                    if int(i) > min(len(widths["rgb"]), len(widths[m])):
                        raise ConfigError(f"--elo_weights: {t}: the networks have "
                                          f"{min(len(widths['rgb']), len(widths[m]))} blocks")
                    self.distillers[t] = Distiller(widths["rgb"][int(i) - 1],
                                                   widths[m][int(i) - 1])

    def encoders(self) -> dict[str, nn.Module]:
        nets = {"rgb": self.backbone, "flow": self.flow_net, "audio": self.audio_net}
        return {m: net for m, net in nets.items() if net is not None}

    @staticmethod
    def _task(term: str, a: EloArgs, dims: dict[str, int]) -> nn.Module:
        kind, m = term.split(":")
        if kind in ("reconstruct", "predict"):
            return PredictTask(m, dims[m], CHANNELS[m], 0 if kind == "reconstruct" else a.horizon)
        if kind == "order":
            return OrderTask(m, dims[m])
        if kind == "contrast" and m == "rgb":
            return ViewContrastTask(dims["rgb"], a.proj_hidden_dim, a.proj_dim, a.temperature)
        if kind == "contrast":
            return ContrastTask(m, dims["rgb"], dims[m], a.proj_hidden_dim, a.proj_dim,
                                a.temperature)
        if kind == "align":
            return AlignTask(m, dims["rgb"], dims[m], a.proj_hidden_dim)
        return TransferTask(m, dims["rgb"], dims[m], a.proj_hidden_dim)

    def forward(self, batch: Batch) -> Outputs:
        clips = batch["clips"]
        nets = self.encoders()
        inputs = {"rgb": clips[0]}
        if self.flow_net is not None:
            inputs["flow"] = batch["flow"]
        if self.audio_net is not None:
            inputs["audio"] = batch["audio"]
        feats: dict[str, torch.Tensor] = {}
        acts: dict[str, dict[int, torch.Tensor]] = {}
        for m, net in nets.items():
            with tap(net, self.layers) as a:
                feats[m] = net(inputs[m])
            acts[m] = dict(a)
        others = [self.backbone(c) for c in clips[1:]] if self._needs_others() else []
        enc = Encoded(inputs, nets, feats, others)
        losses = {t: task(enc) for t, task in self.tasks.items()}
        for t, distiller in self.distillers.items():
            m, i = t.split(":")[1].split("@")
            losses[t] = distiller(acts["rgb"][int(i)], acts[m][int(i)])
        # the zero term keeps a graph when every weight is 0 (a candidate that trains nothing)
        total = feats["rgb"].sum() * 0.0
        for t, loss in losses.items():
            total = total + self.weights[t] * loss
        out: Outputs = {"loss": total}
        out.update({f"loss_{t}": loss.detach() for t, loss in losses.items()})
        return out

    def _needs_others(self) -> bool:
        return any(t.startswith(("contrast:", "align:")) for t in self.tasks)

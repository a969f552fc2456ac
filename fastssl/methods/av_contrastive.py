"""Audio-visual contrastive learning: an RGB clip's positives are its own audio and its own
optical flow; the other clips of the (global) batch are the negatives (cross-modal InfoNCE in
both directions, as in AVID / XDC-style cross-modal instance discrimination).

Inputs: ``clips[0]`` (B, 3, T, H, W), ``audio`` (B, 1, mels, frames) under the clip's time span
and ``flow`` (B, 2, T, H, W) at its frames. ``embed`` is the RGB backbone (kNN on clips).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastssl.batch import Batch
from fastssl.config import opt
from fastssl.distributed import gather, gather_with_grad
from fastssl.kernels import info_nce
from fastssl.methods.base import Method, MethodContext, Outputs
from fastssl.models.heads import mlp
from fastssl.models.video import audio_cnn, rgb_backbone, video_backbone


def symmetric_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cross-modal InfoNCE in both directions: row i of ``a`` and of ``b`` are positives, every
    other row of the other modality a negative. (B, D) each."""
    return 0.5 * (info_nce(a, b, temperature=temperature)
                  + info_nce(b, a, temperature=temperature))


@dataclass
class AVContrastiveArgs:
    video_backbone: str = opt("small3d", "small3d | r3d_18 | r2plus1d_18 (RGB and flow)")
    rgb_input: str = opt("residual", "rgb | residual: the RGB encoder reads raw frames or "
                         "differences of consecutive frames (FrameResidual)")
    temperature: float = opt(0.1, "InfoNCE temperature")
    proj_hidden_dim: int = opt(256, "head hidden width")
    proj_dim: int = opt(128, "head output width")
    flow_weight: float = opt(1.0, "weight of the RGB-flow terms (audio's is 1)")


class AVContrastive(Method):
    name = "av_contrastive"
    inputs = ("clips", "audio", "flow")
    Args = AVContrastiveArgs
    # channels_last is for 4-D tensors: the 3-D convolutions keep the default layout; crops of
    # at least half the frame keep the moving object in view of the RGB clip and its flow.
    # Batch 32 and 60 epochs fit the 2-core CPU in minutes on the embedded AV set (320 clips);
    # kNN with k=20 since a video set has tens of clips per class, not hundreds.
    config_defaults = {"global_crops": 1, "crop_size": 32, "global_scale": (0.5, 1.0),
                       "channels_last": False, "batch_size": 32, "lr": 0.02, "epochs": 60,
                       "knn_k": 20}

    def __init__(self, args: AVContrastiveArgs, ctx: MethodContext) -> None:
        super().__init__(args, ctx)
        self.backbone, self.feat_dim = rgb_backbone(args.video_backbone, args.rgb_input)
        self.flow_net, flow_dim = video_backbone(args.video_backbone, 2)
        self.audio_net, audio_dim = audio_cnn()
        self.heads = torch.nn.ModuleDict({
            k: mlp([d, args.proj_hidden_dim, args.proj_dim])
            for k, d in (("rgb", self.feat_dim), ("flow", flow_dim), ("audio", audio_dim))})
        self.temperature, self.flow_weight = args.temperature, args.flow_weight

    def forward(self, batch: Batch) -> Outputs:
        clips = batch["clips"]
        z_v = gather_with_grad(self.heads["rgb"](self.backbone(clips[0])))
        z_a = gather_with_grad(self.heads["audio"](self.audio_net(batch["audio"])))
        z_f = gather_with_grad(self.heads["flow"](self.flow_net(batch["flow"])))
        t = self.temperature
        audio, flow = symmetric_nce(z_v, z_a, t), symmetric_nce(z_v, z_f, t)
        if len(clips) > 1:  # clips of the same videos at other times: negatives of view 0's
            with torch.no_grad():  # audio and flow (a queue term: no gradient, no in-batch keys)
                z_o = gather(self.heads["rgb"](self.backbone(torch.cat(list(clips[1:])))))
            audio = audio + info_nce(z_a, z_v, z_o, temperature=t)
            flow = flow + info_nce(z_f, z_v, z_o, temperature=t)
        return {"loss": audio + self.flow_weight * flow, "loss_audio": audio.detach(),
                "loss_flow": flow.detach()}

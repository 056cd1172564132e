"""VGG cosine similarity (CSIM) per frame.

HVP (Lee et al. 2021, Sec. 4.1 and App. A) reports "VGG cosine similarity (CSIM) measuring the
frame-wise perceptual similarity using VGG features" without naming layers. The metric comes
from the video-prediction code of that line of work, where it is computed the same way in two
public implementations that differ only in which VGG16 feature maps they compare:

- ``layers="blocks"`` (default): the last ReLU of each of the 5 blocks (relu1_2, relu2_2,
  relu3_3, relu4_3, relu5_3) — ``vgg_cosine_similarity`` in the SAVP ``video_prediction`` code
  (Lee et al. 2018, ``metrics.py`` with ``vgg_network.vgg16``'s ``features``);
- ``layers="all"``: every conv ReLU and every pool (13 + 5 maps) — Tensor2Tensor's
  ``vgg_cosine_similarity`` (Wichers et al. 2018, "end points without fc").

For each map the cosine similarity of the two feature vectors is taken at every spatial position
(over channels, each vector divided by ``||f|| + 1e-10``), averaged over positions, and the maps'
values are averaged. Positions where a map is all zero (dead ReLUs) contribute 0 — which is why
identical frames can score slightly below 1 — exactly as in the references.

Frames are fed at their own resolution (``resize=None``, as the SAVP code does; HVP evaluates at
64x64) or resized so that the shorter side is ``resize`` (bilinear). Inputs are normalised with
torchvision's ImageNet mean/std, which is what the torchvision VGG16 weights expect (the
references used Caffe-converted weights with BGR mean subtraction instead; with other weights the
numbers are not expected to match theirs exactly).
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from vpcli.errors import DataFormatError, WeightsError
from vpcli.metrics._checks import (
    check_batch_size,
    check_pair,
    chunks,
    flatten_frames,
    load_tensor_file,
    resolve_weights_file,
)
from vpcli.metrics.backbones import VGG16, convert_torchvision_state_dict

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORM_EPS = 1e-10
LAYER_SETS = {
    "blocks": VGG16.BLOCK_RELU_TAPS,
    "all": tuple(sorted(VGG16.ALL_RELU_TAPS + VGG16.POOL_TAPS)),
}
DEFAULT_WEIGHTS = "vgg16-imagenet"


def how_to_get_weights() -> str:
    return f"CSIM needs torchvision's ImageNet VGG16: vpcli weights download {DEFAULT_WEIGHTS}"


class CSIM(nn.Module):
    """VGG16 cosine similarity per frame: ``CSIM()(pred, target) -> (B, T)``, higher is better."""

    name = "csim"
    kind = "frame"
    higher_is_better = True

    def __init__(self, weights: str | os.PathLike = DEFAULT_WEIGHTS, *, pretrained: bool = True,
                 layers: str = "blocks", resize: int | None = None, batch_size: int | None = 16):
        super().__init__()
        if layers not in LAYER_SETS:
            raise ValueError(f"layers must be one of {sorted(LAYER_SETS)}, got {layers!r}")
        if resize is not None and (not isinstance(resize, int) or resize < 32):
            raise ValueError(f"resize must be None or an int >= 32, got {resize!r}")
        self.taps = LAYER_SETS[layers]
        self.layers = layers
        self.resize = resize
        self.batch_size = check_batch_size(batch_size)
        self.net = VGG16()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if pretrained:
            self.load_weights(weights)
        self.requires_grad_(False)
        self.eval()
        # NHWC convolutions are ~1.4x faster on CPU (oneDNN) and give the same values (to 1e-7).
        self.to(memory_format=torch.channels_last)

    def load_weights(self, weights: str | os.PathLike) -> None:
        path = resolve_weights_file(weights, "CSIM", how_to_get_weights())
        state = load_tensor_file(path)
        if any(k.startswith("net.") for k in state):  # our own files (CSIM or an LPIPS-vgg combined file)
            state = {k[len("net."):]: v for k, v in state.items() if k.startswith("net.")}
        if not any(k.startswith(("features.", "module.features.")) for k in state):
            raise WeightsError(f"CSIM: {path} holds no VGG16 features", how_to_get_weights())
        state = {k: v for k, v in state.items() if k.startswith(("features.", "module.features.", "classifier.",
                                                                   "module.classifier."))}
        self.net.load_state_dict(convert_torchvision_state_dict(state, "vgg16"), strict=True)

    def similarity(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """CSIM of two image batches ``N,3,H,W`` in ``[0, 1]``: ``(N,)``."""
        n = x0.shape[0]
        x = torch.cat([x0, x1], dim=0)  # 2N,3,H,W: one backbone pass
        if self.resize is not None:
            h, w = x.shape[-2:]
            s = self.resize / min(h, w)
            x = F.interpolate(x, size=(round(h * s), round(w * s)), mode="bilinear", align_corners=False)
        x = (x - self.mean) / self.std
        x = x.contiguous(memory_format=torch.channels_last)
        total = torch.zeros(n, dtype=torch.float32, device=x.device)
        feats = self.net(x, self.taps)
        for f in feats:
            f = f / (f.square().sum(dim=1, keepdim=True).sqrt() + NORM_EPS)
            total = total + (f[:n] * f[n:]).sum(dim=1).mean(dim=(1, 2))  # cosine per position, mean over space
        return total / len(feats)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred, target = check_pair(pred, target)
        b, t, c, h, w = pred.shape
        if c not in (1, 3):
            raise DataFormatError(f"CSIM needs RGB (or grey) frames; got {c} channels", "pass B,T,3,H,W videos")
        if min(h, w) < 32 and self.resize is None:
            raise DataFormatError(f"CSIM: frames of {h}x{w} are too small for VGG16's five poolings",
                                  "use frames of at least 32x32 or pass resize=64")
        device = self.mean.device
        x0_all, x1_all = flatten_frames(pred), flatten_frames(target)
        out = torch.empty(b * t, dtype=torch.float32)
        for sl in chunks(b * t, self.batch_size):
            x0 = x0_all[sl].to(device=device, dtype=torch.float32).expand(-1, 3, -1, -1)
            x1 = x1_all[sl].to(device=device, dtype=torch.float32).expand(-1, 3, -1, -1)
            out[sl] = self.similarity(x0, x1).cpu()
        return out.view(b, t).to(pred.device)


def csim(pred: torch.Tensor, target: torch.Tensor, *, model: CSIM | None = None) -> torch.Tensor:
    """Per-frame CSIM ``(B, T)``; builds (and resolves weights for) ``CSIM()`` unless ``model`` is given."""
    model = model if model is not None else CSIM()
    return model(pred, target)

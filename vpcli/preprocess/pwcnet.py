"""PWC-Net (Sun, Yang, Liu, Kautz, "PWC-Net: CNNs for Optical Flow Using Pyramid, Warping, and
Cost Volume", CVPR 2018) in plain torch: no CUDA-only correlation kernel, runs on any device.

Architecture (the released Caffe model as re-implemented by sniklaus/pytorch-pwc, whose
``network-default`` weights :func:`convert_pwcnet_sniklaus` loads):

- feature pyramid: 6 levels of 3 convs (3x3, LeakyReLU 0.1), the first of each with stride 2;
  16, 32, 64, 96, 128, 196 channels at 1/2 .. 1/64 of the input;
- per level, coarse (6) to fine (2): upsample the previous flow and features (4x4 transposed
  convs), backward-warp the second image's features with the flow, a cost volume over a search
  range of 4 (81 displacements; the mean over channels of the feature product, then LeakyReLU),
  and a decoder of 5 densely connected 3x3 convs (128, 128, 96, 64, 32; each output is
  concatenated in front of its input) followed by a 3x3 conv to 2 flow channels;
- a context network of dilated 3x3 convs (dilation 1, 2, 4, 8, 16, 1, 1) on the level-2 decoder
  features adds a residual to the level-2 flow;
- the network predicts flow / 20 at 1/4 resolution (the Caffe training convention); ``forward``
  returns it times 20, i.e. in pixels of the (multiple-of-64) network input at 1/4 resolution.

:func:`estimate_pwcnet` resizes inputs to multiples of 64 (bilinear, like the reference), runs
the network and resizes the flow back to the input size, scaling u by W/W64 and v by H/H64.

Cost volume: a Python loop over the 81 displacements of a zero-padded second feature map, each
step a product with a shifted *view* and a channel mean. Measured on 2 CPU cores (level 2 of a
256x512 input, 32x64x128 features): loop 7-11 ms, ``F.unfold`` 70 ms, a 6-D ``unfold`` +
``einsum`` 68 ms. ``unfold`` materialises 81 shifted copies of the features (81x the memory
traffic) while the loop reads the same memory through views, so the loop wins everywhere except at
the tiny coarsest level (4x8), where it hardly matters.

Sizes (issue 16): nothing here depends on the input size except through the 1/2^l level maps, and
an analytic test (tests/test_pwcnet.py) checks every scaling: a model that predicts a constant
(u, v) at every level warps level l by (u, v) / 2^l cells and returns (u W/W64, v H/H64) at 256x384
and 480x640. What did depend on the size was the first bundled model's *training*: on 128-pixel
crops the level-6 map is 2x2 and most of its 9x9 cost-volume window is zero padding, so its coarse
decoders never saw a full window and answered 50-160 px for two identical 480x640 frames. The
bundled model is now trained on crops of 192x256 to 512x640 (scripts/train_pwcnet.py).

Colour: the sniklaus weights expect BGR in [0, 1]; the converter flips the first convolution's
input channels, so this module takes RGB in [0, 1] like everything else in vpcli.

Widths: :class:`PWCNetConfig` defaults to the shapes above (what the sniklaus weights need); its
``pyramid_channels``, ``dense_channels`` and ``context_channels`` may be narrowed, e.g. for the
bundled ``pwcnet-slim-synth`` model that vpcli trains itself (scripts/train_pwcnet.py), whose
manifest entry's ``config`` lists them. :meth:`PWCNet.forward_levels` returns every level's flow
for the multi-scale training loss.
"""
from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vpcli.errors import UsageError, VpcliError, WeightsError
from vpcli.preprocess import FlowEstimator
from vpcli.trainable import Trainable

SEARCH_RANGE = 4
NUM_DISPLACEMENTS = (2 * SEARCH_RANGE + 1) ** 2          # 81
PYRAMID_CHANNELS = (16, 32, 64, 96, 128, 196)            # levels 1..6
DENSE_CHANNELS = (128, 128, 96, 64, 32)                  # decoder convs, densely connected
CONTEXT_CHANNELS = (128, 128, 128, 96, 64, 32, 2)
CONTEXT_DILATIONS = (1, 2, 4, 8, 16, 1, 1)
FLOW_SCALE = 20.0                                        # the network predicts flow / 20
LEVELS = (6, 5, 4, 3, 2)                                 # decoders, coarse to fine
LEVEL_WEIGHTS = (0.32, 0.08, 0.02, 0.01, 0.005)          # training loss weights of levels 6..2 (paper)
MULTIPLE = 64                                            # 6 stride-2 levels
WEIGHTS_NAME = "pwcnet-sniklaus"                         # the published weights (not bundled)
DEFAULT_WEIGHTS = "pwcnet-slim-synth"                    # trained by vpcli, bundled (scripts/train_pwcnet.py)
# sniklaus/pytorch-pwc's own scripts fetch it over http; the manifest entry asks the same host over https.
WEIGHTS_URL = "https://content.sniklaus.com/github/pytorch-pwc/network-default.pytorch"


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.1)


# --------------------------------------------------------------------------------------------
# Building blocks


def cost_volume(f1: torch.Tensor, f2: torch.Tensor, search_range: int = SEARCH_RANGE) -> torch.Tensor:
    """Correlation of ``f1`` with ``f2`` shifted by every displacement in a (2r+1)^2 window.

    ``f1, f2``: ``(B, C, H, W)``. Returns ``(B, (2r+1)^2, H, W)`` where channel
    ``k = (dy + r) * (2r + 1) + (dx + r)`` holds ``mean_c f1[c, y, x] * f2[c, y + dy, x + dx]``
    (zero outside ``f2``): the layout of the reference correlation layer (``x`` offset fastest).
    """
    b, c, h, w = f1.shape
    r = search_range
    k = 2 * r + 1
    f2p = F.pad(f2, (r, r, r, r))  # zeros outside the image
    if torch.is_grad_enabled() and (f1.requires_grad or f2.requires_grad):
        outs = [(f1 * f2p[:, :, dy:dy + h, dx:dx + w]).mean(1) for dy in range(k) for dx in range(k)]
        return torch.stack(outs, 1)
    out = f1.new_empty((b, k * k, h, w))
    i = 0
    for dy in range(k):
        for dx in range(k):
            torch.sum(f1 * f2p[:, :, dy:dy + h, dx:dx + w], 1, out=out[:, i])  # no temporary list
            i += 1
    return out.div_(c)


def backward_warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample ``x`` at ``p + flow(p)`` (bilinear), zeroing pixels whose footprint leaves the image.

    ``x``: ``(B, C, H, W)``; ``flow``: ``(B, 2, H, W)`` in pixels. Like the reference, a ones
    channel is warped along and pixels where it drops below 0.999 (partly outside) are set to 0.
    """
    b, _, h, w = flow.shape
    # The sampling grid is always float32: under bf16 autocast the flow arrives in bf16, whose 8-bit
    # mantissa holds x + u only to 0.5 px once x >= 128 and to 1 px beyond 256 (level 2 of a 640-wide
    # input is 160 wide), i.e. warps off by up to 2 input pixels, and an arange in bf16 is not even
    # exact past 256. Sampling runs in float32 too (grid_sample needs one dtype for input and grid).
    flow = flow.float()
    ys, xs = torch.meshgrid(torch.arange(h, device=flow.device, dtype=torch.float32),
                            torch.arange(w, device=flow.device, dtype=torch.float32), indexing="ij")
    gx = (xs + flow[:, 0]) * (2.0 / max(w - 1, 1)) - 1.0  # (B, H, W), align_corners=True normalisation
    gy = (ys + flow[:, 1]) * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack([gx, gy], dim=-1)  # (B, H, W, 2), x first as grid_sample wants
    ones = x.new_ones((b, 1, h, w), dtype=torch.float32)
    with torch.autocast(x.device.type, enabled=False):
        out = F.grid_sample(torch.cat([x.float(), ones], 1), grid, mode="bilinear", padding_mode="zeros",
                            align_corners=True)
    mask = (out[:, -1:] > 0.999).to(out.dtype)
    return (out[:, :-1] * mask).to(x.dtype)


class FeaturePyramid(nn.Module):
    """Six levels of (stride-2 conv, conv, conv), LeakyReLU 0.1 after each; returns levels 1..6."""

    def __init__(self, channels: tuple[int, ...] = PYRAMID_CHANNELS):
        super().__init__()
        chans = (3, *channels)
        self.levels = nn.ModuleList(
            nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.LeakyReLU(0.1),
                          nn.Conv2d(cout, cout, 3, padding=1), nn.LeakyReLU(0.1),
                          nn.Conv2d(cout, cout, 3, padding=1), nn.LeakyReLU(0.1))
            for cin, cout in itertools.pairwise(chans))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for level in self.levels:
            x = level(x)
            feats.append(x)
        return feats  # [1/2, 1/4, ..., 1/64]


def _decoder_in(level: int, config: PWCNetConfig | None = None) -> int:
    """Input channels of the level's decoder: the cost volume, plus (below level 6) the first
    image's features, the upsampled flow and the upsampled decoder features (2 + 2)."""
    config = config or PWCNetConfig()
    return config.displacements + (0 if level == 6 else config.pyramid_channels[level - 1] + 2 + 2)


class FlowDecoder(nn.Module):
    """One pyramid level: warp, cost volume, densely connected convs, flow prediction."""

    def __init__(self, level: int, config: PWCNetConfig | None = None):
        super().__init__()
        config = config or PWCNetConfig()
        self.level = level
        self.search_range = config.search_range
        cin = _decoder_in(level, config)
        if level < 6:
            prev = _decoder_in(level + 1, config) + sum(config.dense_channels)  # the coarser decoder's feature width
            self.upflow = nn.ConvTranspose2d(2, 2, 4, stride=2, padding=1)
            self.upfeat = nn.ConvTranspose2d(prev, 2, 4, stride=2, padding=1)
            # Flow is carried in units of 1/20 full-resolution pixels; at level l a pixel is 2^l
            # input pixels, so warping needs flow * 20 / 2^l (5.0 at level 2 ... 0.625 at level 5).
            self.warp_scale = FLOW_SCALE / 2 ** level
        widths = [cin]
        self.dense = nn.ModuleList()
        for cout in config.dense_channels:
            self.dense.append(nn.Conv2d(sum(widths), cout, 3, padding=1))
            widths.append(cout)
        self.predict = nn.Conv2d(sum(widths), 2, 3, padding=1)

    def forward(self, f1: torch.Tensor, f2: torch.Tensor, prev_flow: torch.Tensor | None = None,
                prev_feat: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if prev_flow is None:
            x = _lrelu(cost_volume(f1, f2, self.search_range))
        else:
            flow = self.upflow(prev_flow)
            up = self.upfeat(prev_feat)
            volume = _lrelu(cost_volume(f1, backward_warp(f2, flow * self.warp_scale), self.search_range))
            x = torch.cat([volume, f1, flow, up], 1)  # reference order
        for conv in self.dense:
            x = torch.cat([_lrelu(conv(x)), x], 1)  # dense: new features in front
        return self.predict(x), x


class ContextNetwork(nn.Module):
    """Dilated convs on the level-2 decoder features; their output is added to the level-2 flow."""

    def __init__(self, cin: int, channels: tuple[int, ...] = CONTEXT_CHANNELS[:-1]):
        super().__init__()
        layers: list[nn.Module] = []
        outs = (*channels, 2)  # the last conv predicts the 2 flow channels
        for i, (cout, d) in enumerate(zip(outs, CONTEXT_DILATIONS, strict=True)):
            layers.append(nn.Conv2d(cin, cout, 3, padding=d, dilation=d))
            if i < len(outs) - 1:
                layers.append(nn.LeakyReLU(0.1))
            cin = cout
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@dataclass(frozen=True)
class PWCNetConfig:
    """Layer widths (what a manifest entry's ``config`` maps to). The defaults are the published
    network's, which the sniklaus weights need; narrower widths make a smaller model to train here.

    ``pyramid_channels``: the 6 feature levels (1/2 .. 1/64); ``dense_channels``: the 5 densely
    connected decoder convs (every level); ``context_channels``: the 6 hidden dilated convs of
    the context network (a 7th predicts the 2 flow channels); ``search_range``: cost-volume
    radius at every level, in feature pixels.
    """

    search_range: int = SEARCH_RANGE
    pyramid_channels: tuple[int, ...] = PYRAMID_CHANNELS
    dense_channels: tuple[int, ...] = DENSE_CHANNELS
    context_channels: tuple[int, ...] = CONTEXT_CHANNELS[:-1]

    def __post_init__(self):
        for name, n in (("pyramid_channels", 6), ("dense_channels", 5), ("context_channels", 6)):
            value = tuple(getattr(self, name))
            if len(value) != n or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in value):
                raise UsageError(f"PWC-Net {name} must be {n} positive integers, got {value}",
                                 f"the defaults are {getattr(PWCNetConfig, name)}")
            object.__setattr__(self, name, value)  # lists from YAML/JSON -> tuples (hashable, comparable)
        if not isinstance(self.search_range, int) or isinstance(self.search_range, bool) or not 1 <= self.search_range <= 8:
            raise UsageError(f"PWC-Net search_range must be an integer in 1..8, got {self.search_range!r}",
                             f"the published network uses {SEARCH_RANGE}")

    @property
    def displacements(self) -> int:
        return (2 * self.search_range + 1) ** 2

    @classmethod
    def scaled(cls, width: float, search_range: int = SEARCH_RANGE) -> PWCNetConfig:
        """Every width times ``width`` (rounded, at least 2): ``scaled(1.0)`` is the default."""
        def mul(chans: tuple[int, ...]) -> tuple[int, ...]:
            return tuple(max(2, round(c * width)) for c in chans)
        return cls(search_range=search_range, pyramid_channels=mul(PYRAMID_CHANNELS),
                   dense_channels=mul(DENSE_CHANNELS), context_channels=mul(CONTEXT_CHANNELS[:-1]))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PWCNetConfig:
        """From a manifest entry's ``config`` or a file's metadata; unknown keys are an error."""
        from vpcli.config import from_dict
        return from_dict(cls, {k: v for k, v in data.items() if k != "arch"})

    def to_dict(self) -> dict[str, Any]:
        return {"search_range": self.search_range, "pyramid_channels": list(self.pyramid_channels),
                "dense_channels": list(self.dense_channels), "context_channels": list(self.context_channels)}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> PWCNetConfig:
        """The widths of a vpcli state dict, read from its tensor shapes (a file without a config)."""
        try:
            pyramid = tuple(int(state[f"extractor.levels.{i}.0.weight"].shape[0]) for i in range(6))
            dense = tuple(int(state[f"decoders.level6.dense.{i}.weight"].shape[0]) for i in range(5))
            context = tuple(int(state[f"context.net.{2 * i}.weight"].shape[0]) for i in range(6))
            displacements = int(state["decoders.level6.dense.0.weight"].shape[1])
        except KeyError as err:
            raise WeightsError(f"PWC-Net weights lack {err.args[0]}",
                               "expected sniklaus/pytorch-pwc network-default weights or a vpcli PWC-Net export") from None
        r = (math.isqrt(displacements) - 1) // 2
        if (2 * r + 1) ** 2 != displacements:
            raise WeightsError(f"PWC-Net weights: level-6 decoder reads {displacements} channels, not a cost volume",
                               "expected a vpcli PWC-Net export")
        return cls(search_range=r, pyramid_channels=pyramid, dense_channels=dense, context_channels=context)


class PWCNet(Trainable):
    """``forward(img1, img2)``: RGB ``(B, 3, H, W)`` in [0, 1], H and W multiples of 64 ->
    flow ``(B, 2, H/4, W/4)`` from img1 to img2 in pixels of the input. Use
    :func:`estimate_pwcnet` for any size.

    A :class:`~vpcli.trainable.Trainable` (the training contract shared with the predictors), so
    :class:`vpcli.engine.trainer.Trainer` trains it on batches ``{"rgb": (B, 2, 3, H, W)`` frame
    pairs, ``"flow": (B, 1, 2, H, W)`` forward flow of each pair``}``: one step, the paper's
    multi-scale loss; the best checkpoint is chosen by validation EPE (pixels, full resolution)."""

    name = "pwcnet"
    validation_metric = ("epe", "min")

    def __init__(self, config: PWCNetConfig | None = None):
        config = config or PWCNetConfig()
        super().__init__(config)
        self.extractor = FeaturePyramid(config.pyramid_channels)
        self.decoders = nn.ModuleDict({f"level{lv}": FlowDecoder(lv, config) for lv in LEVELS})
        self.context = ContextNetwork(_decoder_in(2, config) + sum(config.dense_channels), config.context_channels)

    def forward(self, img1: torch.Tensor, img2: torch.Tensor) -> torch.Tensor:
        return self.forward_levels(img1, img2)[-1] * FLOW_SCALE

    def forward_levels(self, img1: torch.Tensor, img2: torch.Tensor,
                       feats: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """Every level's flow for the multi-scale training loss: ``[level 6, 5, 4, 3, 2]``, each
        ``(B, 2, H / 2^l, W / 2^l)`` in the network's units (flow / 20, in input pixels at every
        level, as the Caffe training targets); the last includes the context network's residual.
        ``forward`` is ``forward_levels(...)[-1] * 20``: the same graph, no extra work.
        ``feats``: ``self.extractor(cat([img1, img2]))`` when the caller has it already (a training
        loss that also supervises the features), so the pyramid runs once."""
        b, _, h, w = img1.shape
        if h % MULTIPLE or w % MULTIPLE:
            raise ValueError(f"PWCNet.forward needs H and W multiples of {MULTIPLE}, got {h}x{w}; "
                             "use estimate_pwcnet for other sizes")
        if feats is None:
            feats = self.extractor(torch.cat([img1, img2], 0))  # one pass for both images: (2B, C, h, w) per level
        flows: list[torch.Tensor] = []
        flow = feat = None
        for lv in LEVELS:
            f1, f2 = feats[lv - 1][:b], feats[lv - 1][b:]
            flow, feat = self.decoders[f"level{lv}"](f1, f2, flow, feat)
            flows.append(flow)
        flows[-1] = flow + self.context(feat)
        return flows


    # --- training contract ----------------------------------------------------------------
    @staticmethod
    def _pair(batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rgb, flow = batch["rgb"], batch["flow"]  # (B, 2, 3, H, W), (B, 1, 2, H, W)
        if rgb.dim() != 5 or rgb.shape[1] != 2 or flow.shape[1] != 1:
            raise ValueError(f"PWC-Net trains on frame pairs rgb (B, 2, 3, H, W) and flow (B, 1, 2, H, W), got "
                             f"{tuple(rgb.shape)} and {tuple(flow.shape)}")
        return rgb[:, 0], rgb[:, 1], flow[:, 0]

    def loss(self, batch: dict, state) -> dict[str, torch.Tensor]:
        a, b, gt = self._pair(batch)
        loss = multiscale_loss(self.forward_levels(a, b), gt)
        return {"loss": loss}

    @torch.no_grad()
    def validate(self, batch: dict, state) -> dict[str, float]:
        a, b, gt = self._pair(batch)
        flows = self.forward_levels(a, b)
        up = F.interpolate(flows[-1].float() * FLOW_SCALE, size=gt.shape[-2:], mode="bilinear", align_corners=False)
        return {"loss": float(multiscale_loss(flows, gt)),
                "epe": float(torch.linalg.vector_norm(up - gt.float(), dim=1).mean())}


def multiscale_loss(flows: list[torch.Tensor], target: torch.Tensor,
                    weights: tuple[float, ...] = LEVEL_WEIGHTS) -> torch.Tensor:
    """The paper's training loss: ``sum_l alpha_l * sum_x |flow_l(x) - gt_l(x)|_2``, mean over the batch.

    ``flows``: :meth:`PWCNet.forward_levels` (levels 6..2, flow / 20); ``target``: ``(B, 2, H, W)``
    ground truth in pixels at the input size. Each level's target is ``target / 20`` averaged over
    the level's cells (area downsampling; no magnitude rescale, the network's units are input
    pixels / 20 at every level), as in Sun et al. 2018, Sec. 4 (alpha = 0.32 .. 0.005).
    """
    scaled = target.float() / FLOW_SCALE  # (B, 2, H, W)
    loss = scaled.new_zeros(())
    for alpha, f in zip(weights, flows, strict=True):
        t = F.interpolate(scaled, size=f.shape[-2:], mode="area")  # (B, 2, h, w)
        loss = loss + alpha * torch.linalg.vector_norm(f.float() - t, dim=1).sum((1, 2)).mean()
    return loss


def estimate_pwcnet(model: PWCNet, img1: torch.Tensor, img2: torch.Tensor) -> torch.Tensor:
    """Flow ``(B, 2, H, W)`` for RGB ``(B, 3, H, W)`` in [0, 1] of any size.

    As the reference: bilinear resize (align_corners=False) to the next multiples of 64, the
    network, bilinear resize of its 1/4-resolution flow back to H x W, u scaled by W / W64 and v
    by H / H64 (the flow is in pixels of the resized input).
    """
    _, _, h, w = img1.shape
    h64, w64 = (int(math.ceil(s / MULTIPLE) * MULTIPLE) for s in (h, w))
    if (h64, w64) != (h, w):
        img1 = F.interpolate(img1, size=(h64, w64), mode="bilinear", align_corners=False)
        img2 = F.interpolate(img2, size=(h64, w64), mode="bilinear", align_corners=False)
    flow = model(img1, img2)
    flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
    scale = torch.tensor([w / w64, h / h64], dtype=flow.dtype, device=flow.device).view(1, 2, 1, 1)
    return flow * scale


# --------------------------------------------------------------------------------------------
# Weights: sniklaus/pytorch-pwc -> ours

_NUMBERS = {"One": 1, "Two": 2, "Thr": 3, "Fou": 4, "Fiv": 5, "Six": 6}
_N = "One|Two|Thr|Fou|Fiv|Six"
_RULES = (
    # moduleExtractor.moduleOne.0.weight -> extractor.levels.0.0.weight
    (re.compile(rf"Extractor\.(?:module|net)({_N})\.(\d+)\.(weight|bias)"),
     lambda m: f"extractor.levels.{_NUMBERS[m[1]] - 1}.{m[2]}.{m[3]}"),
    # moduleTwo.moduleUpflow.weight -> decoders.level2.upflow.weight
    (re.compile(rf"({_N})\.(?:module|net)Up(flow|feat)\.(weight|bias)"),
     lambda m: f"decoders.level{_NUMBERS[m[1]]}.up{m[2]}.{m[3]}"),
    # moduleTwo.moduleOne.0.weight .. moduleFiv -> decoders.level2.dense.0 .. 4; moduleSix -> predict
    (re.compile(rf"({_N})\.(?:module|net)({_N})\.0\.(weight|bias)"),
     lambda m: (f"decoders.level{_NUMBERS[m[1]]}.predict.{m[3]}" if m[2] == "Six"
                else f"decoders.level{_NUMBERS[m[1]]}.dense.{_NUMBERS[m[2]] - 1}.{m[3]}")),
    # moduleRefiner.moduleMain.0.weight -> context.net.0.weight
    (re.compile(r"Refiner\.(?:module|net)Main\.(\d+)\.(weight|bias)"),
     lambda m: f"context.net.{m[1]}.{m[2]}"),
)
_FIRST_CONV = "extractor.levels.0.0.weight"


def convert_pwcnet_sniklaus(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a sniklaus/pytorch-pwc state dict (``network-default.pytorch``; keys ``moduleX...``
    as stored, or ``netX...`` as its run.py renames them) to :class:`PWCNet`'s names.

    The first convolution's input channels are reversed (BGR -> RGB). Every key must be
    recognised and the result must match :class:`PWCNet` exactly, else :class:`WeightsError`.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        stem = re.sub(r"^(module\.)?(module|net)", "", key)  # drop DataParallel's "module." and the prefix
        for pattern, name in _RULES:
            m = pattern.fullmatch(stem)
            if m:
                out[name(m)] = value
                break
        else:
            raise WeightsError(f"unexpected key {key!r} in PWC-Net weights",
                               "expected sniklaus/pytorch-pwc network-default weights")
    if _FIRST_CONV in out:
        out[_FIRST_CONV] = out[_FIRST_CONV].flip(1)  # (16, 3, 3, 3): BGR input channels -> RGB
    _check_state(out)
    return out


def _check_state(state: dict[str, torch.Tensor], config: PWCNetConfig | None = None) -> None:
    with torch.device("meta"):  # names and shapes only, no memory or initialisation
        ref = PWCNet(config).state_dict()
    missing = sorted(set(ref) - set(state))
    extra = sorted(set(state) - set(ref))
    if missing or extra:
        raise WeightsError(f"PWC-Net weights do not match the architecture: {len(missing)} missing "
                           f"(e.g. {missing[:2]}), {len(extra)} unexpected (e.g. {extra[:2]})",
                           "expected sniklaus/pytorch-pwc network-default weights or a vpcli PWC-Net export")
    for k, v in ref.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise WeightsError(f"PWC-Net weights: {k} has shape {tuple(state[k].shape)}, expected {tuple(v.shape)}",
                               "expected sniklaus/pytorch-pwc network-default weights")


def load_pwcnet_state(path: str | Path, config: PWCNetConfig | None = None) -> dict[str, torch.Tensor]:
    """Our state dict from a file: a vpcli ``.safetensors`` export, or the sniklaus ``.pytorch``
    (a plain state dict, read with ``torch.load(weights_only=True)``: nothing is unpickled).
    A vpcli file is checked against ``config`` (default: the widths its tensors have, see
    :func:`load_pwcnet`); sniklaus files are always the default widths. fp16 files stay fp16
    (``load_state_dict`` copies into the model's dtype)."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # any reader failure means a bad weights file
        raise WeightsError(f"cannot read PWC-Net weights {path}: {type(err).__name__}: {str(err).splitlines()[0]}",
                           "expected a .safetensors file or sniklaus' network-default.pytorch") from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} does not hold a flat state dict of tensors",
                           "expected a .safetensors file or sniklaus' network-default.pytorch")
    if any(k.startswith(("extractor.", "decoders.", "context.")) for k in state):
        _check_state(state, config or PWCNetConfig.from_state(state))
        return dict(state)
    if config is not None and config != PWCNetConfig():
        raise WeightsError(f"{path} holds sniklaus PWC-Net weights (the published widths) but the config asks "
                           f"for {config}", "drop the width settings from the config")
    return convert_pwcnet_sniklaus(state)


def load_pwcnet(path: str | Path, config: PWCNetConfig | dict[str, Any] | None = None) -> PWCNet:
    """A :class:`PWCNet` (fp32, eval mode) with the weights of ``path``. Its widths come from
    ``config`` if given (a manifest entry's), else from the file itself (its ``vpcli_config``
    safetensors metadata, else its tensor shapes; sniklaus files are the default widths)."""
    if isinstance(config, dict):
        try:
            config = PWCNetConfig.from_dict(config)
        except VpcliError as err:
            raise WeightsError(f"bad PWC-Net config for {path}: {err.message}", err.hint) from None
    state = load_pwcnet_state(path, config)
    if config is None:
        config = PWCNetConfig.from_state(state)
    model = PWCNet(config)
    model.load_state_dict(state)
    return model.eval()


def _missing_weights(name: str, err: WeightsError) -> WeightsError:
    how = err.hint if err.hint and "vpcli weights download" in err.hint else (
        f"`vpcli weights download {WEIGHTS_NAME}` fetches network-default.pytorch (sniklaus/pytorch-pwc, weights "
        f"converted from NVlabs PWC-Net, CC BY-NC-SA 4.0) from {WEIGHTS_URL}, or pass --weights "
        f"/path/to/network-default.pytorch")
    return WeightsError(f"PWC-Net needs pretrained weights and {name!r} cannot be resolved: {err.message}",
                        f"{how}; or use --method dis, which needs no weights")


# --------------------------------------------------------------------------------------------
# The flow backend


class PWCNetFlow(FlowEstimator):
    """PWC-Net as a :class:`FlowEstimator` (torch input kind; numpy frames are converted).

    ``weights``: a manifest name (default ``pwcnet-slim-synth``; ``pwcnet-sniklaus`` is the
    published model, fetched with `vpcli weights download pwcnet-sniklaus`) or a file path. ``model``: use
    this module as is (tests, benchmarks with random weights). ``precision``: ``fp32`` or
    ``bf16`` (autocast; CPU and CUDA). ``channels_last``: NHWC memory format for the convolutions.
    """

    name = "pwcnet"
    input_kind = "torch"

    def __init__(self, weights: str | Path | None = None, *, model: PWCNet | None = None, device: Any = "cpu",
                 precision: str = "fp32", channels_last: bool = False):
        if precision not in ("fp32", "bf16"):
            raise UsageError(f"unknown precision {precision!r}", "choose fp32 or bf16")
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise UsageError(f"--device {device}: torch sees no CUDA device", "use --device cpu")
        self.precision = precision
        self.channels_last = bool(channels_last)
        self.weights_name: str | None = None
        self.weights_sha256: str | None = None
        if model is None:
            model = self._load(weights if weights is not None else DEFAULT_WEIGHTS)
        self.model = model.to(self.device).eval()
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    def _load(self, weights: str | Path) -> PWCNet:
        from vpcli.weights import load_manifests, resolve_weights
        config = None
        try:
            registry = load_manifests()
            if isinstance(weights, str) and weights in registry:  # a manifest name: its entry's config
                entry = registry.get(weights)
                if entry.task != "flow" or entry.arch != "pwcnet":
                    raise UsageError(f"weights '{entry.name}' are {entry.task} weights ({entry.arch}), not PWC-Net",
                                     "see `vpcli weights list` for flow weights")
                config = entry.load_config()
            resolved = resolve_weights(weights, manifests=registry)
        except WeightsError as err:
            if type(err) is not WeightsError:  # a checksum failure says what to do already
                raise
            raise _missing_weights(str(weights), err) from err
        self.weights_name = resolved.name or str(resolved.path)
        self.weights_sha256 = resolved.sha256
        return load_pwcnet(resolved.path, config)

    def _estimate(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            a, b = a.contiguous(memory_format=torch.channels_last), b.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16,
                                                    enabled=self.precision == "bf16"):
            flow = estimate_pwcnet(self.model, a, b)
        return flow.float().contiguous()

    def describe(self) -> dict[str, Any]:
        return {"method": self.name, "weights": self.weights_name, "weights_sha256": self.weights_sha256,
                "device": str(self.device), "precision": self.precision, "channels_last": self.channels_last,
                "search_range": self.model.config.search_range if isinstance(self.model, PWCNet) else SEARCH_RANGE,
                "input_multiple": MULTIPLE}

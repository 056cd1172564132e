"""SADM (Bei, Yang, Soatto: "Learning Semantic-Aware Dynamics for Video Prediction", CVPR 2021;
paper: ../shared/papers/000_*.txt). No code was released: eqs. 1-13 and Sec. 4 are the spec, and
every detail they leave open is decided here (under "Decisions", each with its reason; README
"SADM" lists them). Two parts, trained in two stages (Sec. 4, "we split the training into two
stages")::

    dynamics    the semantic-aware dynamic model (Sec. 3.1): per-class recurrent encoders phi_c
                over [m_c, f_c] (eq. 1), an MLP_c context over H^T, per-class recurrent decoders
                psi_c with separate mask and flow heads (eqs. 2-3), late fusion by a 3-layer CNN +
                softmax (eq. 4) and the fused flow (eq. 5). All C classes run in parallel as
                grouped convolutions (vpcli.nn.convlstm.GroupedConvLSTMCell), no loop over
                classes.                                                        part "dynamics"
    posterior   theta_c, the stochastic extension's encoders over the future (eq. 8), used only
                to train (eq. 9's KL; at test z ~ N(0, I))                     training-only
    inpaint     the conditional inpainting U-Net phi (eq. 12) whose encoder uses partial
                convolutions masked by the dis-occlusion Omega_d                 part "inpaint"
    disc_frame  D_x(x, m): 2D PatchGAN conditioned on the labels (eq. 13)       training-only
    disc_video  D_v({x}, {m}): the same with 3D convolutions (Sec. 4)          training-only

Training plan::

    stage "dynamics"  dynamics  eq. 10: L_f (eq. 6) + L_m (eq. 7) + beta * L_kl (eq. 9)  (inpaint frozen)
    stage "inpaint"   inpaint   eq. 13 (dynamics frozen: its predictions drive the warping)
                      d         D_x and D_v on real clips and the inpainted ones (LSGAN)

Prediction (Sec. 3.2-3.3): the dynamics model predicts each future label map m~^t and backward
flow f~^t (frame t -> t-1); the previous frame is warped by f~^t (eq. 11), Omega_d is estimated by
pixel occupancy and / or semantic consistency, and the inpainting network completes the frame.

Decisions (the paper leaves these open):

* **Flow**: f^t in eqs. 1, 6 and 11 is the backward flow of frame t (t -> t-1), Sec. 3.2's
  convention. Data carries forward flow; it is inverted (vpcli.nn.warp.invert_flow). The encoder
  reads frames 2..T (frame 1 has no flow into an earlier frame). Flow enters the networks divided
  by ``flow_scale`` px and leaves multiplied by it.
* **Resolution**: the recurrent state lives at 1/2^``downsample`` of the frame (grouped strided
  convs in, grouped nearest-up + conv out); the heads and the fusion run at full resolution.
* **MLP_c on spatial states**: a per-pixel MLP (two 1x1 convolutions) over the concatenated states
  of all classes, giving each class its own context channels: every class sees every other class
  at the same location, as eq. 2's MLP_c(H^T) asks, at the cost of a 1x1 conv. The decoders read
  this context at every step (eq. 2) and start from the encoders' last state h_c^T.
* **Stochastic extension** (eqs. 8-10): theta_c starts from h_c^T (footnote 2: "z_c^T = [h_c^T,
  I]"), reads the future [m_c, f_c], and its last state gives (u, log v) by 3x3 grouped convs;
  z = u + sqrt(v) * eps is added to H^T before the MLP (eq. 2 "Z^K will be added to H^T"). One z
  per clip and sample, not per step. At test z ~ N(0, I). KL summed over elements, averaged over
  the batch; beta = 1e-3 (the supplementary's weights are not in the paper; at 1e-4 the KL grew
  to ~6,700 nats in 1,000 steps of sadm-street-cpu: the posterior carried the future, and the
  prior's rollout, the one used at test, lost label accuracy).
* **Eq. 7**: CE of the fused softmax m~ (log-softmax of the fusion logits) against the label map;
  boundary = label differs from the right or lower neighbour (binarised gradient), blurred by a
  Gaussian of variance 9 (sigma 3, 19 taps) scaled so that a straight boundary's pixels get 1 and
  capped at 1, weight 1 + alpha * blurred with alpha = 5: boundary pixels weigh 6x the interior,
  the relative importance alpha names. Both L_f and L_m are
  means over pixels summed over the K steps (eqs. 6-7 sum over t). Ignore ids (255) weigh 0.
* **Classes**: ``class_groups`` maps each of the ``label_classes`` input ids to one of C groups
  (C = max + 1), e.g. 19 Cityscapes train ids -> a few semantic groups, so that CPU budgets can
  train it; predicted groups are written as the smallest input id of the group. None = one group
  per id (C = label_classes). C = 1 (all ids in one group) has no semantics at all; it is not the
  paper's ablation.
* **Single-class baseline** (Sec. 4.3, Fig. 7): ``single_class`` keeps the C label channels but
  runs every layer as an ordinary convolution (groups = 1) of the same total width over the naive
  concatenation [m (C one-hot channels), f (2)], with one flow head and no eq. 5 fusion of
  per-class flows; the paper: "the same network architecture as SADM ... ordinary convolutions are
  used", O(K^2) parameters against SADM's O(K).
* **Pixel occupancy** (Sec. 3.2, Fig. 4): every target pixel p is splatted (bilinearly) onto its
  source position p + f~(p); a source position holding more than ``occupancy_threshold`` of
  them is over-occupied. Of the targets that land there, the ones moving less than the fastest by
  more than 0.5 px are marked dis-occluded (the nearer surface moves more in a moving camera and
  stays visible: the paper's Fig. 4 does not say which of A and B to mark). Targets whose source
  is outside the frame are dis-occluded too (nothing there to warp).
* **Semantic consistency**: p is dis-occluded when m~^{t+1}(p) differs from the previous label map
  at p + f~(p) (nearest). ``disocclusion``: ``occupancy``, ``semantic`` or ``both`` (their union,
  the paper's choice).
* **Recursive warping**: after the first step the previous *predicted* (inpainted) frame is warped
  (the paper warps "the past video frames"; beyond one step only predictions are there); in
  training the previous prediction is detached, so each step's gradient stays in that step.
* **Inpainting**: U-Net, encoder ``inpaint_depth`` stride-2 partial convolutions (mask = 1 -
  Omega_d) over the warped frame, with [Omega_d, one-hot labels] added by a plain convolution at
  the first level (a partial convolution would blank the labels exactly in the holes they are to
  fill), decoder nearest-up + conv with skips. The output is a residual over the masked warped
  frame, ``clamp(warped * (1 - Omega_d) + tanh(conv), 0, 1)`` with the last conv zero-initialised,
  used everywhere (eq. 13's first term anchors it to the warped frame on the co-visible area;
  nothing is composited). A plain sigmoid output, the first version, had not learnt to reproduce
  the warped frame after 460 steps of sadm-street-cpu (val L1 0.16 per frame, the warped frame
  alone 0.066, copy-last 0.088).
* **No VGG**: no pretrained VGG is available offline, so eq. 13's perceptual term is replaced by
  L1 to the real frame (``lambda_per`` = 10); gamma = eta = 0.1 for the adversarial terms (LSGAN,
  CycleGAN's: at 1 they summed to ~4.5 over a clip against ~8 for the L1 terms, the frame
  discriminator won (its loss 0.08) and the generator drifted from the warped frame); the
  discriminators see the predicted labels with fakes and the real labels with
  real frames; the fakes' condition is blanked where the real labels are ignore (255), as the real
  condition is, so that the condition alone does not tell real from fake.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn
from torch.nn import functional as F

from vpcli.errors import InputError
from vpcli.io.labels import IGNORE_INDEX as IGNORE
from vpcli.nn.convlstm import GroupedConvLSTMCell
from vpcli.nn.discriminators import PatchDiscriminator, PatchDiscriminator3d, lsgan
from vpcli.nn.gaussian_lstm import gaussian_kl, reparameterize
from vpcli.nn.partial_conv import PartialConv2d
from vpcli.nn.warp import invert_flow, warp_border
from vpcli.predictors.base import Batch, Extra, Losses, Predictor, Stage, StepRecord, TrainState, TrainStep
from vpcli.predictors.base import check_class_groups, check_label_ids, group_tables, one_hot
from vpcli.registry import register



@dataclass
class SADMConfig:
    label_classes: int = 19           # ids of the label maps it reads (Cityscapes train ids)
    class_groups: list | None = None  # group of each input id (merging); None = one group per id
    channels: int = 3
    context: int = 4
    downsample: int = 2               # the recurrent state at 1/4 of the frame
    stem_width: int = 16              # per class
    hidden: int = 16                  # per-class ConvLSTM channels
    mlp_hidden: int = 64
    fusion_width: int = 32
    flow_scale: float = 8.0           # px: flow in / out of the networks
    single_class: bool = False        # Sec. 4.3's baseline: ordinary convs over [all masks, flow]
    stochastic: bool = True
    beta: float = 1e-3
    alpha: float = 5.0                # eq. 7
    boundary_variance: float = 9.0    # eq. 7: the Gaussian's variance
    disocclusion: Literal["both", "occupancy", "semantic"] = "both"
    occupancy_threshold: float = 1.5
    inpaint_width: int = 32
    inpaint_depth: int = 3
    lambda_per: float = 10.0          # L1 to the real frame, standing in for the perceptual term
    gamma: float = 0.1                # D_x
    eta: float = 0.1                  # D_v
    disc_width: int = 32
    disc_layers: int = 3

    def __post_init__(self):
        if not 1 <= self.label_classes < IGNORE:
            raise ValueError(f"label_classes must be in 1..{IGNORE - 1}, got {self.label_classes}")
        self.class_groups = check_class_groups(self.class_groups, self.label_classes)
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.disocclusion not in ("both", "occupancy", "semantic"):
            raise ValueError(f"disocclusion must be both, occupancy or semantic, got {self.disocclusion!r}")
        for name in ("context", "stem_width", "hidden", "mlp_hidden", "fusion_width", "inpaint_width",
                     "inpaint_depth", "disc_width", "disc_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.downsample < 0:
            raise ValueError(f"downsample must be >= 0, got {self.downsample}")

    @property
    def num_groups(self) -> int:
        return self.label_classes if self.class_groups is None else max(self.class_groups) + 1

    @property
    def conv_groups(self) -> int:
        """Groups of the dynamics' convolutions: one per class, or 1 for the single-class baseline
        (which also has one flow head instead of one per class)."""
        return 1 if self.single_class else self.num_groups

    def group_width(self, width: int) -> int:
        """Channels of each conv group for ``width`` channels per class: the same total width
        (C * width) whether it is split into C groups or kept as one (the baseline)."""
        return self.num_groups * width // self.conv_groups

    @property
    def group_inputs(self) -> int:
        """Input channels of each group: [m_c, f_c], or the baseline's [all C masks, flow]."""
        return self.num_groups + 2 if self.single_class else 3


def boundary_weight(labels: torch.Tensor, alpha: float, variance: float) -> torch.Tensor:
    """Eq. 7's ``1 + alpha * G * grad(m)``: ``(N, H, W)`` ids -> ``(N, H, W)`` weights."""
    lab = labels.float()[:, None]                                          # (N, 1, H, W)
    edge = torch.zeros_like(lab)
    edge[..., :, :-1] += (lab[..., :, 1:] != lab[..., :, :-1]).float()      # binarised gradient
    edge[..., :-1, :] += (lab[..., 1:, :] != lab[..., :-1, :]).float()
    edge = (edge > 0).float()
    sigma = math.sqrt(variance)
    r = int(math.ceil(3 * sigma))
    x = torch.arange(-r, r + 1, dtype=torch.float32, device=labels.device)
    g = torch.exp(-x ** 2 / (2 * variance))
    g = g / g.sum()
    blur = F.conv2d(F.pad(edge, (r, r, 0, 0), mode="replicate"), g.view(1, 1, 1, -1))
    blur = F.conv2d(F.pad(blur, (0, 0, r, r), mode="replicate"), g.view(1, 1, -1, 1))
    # scaled so that the pixels of a straight boundary weigh 1 + alpha (the blurred line peaks at
    # g(0) of the normalised kernel, ~0.13 for sigma 3); corners and thin regions are capped there
    return 1.0 + alpha * (blur[:, 0] / g[r]).clamp(max=1.0)


def occupancy_disocclusion(flow: torch.Tensor, threshold: float) -> torch.Tensor:
    """Sec. 3.2's pixel occupancy for backward flow ``(B, 2, H, W)`` (target t+1 -> source t):
    ``(B, H, W)`` bool, True where the target pixel is dis-occluded (see the module's decisions)."""
    b, _, h, w = flow.shape
    ys = torch.arange(h, device=flow.device, dtype=flow.dtype).view(1, h, 1)
    xs = torch.arange(w, device=flow.device, dtype=flow.dtype).view(1, 1, w)
    sx, sy = xs + flow[:, 0], ys + flow[:, 1]                              # source positions (B, H, W)
    outside = (sx < -0.5) | (sx > w - 0.5) | (sy < -0.5) | (sy > h - 0.5)
    x0, y0 = sx.floor(), sy.floor()
    occ = flow.new_zeros(b, h * w)
    for dx in (0, 1):                                                      # bilinear splat of ones
        for dy in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            wgt = (1 - (sx - xi).abs()) * (1 - (sy - yi).abs())
            ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            idx = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).long().view(b, -1)
            occ.scatter_add_(1, idx, (wgt * ok).view(b, -1))
    near = (sy.round().clamp(0, h - 1) * w + sx.round().clamp(0, w - 1)).long().view(b, -1)
    mag = flow.norm(dim=1).view(b, -1)
    fastest = flow.new_zeros(b, h * w).scatter_reduce(1, near, mag, reduce="amax", include_self=True)
    crowded = occ.gather(1, near) > threshold
    behind = mag < fastest.gather(1, near) - 0.5
    return (crowded & behind).view(b, h, w) | outside


def semantic_disocclusion(flow: torch.Tensor, labels: torch.Tensor, prev_labels: torch.Tensor) -> torch.Tensor:
    """Sec. 3.2's semantic consistency: True where ``labels(p)`` differs from ``prev_labels`` at
    ``p + flow(p)`` (nearest); ``(B, H, W)``."""
    b, _, h, w = flow.shape
    ys = torch.arange(h, device=flow.device, dtype=flow.dtype).view(1, h, 1)
    xs = torch.arange(w, device=flow.device, dtype=flow.dtype).view(1, 1, w)
    sx = (xs + flow[:, 0]).round().clamp(0, w - 1)
    sy = (ys + flow[:, 1]).round().clamp(0, h - 1)
    src = prev_labels.view(b, -1).gather(1, (sy * w + sx).long().view(b, -1)).view(b, h, w)
    return (src != labels) & (src != IGNORE)           # an ignore label says nothing about the content


# --------------------------------------------------------------------------- dynamics


def channels_last_convs(*modules: nn.Module) -> None:
    """Store the Conv2d weights channels-last, so that those convolutions run in NHWC (oneDNN picks
    the layout from the input or the weight), except the ConvLSTM gates. On CPU the full-resolution
    grouped convolutions (stem, up-sampling, heads) run 4-8x faster that way in training, while the
    gates at the state's resolution run faster in NCHW (measured with torch.profiler on a dynamics
    step of sadm-street-cpu, batch 8, bf16, AVX512, one thread: 3.4 s against 8.7 s in all;
    benchmarks/bench_sadm.py times the cells). Loading weights keeps the layout; saved files are
    contiguous."""
    for module in modules:
        gates = {id(m.gates) for m in module.modules() if isinstance(m, GroupedConvLSTMCell)}
        for conv in module.modules():
            if isinstance(conv, nn.Conv2d) and id(conv) not in gates:
                conv.weight.data = conv.weight.data.contiguous(memory_format=torch.channels_last)


def _grouped_stem(c: int, cin: int, width: int, n: int) -> nn.Sequential:
    """Per-class convs (groups = C): 3x3 to ``width``, then ``n`` stride-2 3x3 convs."""
    layers = [nn.Conv2d(c * cin, c * width, 3, 1, 1, groups=c), nn.LeakyReLU(0.2, inplace=True)]
    for _ in range(n):
        layers += [nn.Conv2d(c * width, c * width, 3, 2, 1, groups=c), nn.LeakyReLU(0.2, inplace=True)]
    return nn.Sequential(*layers)


class Dynamics(nn.Module):
    """Eqs. 1-5 for all classes at once. Channels are class-major (class c: ``[c n, (c+1) n)``)."""

    def __init__(self, cfg: SADMConfig):
        super().__init__()
        self.cfg = c = cfg
        k, hid = cfg.num_groups, cfg.hidden
        self.k = k
        g = c.conv_groups                                                           # also the number of flows
        self.stem = _grouped_stem(g, c.group_inputs, c.group_width(c.stem_width), c.downsample)  # [m_c, f_c] per class
        self.encoder = GroupedConvLSTMCell(g, c.group_width(c.stem_width), c.group_width(hid))  # phi_c (eq. 1)
        self.mlp = nn.Sequential(nn.Conv2d(k * hid, c.mlp_hidden, 1), nn.ReLU(inplace=True),
                                 nn.Conv2d(c.mlp_hidden, k * hid, 1))               # MLP_c (eq. 2)
        self.decoder = GroupedConvLSTMCell(g, c.group_width(hid), c.group_width(hid))  # psi_c (eq. 2)
        up = []
        for _ in range(c.downsample):
            up += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(k * hid, k * hid, 3, 1, 1, groups=g),
                   nn.LeakyReLU(0.2, inplace=True)]
        self.up = nn.Sequential(*up)
        self.mask_head = nn.Conv2d(k * hid, k, 3, 1, 1, groups=g)                   # psi_{c,m} (eq. 3)
        self.flow_head = nn.Conv2d(k * hid, 2 * g, 3, 1, 1, groups=g)               # psi_{c,f}
        self.fusion = nn.Sequential(nn.Conv2d(k, c.fusion_width, 3, 1, 1), nn.ReLU(inplace=True),
                                    nn.Conv2d(c.fusion_width, c.fusion_width, 3, 1, 1), nn.ReLU(inplace=True),
                                    nn.Conv2d(c.fusion_width, k, 3, 1, 1))          # psi^cnn (eq. 4)
        nn.init.zeros_(self.flow_head.weight)
        nn.init.zeros_(self.flow_head.bias)

    def inputs(self, groups: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        """[m_c, f_c] for every class: ``(N, H, W)`` ids and ``(N, 2, H, W)`` backward flow -> ``(N, 3C, H, W)``."""
        m = one_hot(groups, self.k)                                                 # (N, C, H, W)
        if self.cfg.single_class:                                                   # naive concatenation
            return torch.cat([m, flow / self.cfg.flow_scale], 1)
        f = flow[:, None] / self.cfg.flow_scale * m[:, :, None]                     # (N, C, 2, H, W)
        return torch.cat([m[:, :, None], f], 2).flatten(1, 2)                       # class-major

    def encode(self, groups: torch.Tensor, flows: torch.Tensor):
        """Eq. 1 over frames 2..T: ``groups`` ``(B, T, H, W)``, ``flows`` ``(B, T-1, 2, H, W)``
        (backward flow of frames 2..T) -> the last state (h, c)."""
        b, t1 = flows.shape[:2]
        x = self.stem(self.inputs(groups[:, 1:].flatten(0, 1), flows.flatten(0, 1)))   # one pass over frames
        x = x.view(b, t1, *x.shape[1:])
        state = None
        for i in range(t1):
            _, state = self.encoder(x[:, i], state)
        return state

    def decode_step(self, context: torch.Tensor, state):
        """Eqs. 2-5 for one step: (probs ``(N, C, H, W)``, backward flow ``(N, 2, H, W)``, the fusion's
        logits (the softmax's input), new state)."""
        e, state = self.decoder(context, state)                                     # e_c^t (N, C*hid, h, w)
        e = self.up(e)
        m_c = torch.sigmoid(self.mask_head(e))                                      # (N, C, H, W)
        f_c = self.flow_head(e).view(e.shape[0], self.cfg.conv_groups, 2, *e.shape[-2:]) * self.cfg.flow_scale
        logits = self.fusion(m_c)
        probs = torch.softmax(logits, 1)                                            # eq. 4
        flow = f_c[:, 0] if self.cfg.single_class else (probs[:, :, None] * f_c).sum(1)   # eq. 5
        return probs, flow, logits, state


class Posterior(nn.Module):
    """theta_c (eq. 8): from h_c^T over the future [m_c, f_c] to (u, log v) of z."""

    def __init__(self, cfg: SADMConfig):
        super().__init__()
        k, hid = cfg.num_groups, cfg.hidden
        g = cfg.conv_groups
        self.stem = _grouped_stem(g, cfg.group_inputs, cfg.group_width(cfg.stem_width), cfg.downsample)
        self.lstm = GroupedConvLSTMCell(g, cfg.group_width(cfg.stem_width), cfg.group_width(hid))
        self.mu = nn.Conv2d(k * hid, k * hid, 3, 1, 1, groups=g)
        self.logvar = nn.Conv2d(k * hid, k * hid, 3, 1, 1, groups=g)

    def forward(self, inputs: torch.Tensor, state):
        """``inputs`` ``(B, K, 3C, H, W)`` (eq. 8's [m_c, f_c] of the future), ``state`` h^T, c^T."""
        b, kk = inputs.shape[:2]
        x = self.stem(inputs.flatten(0, 1))
        x = x.view(b, kk, *x.shape[1:])
        for i in range(kk):
            h, state = self.lstm(x[:, i], state)
        return self.mu(h), self.logvar(h)


# --------------------------------------------------------------------------- inpainting


class Inpaint(nn.Module):
    """Eq. 12: a U-Net whose encoder is partial convolutions masked by 1 - Omega_d. Only the warped
    frame is masked (it is invalid in the holes); Omega_d and the labels, which say what to put
    there, enter through a plain convolution added to the first partial one, and the input skip
    carries the masked frame with them."""

    def __init__(self, cfg: SADMConfig):
        super().__init__()
        w, n, k = cfg.inpaint_width, cfg.inpaint_depth, cfg.num_groups
        cin = cfg.channels + 1 + k
        self.enc = nn.ModuleList(PartialConv2d(cfg.channels if i == 0 else w * 2 ** (i - 1), w * 2 ** i, 4, 2, 1)
                                 for i in range(n))
        self.cond = nn.Conv2d(1 + k, w, 4, 2, 1, bias=False)          # [Omega_d, one-hot] -> the first level
        self.dec = nn.ModuleList()
        for i in reversed(range(n)):
            a = w * 2 ** i + (w * 2 ** (i - 1) if i else cin)
            b = w * 2 ** (i - 1) if i else w
            self.dec.append(nn.Sequential(nn.Conv2d(a, b, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True)))
        self.out = nn.Conv2d(w, cfg.channels, 3, 1, 1)
        nn.init.zeros_(self.out.weight)      # a residual over the masked warped frame: starts as it
        nn.init.zeros_(self.out.bias)

    def forward(self, warped: torch.Tensor, omega: torch.Tensor, labels_1h: torch.Tensor) -> torch.Tensor:
        mask = 1.0 - omega
        cond = torch.cat([omega, labels_1h], 1)
        skips = [torch.cat([warped * mask, cond], 1)]
        x = warped
        for i, conv in enumerate(self.enc):
            x, mask = conv(x, mask)
            if i == 0:
                x = x + self.cond(cond)
            x = F.relu(x)
            skips.append(x)
        skips.pop()
        for block, skip in zip(self.dec, reversed(skips)):
            x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = block(torch.cat([x, skip], 1))
        return (warped * (1.0 - omega) + torch.tanh(self.out(x))).clamp(0, 1)


# --------------------------------------------------------------------------- the predictor


@register("predictor", "sadm", config_cls=SADMConfig,
          description="SADM (Bei et al., CVPR 2021): per-class dynamics of labels and flow, dis-occlusion-aware "
                      "warping, partial-conv inpainting")
class SADM(Predictor):
    name = "sadm"
    inputs = frozenset({"rgb", "labels", "flow"})
    outputs = frozenset({"frames", "labels", "flow"})
    extras: ClassVar[dict[str, Extra]] = {
        "backward_flow": Extra("flow", "the fused predicted flow f~^t, backward (frame t -> t-1, pixels), eq. 5"),
        "disocclusion": Extra("mask", "the dis-occlusion mask Omega_d (1 = inpainted, not warped)", always=True),
        "warped": Extra("image", "the previous frame warped by f~^t (eq. 11)"),
    }
    parts = {"dynamics": ("dynamics",), "inpaint": ("inpaint",)}
    training_only = ("posterior", "disc_frame", "disc_video")
    cache_keys = {"fake": "the inpainted frames of the clip (detached), for the d step",
                  "pred_groups": "the predicted label groups of the clip, for the d step"}

    def __init__(self, config: SADMConfig):
        super().__init__(config)
        c = config
        k = c.num_groups
        self.dynamics = Dynamics(c)
        self.posterior = Posterior(c)
        channels_last_convs(self.dynamics, self.posterior)
        self.inpaint = Inpaint(c)
        self.disc_frame = PatchDiscriminator(c.channels + k, c.disc_width, c.disc_layers)
        self.disc_video = PatchDiscriminator3d(c.channels + k, c.disc_width, c.disc_layers)
        self.size_multiple = 2 ** max(c.downsample, c.inpaint_depth)
        to_group, to_label = group_tables(c.class_groups, c.label_classes)
        self.register_buffer("to_group", to_group, persistent=False)
        self.register_buffer("to_label", to_label, persistent=False)

    def label_classes(self) -> int:
        return self.config.label_classes

    def scored_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Ground-truth ids as this model writes them (each id -> the smallest id of its group), so
        that `vpcli eval` scores merged classes as one (identity without ``class_groups``)."""
        return self.to_label[self.to_group[labels.clamp(0, 255)]]

    # --- inputs --------------------------------------------------------------------------------
    def _groups(self, labels: torch.Tensor) -> torch.Tensor:
        check_label_ids(labels, self.config.label_classes, "label_classes")
        return self.to_group[labels.clamp(0, 255)]

    def _ctx(self, batch: Batch) -> int:
        return min(self.config.context, batch["rgb"].shape[1] - 1)

    def _z(self, h: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not self.config.stochastic:
            return torch.zeros_like(h)
        return torch.randn(h.shape, generator=generator, device=h.device, dtype=h.dtype)

    # --- training ------------------------------------------------------------------------------
    def training_plan(self) -> list[Stage]:
        def dynamics_params():  # the posterior trains only with the stochastic extension
            extra = self.module_parameters("posterior") if self.config.stochastic else []
            return self.part_parameters("dynamics") + extra
        return [Stage("dynamics", (TrainStep("dynamics", dynamics_params, self._dynamics_loss),),
                      frozen=("inpaint",)),
                Stage("inpaint", (TrainStep("inpaint", lambda: self.part_parameters("inpaint"), self._inpaint_loss),
                                  TrainStep("d", lambda: self.module_parameters("disc_frame", "disc_video"),
                                            self._d_loss)), frozen=("dynamics",))]

    def _dynamics_rollout(self, batch: Batch, *, posterior: bool):
        """The dynamics over a training clip: (per-step probs, backward flows), targets, KL."""
        cfg, dyn = self.config, self.dynamics
        groups = self._groups(batch["labels"])                                      # (B, T, H, W)
        if "flow" not in batch:
            raise InputError("SADM needs flow for its context frames",
                             "train on vpcli data synth-street folders (exact flow), or pass --flow-from dis")
        back = invert_flow(batch["flow"])                                        # (B, T-1, 2, H, W)
        c = self._ctx(batch)
        state = dyn.encode(groups[:, :c], back[:, :c - 1]) if c > 1 else None
        if state is None:
            raise InputError("SADM needs at least 2 context frames (flow between them)", "use data.context >= 2")
        h_t = state[0]
        kl = h_t.new_zeros(())
        if cfg.stochastic and posterior:
            fut = torch.stack([dyn.inputs(groups[:, i], back[:, i - 1]) for i in range(c, groups.shape[1])], 1)
            mu, lv = self.posterior(fut, state)
            z = reparameterize(mu, lv, torch.randn_like(mu))
            kl = gaussian_kl(mu.float(), lv.float(), torch.zeros_like(mu.float()), torch.zeros_like(lv.float())
                             ).sum() / h_t.shape[0]
        else:
            z = self._z(h_t)
        context = dyn.mlp(h_t + z)
        outs = []
        for _ in range(c, groups.shape[1]):
            probs, flow, logits, state = dyn.decode_step(context, state)
            outs.append((probs, flow, logits))
        return outs, groups, back, c, kl

    def _dynamics_loss(self, batch: Batch, state: TrainState) -> Losses:
        cfg = self.config
        outs, groups, back, c, kl = self._dynamics_rollout(batch, posterior=True)
        l_f = l_m = groups.new_zeros((), dtype=torch.float32)
        for j, (_, flow, logits) in enumerate(outs):
            i = c + j
            l_f = l_f + (flow - back[:, i - 1]).abs().sum(1).mean()                              # eq. 6
            target = groups[:, i]
            weight = boundary_weight(target, cfg.alpha, cfg.boundary_variance) * (target != IGNORE)
            ce = F.nll_loss(F.log_softmax(logits.float(), 1), target, ignore_index=IGNORE, reduction="none")
            l_m = l_m + (weight * ce).mean()                                                     # eq. 7
        return {"loss": l_f + l_m + cfg.beta * kl, "flow_l1": l_f, "ce": l_m, "kl": kl}

    def _inpaint_rollout(self, batch: Batch, *, grad: bool):
        """Frames of the clip's future by the full pipeline (dynamics frozen, no gradient), each
        step warping the previous (detached) prediction; the per-step terms for eq. 13."""
        with torch.no_grad():
            outs, groups, _, c, _ = self._dynamics_rollout(batch, posterior=False)
        x = batch["rgb"]
        prev, prev_g = x[:, c - 1], groups[:, c - 1]
        steps = []
        for probs, flow, _ in outs:
            g = probs.argmax(1)
            warped = warp_border(prev, flow)
            omega = self.disocclusion(flow, g, prev_g)
            with torch.set_grad_enabled(grad):
                out = self.inpaint(warped, omega, one_hot(g, self.dynamics.k))
            steps.append((out, warped, omega, g))
            prev, prev_g = out.detach(), g
        return steps, c

    def disocclusion(self, flow: torch.Tensor, groups: torch.Tensor, prev_groups: torch.Tensor) -> torch.Tensor:
        """Omega_d ``(B, 1, H, W)`` float by the configured criterion (Sec. 3.2)."""
        kind = self.config.disocclusion
        d = torch.zeros_like(groups, dtype=torch.bool)
        if kind in ("occupancy", "both"):
            d |= occupancy_disocclusion(flow.float(), self.config.occupancy_threshold)
        if kind in ("semantic", "both"):
            d |= semantic_disocclusion(flow.float(), groups, prev_groups)
        return d[:, None].to(flow.dtype)

    def _inpaint_loss(self, batch: Batch, state: TrainState) -> Losses:
        cfg, k = self.config, self.dynamics.k
        steps, c = self._inpaint_rollout(batch, grad=True)
        x = batch["rgb"]
        covis = per = adv_x = x.new_zeros(())
        for j, (out, warped, omega, g) in enumerate(steps):
            covis = covis + ((1 - omega) * (out - warped).abs()).mean()                # eq. 13, first term
            per = per + F.l1_loss(out, x[:, c + j])                                    # stands in for L_per
            adv_x = adv_x + lsgan(self.disc_frame(torch.cat([out, one_hot(g, k)], 1)), True)
        fake = torch.stack([s[0] for s in steps], 2)                                   # (B, C, K, H, W)
        # the fakes' condition is blanked where the real labels are ignore, as the real condition is
        # (else the condition alone would tell D which is which)
        known = (self._groups(batch["labels"][:, c:]) != IGNORE).unsqueeze(1).float()  # (B, 1, K, H, W)
        cond = torch.stack([one_hot(s[3], k) for s in steps], 2) * known
        adv_v = lsgan(self.disc_video(torch.cat([fake, cond], 1)), True)
        state.cache.put("fake", fake.detach())
        state.cache.put("pred_groups", cond)
        loss = covis + cfg.lambda_per * per + cfg.gamma * adv_x + cfg.eta * adv_v
        return {"loss": loss, "covisible_l1": covis, "l1": per, "adv_frame": adv_x, "adv_video": adv_v}

    def _d_loss(self, batch: Batch, state: TrainState) -> Losses:
        k = self.dynamics.k
        c = self._ctx(batch)
        fake, cond_fake = state.cache.get("fake"), state.cache.get("pred_groups")       # (B, C, K, H, W)
        real = batch["rgb"][:, c:].transpose(1, 2)
        groups = self._groups(batch["labels"][:, c:])                                  # (B, K, H, W)
        cond_real = one_hot(groups.flatten(0, 1), k).view(*groups.shape[:2], k, *groups.shape[-2:]).transpose(1, 2)
        d_x = 0.5 * (lsgan(self.disc_frame(torch.cat([real, cond_real], 1).transpose(1, 2).flatten(0, 1)), True)
                     + lsgan(self.disc_frame(torch.cat([fake, cond_fake], 1).transpose(1, 2).flatten(0, 1)), False))
        d_v = 0.5 * (lsgan(self.disc_video(torch.cat([real, cond_real], 1)), True)
                     + lsgan(self.disc_video(torch.cat([fake, cond_fake], 1)), False))
        return {"loss": d_x + d_v, "d_frame": d_x, "d_video": d_v}

    def validate(self, batch: Batch, state: TrainState) -> dict[str, float]:
        if state.stage == "dynamics":
            with torch.no_grad():
                outs, groups, back, c, _ = self._dynamics_rollout(batch, posterior=False)
                epe = torch.stack([(o[1] - back[:, c + j - 1]).norm(dim=1).mean() for j, o in enumerate(outs)]).mean()
                acc = torch.stack([(o[0].argmax(1) == groups[:, c + j]).float().mean() for j, o in enumerate(outs)]).mean()
            # the prior's rollout (z ~ N(0, I)), as at test time: EPE + label error
            return {"loss": float(epe + 10 * (1 - acc)), "epe": float(epe), "label_accuracy": float(acc)}
        with torch.no_grad():
            steps, c = self._inpaint_rollout(batch, grad=False)
            l1 = torch.stack([F.l1_loss(s[0], batch["rgb"][:, c + j]) for j, s in enumerate(steps)]).mean()
        return {"loss": float(l1), "l1": float(l1)}

    # --- inference -----------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, context: Batch, horizon: int, samples: int = 1, generator: torch.Generator | None = None,
                *, want_extras: bool = False) -> Iterator[StepRecord]:
        rgb, lab = context["rgb"], context["labels"]                                   # (B, T0, C, H, W), (B, T0, H, W)
        if "flow" not in context:
            raise InputError("SADM needs the context's flow", "pass --flow-from dis (or companion flow files)")
        b, t0 = lab.shape[:2]
        s = samples
        if horizon < 0 or s < 1:
            raise ValueError(f"horizon must be >= 0 and samples >= 1, got {horizon} and {samples}")
        if t0 < 2:
            raise InputError(f"SADM needs at least 2 context frames, got {t0}", "pass a longer context (--context)")
        groups = self._groups(lab)
        prev, prev_g = rgb[:, -1].repeat_interleave(s, 0), groups[:, -1].repeat_interleave(s, 0)
        for g, back in self.predict_dynamics(groups, context["flow"][:, :t0 - 1], horizon, s, generator):
            warped = warp_border(prev, back)
            omega = self.disocclusion(back, g, prev_g)
            x = self.inpaint(warped, omega, one_hot(g, self.dynamics.k))              # in [0, 1]
            fwd = invert_flow(back)                                                    # previous frame -> this one

            def bs(v):
                return v.view(b, s, *v.shape[1:])
            extras = {"backward_flow": bs(back), "disocclusion": bs(omega), "warped": bs(warped)} if want_extras else {}
            yield StepRecord(frames=bs(x), labels=bs(self.to_label[g]), flow=bs(fwd), extras=extras)
            prev, prev_g = x, g

    @torch.no_grad()
    def predict_dynamics(self, groups: torch.Tensor, flow: torch.Tensor, horizon: int, samples: int = 1,
                         generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The dynamics model alone (eqs. 1-5): context class groups ``(B, T0, H, W)`` and their
        forward flow ``(B, T0-1, 2, H, W)`` -> per step (groups ``(B*S, H, W)``, backward flow
        ``(B*S, 2, H, W)``), sample-minor. The context is encoded once at batch B."""
        dyn = self.dynamics
        state = dyn.encode(groups, invert_flow(flow))
        state = tuple(v.repeat_interleave(samples, 0) for v in state)
        h_t = state[0]
        ctx = dyn.mlp(h_t + self._z(h_t, generator))                                   # one z per clip and sample
        for _ in range(horizon):
            probs, back, _, state = dyn.decode_step(ctx, state)
            yield probs.argmax(1), back

"""HVP (Lee, Kim, Choi, Kim, Hong, Lee: "Revisiting Hierarchical Approach for Persistent Long-Term
Video Prediction", ICLR 2021; paper: ../shared/papers/002_*.txt). Two parts, trained in two stages:

    structure   SVG-extend over one-hot label maps (Sec. 2.1, App. C.1, Tables B-E): a conv
                encoder with skips, ConvLSTM posterior / prior / predictor on 8x8 maps, a decoder
                ending in log-softmax; beta-VAE objective (eq. 1); at inference the prediction is
                discretised by argmax at every step and fed back one-hot.         part "structure"
    image       a label-to-frame generator after vid2vid (Sec. 2.2, eq. 3):
                x^_t = (1 - m_t) * warp(x^_{t-1}, w_t) + m_t * h_t, the flow w_t, hallucination
                h_t and soft mask m_t predicted from the tau previous frames and the label maps
                s_{t-tau..t}.                                                       part "image"
    disc_image  conditional image discriminator D_I(x_i, s_i) (eq. 4)              training-only
    disc_video  video discriminator D_V(x_{i-tau'+1..i}, w) over tau' = 3 frames (eq. 5)  training-only

Training plan (the paper trains the two generators separately, Sec. 2.2 "the model is trained to
estimate RGB frames from the GT structures")::

    stage "structure"  structure  eq. 1 with teacher forcing on ground-truth labels (image frozen)
    stage "image"      image      G: LSGAN terms of eqs. 4-5, feature matching, flow and warp terms
                       d          D_I and D_V on real clips and G's fakes of the same iteration
                                  (structure frozen)

At test time the image generator is driven by the structure generator's predicted labels.

Facts taken from the authors' structure generator (1Konny/HVP ``structure_generator/``, read, not
copied): 3x3 convs without normalisation, ReLU, 2x2 max-pool down and nearest x2 up, each decoder
stage concatenating [up(g), skip]; the posterior / prior are an embedding conv, one ConvLSTM and two
3x3 conv heads (mu, logvar; no activation); the predictor an embedding conv, two ConvLSTMs and a
3x3 conv + ReLU to g; convs initialised N(0, 0.02); the prior and predictor read h of s_{t-1},
the posterior h of s_t; NLL averaged over pixels and summed over time (context predictions
included), KL summed over channels and space, averaged over the batch, summed over time;
beta = 5e-4, Adam lr 1e-4 (0.9, 0.999), no clipping. The skip is taken from the encoder of the
previous frame up to the last context frame and then kept (``skip: last-context``, the training
default and the Cityscapes test script); the KITTI test script takes it from every previous
(predicted) frame (``skip: previous``; the paper's Sec. 2.1 wording).

Decisions of ours (the paper leaves the image generator to vid2vid, whose code is under a
non-commercial licence and was not used; README "HVP" lists these):

* **Generator**: vid2vid's layout at small scale -- a label branch over the tau + 1 one-hot maps
  and an image branch over the tau previous frames (each conv 7x7 then ``downsample`` stride-2
  convs), their features summed; residual blocks then an up-sampling decoder for h_t (sigmoid),
  and a second residual + decoder branch for w_t (2 channels, times ``flow_scale`` pixels) and m_t
  (sigmoid). Instance normalisation (vid2vid's generator is batch- or instance-normalised; samples
  of one clip run as one batch at inference, so no batch statistics). Warping uses border
  padding (vid2vid's resample), so content entering at the border continues the edge.
* **Flow supervision**: w_t is the backward flow of frame t into t-1. Data carries forward flow
  (frame t-1 -> t); its inverse is found by the fixed-point iteration b = -f(p + b) (5 steps,
  exact where the flow is locally smooth). vid2vid's confidence mask is used: pixels where the
  real frames agree after warping with that flow (L2 over channels < ``conf_threshold``). Terms
  (vid2vid's weights): 10 * L1(w, w_ref) and 10 * L1(warp(x_{t-1}, w), x_t) on confident pixels,
  and L1(m, 1 - conf) (the mask hallucinates where warping cannot explain the frame).
* **No VGG loss**: no pretrained VGG is available offline, so vid2vid's perceptual term is
  replaced by 10 * L1(x^_t, x_t) (a random-weight VGG would be no perceptual loss at all).
* **Rollout**: after ``context`` real frames the generator reads its own previous outputs, as at
  test time; they are detached (vid2vid's ``fake_B_prev.detach()``), so each step's gradient stays
  in that step.
* **Discriminators**: one scale (App. C.3: "reduce ... the scale parameter of the patch
  discriminator to 1" at 64x64), PatchGAN of ``disc_layers`` stride-2 4x4 convs, LeakyReLU 0.2,
  instance norm, LSGAN targets 1 / 0, feature matching on every intermediate map (weight 10).
  D_V stacks tau' = 3 consecutive frames and the 2 reference flows between them on channels (eq.
  5's w, the same flows for real and fake clips, as vid2vid's temporal discriminator).
* **Label ids** 255 (ignore) are a zero one-hot and are not scored; ids at or beyond
  ``num_classes`` are an error.
* **SVG-soft** (``discretize: false``, Sec. 5's ablation) feeds the decoder's probabilities back at
  inference only; the paper's SVG-soft is also trained on the segmentation model's continuous
  logits, which synthetic streets (hard ground-truth labels) do not have.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
from torch import nn
from torch.nn import functional as F

from vpcli.errors import InputError
from vpcli.io.labels import IGNORE_INDEX as IGNORE
from vpcli.nn.convlstm import ConvLSTMCell, run_cells
from vpcli.nn.discriminators import PatchDiscriminator, feature_matching, lsgan
from vpcli.nn.gaussian_lstm import gaussian_kl, reparameterize
from vpcli.nn.warp import invert_flow, warp_border
from vpcli.predictors.base import Batch, Extra, Losses, Predictor, Stage, StepRecord, TrainState, TrainStep
from vpcli.predictors.base import check_label_ids, one_hot
from vpcli.registry import register



@dataclass
class HVPConfig:
    num_classes: int = 19             # Cityscapes train ids (the authors' n_class = 19)
    channels: int = 3
    context: int = 5                  # C = 5 (App. C.1); Cityscapes 4
    # --- structure generator (Tables B-E at 64x64; one more stage per doubling keeps 8x8 maps) ---
    stages: list = field(default_factory=lambda: [[2, 64], [2, 128], [3, 256]])  # [convs, width] per stage
    g_dim: int = 128                  # h_t, g_t channels (R^{128x8x8})
    z_dim: int = 128
    rnn_size: int = 256
    predictor_layers: int = 2
    beta: float = 5e-4                # App. C.1
    skip: Literal["last-context", "previous"] = "last-context"
    # Sec. 5's ablations: stochastic False = "LSTM" (no posterior / prior: the predictor reads h
    # alone); discretize False = "SVG-soft" at inference (the decoder's probabilities are fed back,
    # not the argmax one-hot; the written labels are still the argmax)
    stochastic: bool = True
    discretize: bool = True
    # --- image generator (vid2vid after eq. 3) ---
    tau: int = 5                      # previous frames read (App. C.3: 5 KITTI, 4 Cityscapes)
    gen_width: int = 32
    downsample: int = 2               # stride-2 convs per branch (reduced for 64x64, App. C.3)
    res_blocks: int = 3
    flow_scale: float = 4.0           # flow head output x this = pixels
    conf_threshold: float = 0.05      # reference-flow confidence: L2 warp error of real frames
    lambda_feat: float = 10.0
    lambda_flow: float = 10.0
    lambda_warp: float = 10.0
    lambda_mask: float = 1.0
    lambda_l1: float = 10.0           # stands in for vid2vid's VGG term (no VGG weights offline)
    disc_width: int = 32
    disc_layers: int = 3
    video_frames: int = 3             # tau' (App. C.3)

    def __post_init__(self):
        if self.num_classes < 2 or self.num_classes > IGNORE:
            raise ValueError(f"num_classes must be in 2..{IGNORE}, got {self.num_classes}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.context < 1 or self.tau < 1:
            raise ValueError(f"context and tau must be >= 1, got {self.context} and {self.tau}")
        if not self.stages or any(len(s) != 2 or int(s[0]) < 1 or int(s[1]) < 1 for s in self.stages):
            raise ValueError(f"stages must be a list of [convs, width] pairs, got {self.stages!r}")
        self.stages = [[int(a), int(b)] for a, b in self.stages]
        if self.skip not in ("last-context", "previous"):
            raise ValueError(f"skip must be 'last-context' or 'previous', got {self.skip!r}")
        if self.video_frames < 2:
            raise ValueError(f"video_frames must be >= 2, got {self.video_frames}")
        for name in ("g_dim", "z_dim", "rnn_size", "predictor_layers", "gen_width", "disc_width", "disc_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def _conv_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1), nn.ReLU(inplace=True))


# --------------------------------------------------------------------------- structure generator


class LabelEncoder(nn.Module):
    """Table B: per stage ``convs`` 3x3 conv + ReLU (the last gives the skip), then 2x2 max-pool;
    a final 3x3 conv + ReLU to ``g_dim``. Returns h ``(N, g_dim, H/2^L, W/2^L)`` and the skips."""

    def __init__(self, cfg: HVPConfig):
        super().__init__()
        blocks, cin = [], cfg.num_classes
        for convs, width in cfg.stages:
            blocks.append(nn.Sequential(*[_conv_relu(cin if i == 0 else width, width) for i in range(convs)]))
            cin = width
        self.blocks = nn.ModuleList(blocks)
        self.out = _conv_relu(cin, cfg.g_dim)

    def forward(self, x: torch.Tensor):
        skips = []
        for block in self.blocks:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        return self.out(x), skips


class LabelDecoder(nn.Module):
    """Table E: per stage (deepest first) nearest x2 up, concatenate the skip, ``convs`` 3x3 convs
    + ReLU, the last to the next shallower stage's width; the shallowest ends in K classes and
    log-softmax."""

    def __init__(self, cfg: HVPConfig):
        super().__init__()
        widths = [w for _, w in cfg.stages]
        blocks, cin = [], cfg.g_dim
        for i in reversed(range(len(cfg.stages))):
            convs, width = cfg.stages[i]
            last = widths[i - 1] if i > 0 else cfg.num_classes
            layers = []
            for j in range(convs):
                a = cin + width if j == 0 else width
                b = last if j == convs - 1 else width
                layers.append(nn.Conv2d(a, b, 3, 1, 1) if (i == 0 and j == convs - 1) else _conv_relu(a, b))
            blocks.append(nn.Sequential(*layers))
            cin = last
        self.blocks = nn.ModuleList(blocks)

    def forward(self, g: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        x = g
        for block, skip in zip(self.blocks, reversed(skips)):
            x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")   # 2x2 NN upsample
            x = block(torch.cat([x, skip], 1))
        return F.log_softmax(x, 1)                                       # (N, K, H, W)


class _Recurrent(nn.Module):
    """Embedding conv, ConvLSTM layers; the state is passed in and returned (None = zeros)."""

    def __init__(self, cin: int, hidden: int, layers: int):
        super().__init__()
        self.embed = nn.Conv2d(cin, hidden, 3, 1, 1)
        self.lstm = nn.ModuleList(ConvLSTMCell(hidden, hidden, 3) for _ in range(layers))

    def _run(self, x: torch.Tensor, state: list | None):
        return run_cells(self.lstm, self.embed(x), state)


class GaussianConv(_Recurrent):
    """Table C: posterior / prior -> (mu, logvar) of z, 3x3 conv heads."""

    def __init__(self, cin: int, hidden: int, z: int):
        super().__init__(cin, hidden, 1)
        self.mu = nn.Conv2d(hidden, z, 3, 1, 1)
        self.logvar = nn.Conv2d(hidden, z, 3, 1, 1)

    def forward(self, x, state=None):
        h, state = self._run(x, state)
        return self.mu(h), self.logvar(h), state


class PredictorConv(_Recurrent):
    """Table D: [h_{t-1}, z_t] -> g_t (3x3 conv + ReLU after the ConvLSTMs)."""

    def __init__(self, cin: int, hidden: int, layers: int, out: int):
        super().__init__(cin, hidden, layers)
        self.out = _conv_relu(hidden, out)

    def forward(self, x, state=None):
        h, state = self._run(x, state)
        return self.out(h), state


class StructureGenerator(nn.Module):
    def __init__(self, cfg: HVPConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = LabelEncoder(cfg)
        self.decoder = LabelDecoder(cfg)
        if cfg.stochastic:
            self.posterior = GaussianConv(cfg.g_dim, cfg.rnn_size, cfg.z_dim)
            self.prior = GaussianConv(cfg.g_dim, cfg.rnn_size, cfg.z_dim)
        z = cfg.z_dim if cfg.stochastic else 0
        self.predictor = PredictorConv(cfg.g_dim + z, cfg.rnn_size, cfg.predictor_layers, cfg.g_dim)
        # SVG's init_weights: convs N(0, 0.02), bias 0; ConvLSTM gates uniform +-1/sqrt(hidden)
        # (the authors' ConvLSTM parameters are raw Parameters that init_weights does not touch).
        cells = [m for m in self.modules() if isinstance(m, ConvLSTMCell)]
        gates = {id(c.gates) for c in cells}
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and id(m) not in gates:
                nn.init.normal_(m.weight, 0.0, 0.02)
                nn.init.zeros_(m.bias)
        for c in cells:
            bound = c.hidden ** -0.5
            nn.init.uniform_(c.gates.weight, -bound, bound)
            nn.init.uniform_(c.gates.bias, -bound, bound)

    def encode(self, labels: torch.Tensor):
        """``(N, H, W)`` ids -> h, skips."""
        return self.encoder(one_hot(labels, self.cfg.num_classes))

    def loss(self, labels: torch.Tensor, context: int) -> Losses:
        """Eq. 1 with teacher forcing over ``labels`` ``(B, T, H, W)``: NLL of every s_t, t >= 1."""
        b, t = labels.shape[:2]
        h_all, skips_all = self.encode(labels.flatten(0, 1))               # one pass over B*T frames
        h_all = h_all.view(b, t, *h_all.shape[1:])                         # (B, T, g, h, w)
        skips_all = [s.view(b, t, *s.shape[1:]) for s in skips_all]
        post = prior = pred = None
        nll = kld = labels.new_zeros((), dtype=torch.float32)
        skip_t = 0
        for i in range(1, t):
            if self.cfg.skip == "previous" or i <= context:
                skip_t = i - 1                                             # else: the last context frame's
            if self.cfg.stochastic:
                mu_q, lv_q, post = self.posterior(h_all[:, i], post)
                mu_p, lv_p, prior = self.prior(h_all[:, i - 1], prior)
                z = reparameterize(mu_q, lv_q, torch.randn_like(mu_q))
                g, pred = self.predictor(torch.cat([h_all[:, i - 1], z], 1), pred)
                # in float32: summed over ~1e4 elements, bf16 rounding alone made it negative
                kld = kld + gaussian_kl(mu_q.float(), lv_q.float(), mu_p.float(), lv_p.float()).sum() / b
            else:
                g, pred = self.predictor(h_all[:, i - 1], pred)
            logp = self.decoder(g, [s[:, skip_t] for s in skips_all])
            # mean over the scored pixels; a frame whose every pixel is ignore adds 0 (not NaN)
            target = labels[:, i]
            nll = nll + F.nll_loss(logp, target, ignore_index=IGNORE, reduction="sum") / (target != IGNORE).sum().clamp(min=1)
        return {"loss": nll + self.cfg.beta * kld, "nll": nll, "kld": kld}


# --------------------------------------------------------------------------- image generator


def _norm(c: int) -> nn.Module:
    return nn.InstanceNorm2d(c, affine=True)


class _ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3), _norm(c), nn.ReLU(inplace=True),
                                  nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3), _norm(c))

    def forward(self, x):
        return x + self.body(x)


def _down(cin: int, width: int, n: int) -> nn.Sequential:
    layers = [nn.ReflectionPad2d(3), nn.Conv2d(cin, width, 7), _norm(width), nn.ReLU(inplace=True)]
    for i in range(n):
        a, b = width * 2 ** i, width * 2 ** (i + 1)
        layers += [nn.Conv2d(a, b, 3, 2, 1), _norm(b), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def _up(width: int, n: int) -> nn.Sequential:
    layers = []
    for i in reversed(range(n)):
        a, b = width * 2 ** (i + 1), width * 2 ** i
        layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(a, b, 3, 1, 1), _norm(b),
                   nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class ImageGenerator(nn.Module):
    """Eq. 3: x^_t = (1 - m_t) * warp(x^_{t-1}, w_t) + m_t * h_t."""

    def __init__(self, cfg: HVPConfig):
        super().__init__()
        self.cfg = cfg
        w, n = cfg.gen_width, cfg.downsample
        top = w * 2 ** n
        self.down_labels = _down((cfg.tau + 1) * cfg.num_classes, w, n)
        self.down_frames = _down(cfg.tau * cfg.channels, w, n)
        self.res_image = nn.Sequential(*[_ResBlock(top) for _ in range(cfg.res_blocks)])
        self.up_image = _up(w, n)
        self.to_image = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(w, cfg.channels, 7))
        self.res_flow = nn.Sequential(*[_ResBlock(top) for _ in range(cfg.res_blocks)])
        self.up_flow = _up(w, n)
        self.to_flow = nn.Conv2d(w, 2, 3, 1, 1)
        self.to_mask = nn.Conv2d(w, 1, 3, 1, 1)
        nn.init.zeros_(self.to_flow.weight)      # starts as copy-last warping (zero flow) ...
        nn.init.zeros_(self.to_flow.bias)
        nn.init.zeros_(self.to_mask.weight)      # ... blended half-half with the hallucination
        nn.init.zeros_(self.to_mask.bias)

    def forward(self, frames: torch.Tensor, labels: torch.Tensor):
        """``frames`` ``(N, tau, C, H, W)`` previous frames (oldest first), ``labels`` ``(N, tau+1,
        H, W)`` ids ending with the frame to make. Returns frame, flow (backward, t -> t-1, px),
        mask, hallucination, warped previous frame."""
        n, tau = frames.shape[:2]
        k = self.cfg.num_classes
        oh = one_hot(labels.flatten(0, 1), k).reshape(n, (tau + 1) * k, *labels.shape[-2:])
        feat = self.down_labels(oh) + self.down_frames(frames.flatten(1, 2))   # (N, top, H/2^n, W/2^n)
        hal = torch.sigmoid(self.to_image(self.up_image(self.res_image(feat))))
        f = self.up_flow(self.res_flow(feat))
        flow = self.to_flow(f) * self.cfg.flow_scale
        mask = torch.sigmoid(self.to_mask(f))
        warped = warp_border(frames[:, -1], flow)
        frame = (1 - mask) * warped + mask * hal
        return frame, flow, mask, hal, warped


# --------------------------------------------------------------------------- the predictor


@register("predictor", "hvp", config_cls=HVPConfig,
          description="HVP (Lee et al., ICLR 2021): stochastic label-map predictor + label-to-frame generator")
class HVP(Predictor):
    name = "hvp"
    inputs = frozenset({"rgb", "labels"})
    training_inputs = frozenset({"flow"})       # the image stage supervises its flow head with it
    outputs = frozenset({"frames", "labels"})
    extras: ClassVar[dict[str, Extra]] = {
        "flow": Extra("flow", "the image generator's backward flow w_t (frame t -> t-1, pixels), eq. 3"),
        "mask": Extra("mask", "the soft mask m_t (1 = hallucinated, 0 = warped previous frame)"),
        "hallucination": Extra("image", "the hallucinated frame h_t"),
        "warped": Extra("image", "the warped previous frame"),
    }
    parts = {"structure": ("structure",), "image": ("image",)}
    training_only = ("disc_image", "disc_video")
    cache_keys = {"fake": "the image generator's frames of the clip (detached), for the d step",
                  "ref_flow": "reference backward flows of the clip, for the d step"}

    def __init__(self, config: HVPConfig):
        super().__init__(config)
        c = config
        self.structure = StructureGenerator(c)
        self.image = ImageGenerator(c)
        self.disc_image = PatchDiscriminator(c.channels + c.num_classes, c.disc_width, c.disc_layers)
        self.disc_video = PatchDiscriminator(c.video_frames * c.channels + (c.video_frames - 1) * 2,
                                             c.disc_width, c.disc_layers)
        self.size_multiple = max(2 ** len(c.stages), 2 ** c.downsample)
        # The "LSTM" ablation has no latent and the image generator draws no noise: its samples are
        # copies, so eval scores one (as for the other deterministic predictors).
        self.deterministic = not c.stochastic

    # --- training plan -------------------------------------------------------------------------
    def training_plan(self) -> list[Stage]:
        return [Stage("structure", (TrainStep("structure", lambda: self.part_parameters("structure"),
                                              self._structure_loss),), frozen=("image",)),
                Stage("image", (TrainStep("image", lambda: self.part_parameters("image"), self._image_loss),
                                TrainStep("d", lambda: self.module_parameters("disc_image", "disc_video"),
                                          self._d_loss)), frozen=("structure",))]

    def validate(self, batch: Batch, state: TrainState) -> dict[str, float]:
        if state.stage == "structure":
            return {k: float(v) for k, v in self._structure_loss(batch, state).items()}
        with torch.no_grad():
            fake, _ = self._rollout(batch)
            x = batch["rgb"][:, self._ctx(batch):]
            l1 = F.l1_loss(fake, x)
        return {"loss": float(l1), "l1": float(l1)}

    def _ctx(self, batch: Batch) -> int:
        return min(self.config.context, batch["rgb"].shape[1] - 1)

    def _labels(self, batch: Batch) -> torch.Tensor:
        lab = batch["labels"]
        self.check_labels(lab)
        return lab

    def check_labels(self, labels: torch.Tensor) -> None:
        check_label_ids(labels, self.config.num_classes, "num_classes")

    def _structure_loss(self, batch: Batch, state: TrainState) -> Losses:
        return self.structure.loss(self._labels(batch), self._ctx(batch))

    def _ref_flows(self, batch: Batch) -> torch.Tensor:
        """Backward flows ``(B, T-1, 2, H, W)``: entry t-1 maps frame t into frame t-1."""
        if "flow" not in batch:
            raise InputError("HVP's image stage needs the data's flow to supervise its flow head",
                             "train on vpcli data synth-street folders (exact flow), or pass --flow-from dis")
        return invert_flow(batch["flow"].float())                       # (B, T-1, 2, H, W) forward -> backward

    def _rollout(self, batch: Batch, *, grad: bool = False):
        """Frames ``context..T-1`` from real context frames and ground-truth labels, each step reading
        the previous (detached) outputs; with ``grad`` also the per-step outputs for the losses."""
        x, lab = batch["rgb"], self._labels(batch)
        c, tau = self._ctx(batch), self.config.tau
        t = x.shape[1]
        prev = [x[:, max(i, 0)] for i in range(c - tau, c)]             # oldest first, padded with frame 0
        outs, fakes = [], []
        for i in range(c, t):
            labs = torch.stack([lab[:, max(j, 0)] for j in range(i - tau, i + 1)], 1)   # (B, tau+1, H, W)
            with torch.set_grad_enabled(grad):
                out = self.image(torch.stack(prev[-tau:], 1), labs)
            outs.append(out)
            fakes.append(out[0])
            prev = prev[1:] + [out[0].detach()]
        return torch.stack(fakes, 1), outs                              # (B, T-c, C, H, W)

    def _image_loss(self, batch: Batch, state: TrainState) -> Losses:
        cfg = self.config
        x, lab = batch["rgb"], self._labels(batch)
        c = self._ctx(batch)
        ref = self._ref_flows(batch)                                    # (B, T-1, 2, H, W)
        fake, outs = self._rollout(batch, grad=True)
        k = cfg.num_classes
        terms = {n: x.new_zeros(()) for n in ("gan_image", "feat_image", "flow", "warp", "mask", "l1")}
        for j, (frame, flow, mask, _, _) in enumerate(outs):
            i = c + j
            real, prev_real, w_ref = x[:, i], x[:, i - 1], ref[:, i - 1]
            with torch.no_grad():
                err = (warp_border(prev_real, w_ref) - real).norm(dim=1, keepdim=True)
                conf = (err < cfg.conf_threshold).float()
            terms["flow"] = terms["flow"] + (conf * (flow - w_ref).abs()).mean()
            terms["warp"] = terms["warp"] + (conf * (warp_border(prev_real, flow) - real).abs()).mean()
            terms["mask"] = terms["mask"] + (mask - (1 - conf)).abs().mean()
            terms["l1"] = terms["l1"] + F.l1_loss(frame, real)
            cond = one_hot(lab[:, i], k)
            d_fake = self.disc_image(torch.cat([frame, cond], 1))
            with torch.no_grad():
                d_real = self.disc_image(torch.cat([real, cond], 1))
            terms["gan_image"] = terms["gan_image"] + lsgan(d_fake, True)
            terms["feat_image"] = terms["feat_image"] + feature_matching(d_fake, d_real)
        n = len(outs)
        terms = {k_: v / n for k_, v in terms.items()}
        gan_v, feat_v = self._video_terms(x, fake, ref, c)
        terms["gan_video"], terms["feat_video"] = gan_v, feat_v
        state.cache.put("fake", fake.detach())
        state.cache.put("ref_flow", ref)
        loss = (terms["gan_image"] + terms["gan_video"] + cfg.lambda_feat * (terms["feat_image"] + terms["feat_video"])
                + cfg.lambda_flow * terms["flow"] + cfg.lambda_warp * terms["warp"] + cfg.lambda_mask * terms["mask"]
                + cfg.lambda_l1 * terms["l1"])
        return {"loss": loss, **terms}

    def _video_windows(self, clip: torch.Tensor, ref: torch.Tensor, start: int) -> torch.Tensor:
        """Every window of tau' consecutive frames of ``clip`` (frames ``start..``) with the reference
        flows between them, stacked on channels: ``(B * windows, tau' C + 2 (tau'-1), H, W)``."""
        v = self.config.video_frames
        t = clip.shape[1]
        wins = []
        for e in range(v - 1, t):                                       # window of clip[e-v+1 .. e]
            frames = clip[:, e - v + 1:e + 1].flatten(1, 2)
            flows = ref[:, start + e - v + 1:start + e].flatten(1, 2)   # flows into frames e-v+2 .. e
            wins.append(torch.cat([frames, flows], 1))
        return torch.cat(wins, 0)

    def _video_terms(self, x, fake, ref, c):
        # Windows of the full clip whose last frame is generated: real context frames then fakes.
        v = self.config.video_frames
        start = max(c - v + 1, 0)
        clip_fake = torch.cat([x[:, start:c], fake], 1)
        clip_real = x[:, start:]
        d_fake = self.disc_video(self._video_windows(clip_fake, ref, start))
        with torch.no_grad():
            d_real = self.disc_video(self._video_windows(clip_real, ref, start))
        return lsgan(d_fake, True), feature_matching(d_fake, d_real)

    def _d_loss(self, batch: Batch, state: TrainState) -> Losses:
        x, lab = batch["rgb"], self._labels(batch)
        c = self._ctx(batch)
        fake, ref = state.cache.get("fake"), state.cache.get("ref_flow")
        k = self.config.num_classes
        real_i = x[:, c:].flatten(0, 1)
        cond = one_hot(lab[:, c:].flatten(0, 1), k)
        d_image = 0.5 * (lsgan(self.disc_image(torch.cat([real_i, cond], 1)), True)
                         + lsgan(self.disc_image(torch.cat([fake.flatten(0, 1), cond], 1)), False))
        v = self.config.video_frames
        start = max(c - v + 1, 0)
        d_video = 0.5 * (lsgan(self.disc_video(self._video_windows(x[:, start:], ref, start)), True)
                         + lsgan(self.disc_video(self._video_windows(torch.cat([x[:, start:c], fake], 1), ref, start)),
                                  False))
        return {"loss": d_image + d_video, "d_image": d_image, "d_video": d_video}

    # --- inference -----------------------------------------------------------------------------
    @torch.no_grad()
    def predict_labels(self, labels: torch.Tensor, horizon: int, samples: int = 1,
                       generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
        """The structure generator alone: from context ``labels`` ``(B, T0, H, W)`` yield ``horizon``
        label maps ``(B*S, H, W)`` (sample-minor). The posterior reads the context (each sample its
        own draws), the prior samples the future, and every prediction is discretised by argmax and
        fed back one-hot (Sec. 2.1). The encoder sees the context once, at batch B."""
        self.check_labels(labels)
        b, t0 = labels.shape[:2]
        s, sg = samples, self.structure
        if horizon < 0 or s < 1:
            raise ValueError(f"horizon must be >= 0 and samples >= 1, got {horizon} and {samples}")

        def rep(v):  # (B, ...) -> (B*S, ...), sample-minor
            return v.repeat_interleave(s, 0)

        def draw(like):
            return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)

        h_ctx, skips_ctx = sg.encode(labels.flatten(0, 1))
        h_ctx = h_ctx.view(b, t0, *h_ctx.shape[1:])                     # (B, T0, g, h, w)
        skips_ctx = [v.view(b, t0, *v.shape[1:]) for v in skips_ctx]
        cfg = self.config
        post = prior = pred = None
        for i in range(1, t0):                                          # context: posterior latents
            h_in = rep(h_ctx[:, i - 1])
            if cfg.stochastic:
                mu, lv, post = sg.posterior(rep(h_ctx[:, i]), post)
                _, _, prior = sg.prior(h_in, prior)
                h_in = torch.cat([h_in, reparameterize(mu, lv, draw(mu))], 1)
            _, pred = sg.predictor(h_in, pred)
        h_prev = rep(h_ctx[:, -1])
        skips = [rep(v[:, -1]) for v in skips_ctx]
        for _ in range(horizon):                                        # future: prior latents
            h_in = h_prev
            if cfg.stochastic:
                mu, lv, prior = sg.prior(h_prev, prior)
                h_in = torch.cat([h_prev, reparameterize(mu, lv, draw(mu))], 1)
            g, pred = sg.predictor(h_in, pred)
            logp = sg.decoder(g, skips)
            s_hat = logp.argmax(1)                                      # (B*S, H, W): discretised
            yield s_hat
            # fed back one-hot (SVG-soft: the probabilities themselves)
            h_prev, new_skips = sg.encode(s_hat) if cfg.discretize else sg.encoder(logp.exp())
            if cfg.skip == "previous":
                skips = new_skips

    @torch.no_grad()
    def predict(self, context: Batch, horizon: int, samples: int = 1, generator: torch.Generator | None = None,
                *, want_extras: bool = False) -> Iterator[StepRecord]:
        """Labels by the structure generator (:meth:`predict_labels`), frames by the image generator
        from them (eq. 3), one step at a time."""
        rgb, lab = context["rgb"], context["labels"]                   # (B, T0, C, H, W), (B, T0, H, W)
        b, t0 = lab.shape[:2]
        s, tau = samples, self.config.tau

        def rep(v):
            return v.repeat_interleave(s, 0)
        frames = [rep(rgb[:, max(i, 0)]) for i in range(t0 - tau, t0)]   # (B*S, C, H, W) each, oldest first
        labels = [rep(lab[:, max(i, 0)]) for i in range(t0 - tau, t0)]
        for s_hat in self.predict_labels(lab, horizon, samples, generator):
            x_hat, flow, mask, hal, warped = self.image(torch.stack(frames, 1), torch.stack(labels + [s_hat], 1))
            x_hat = x_hat.clamp(0, 1)
            frames = frames[1:] + [x_hat]
            labels = labels[1:] + [s_hat]
            extras = {}
            if want_extras:
                extras = {"flow": flow.view(b, s, *flow.shape[1:]), "mask": mask.view(b, s, *mask.shape[1:]),
                          "hallucination": hal.view(b, s, *hal.shape[1:]),
                          "warped": warped.view(b, s, *warped.shape[1:])}
            yield StepRecord(frames=x_hat.view(b, s, *x_hat.shape[1:]), labels=s_hat.view(b, s, *s_hat.shape[1:]),
                             extras=extras)

"""LMVP (Wang, Li, Cao, Chen, Wei, Carin: "LMVP: Video Predictor with Leaked Motion Information",
2018; paper: ../shared/papers/003_*.txt). No code was released: eqs. 1-4 and Algorithm 1 (App. A)
are the spec, and every detail they leave open is decided here (under "Decisions" below, each
with its reason; README "LMVP" lists them).

Modules (``parts``: what inference needs; ``training_only``: what it does not)::

    extractor   F: a clip x_{t-c+1..t} (``clip`` frames stacked on channels) -> the leaked motion
                feature f^d_t, a (feature_dim, H/8, W/8) map, zero mean and unit variance
                per window                                                       part "extractor"
    disc_head   the CNN on top of F: D(x) = CNN(F(x)), one real/fake logit     training-only
    guider      M: ConvLSTM over f^d_t (zero initial state) -> m^_t, a prediction of
                m_t = f^d_{t+1} - f^d_t                                          part "guider"
    generator   G: spatial encoder of x_t, temporal encoder of m^_t, filter network -> per-pixel
                k x k filters (softmax over the taps) applied to x_t by the dynamic filter layer
                (vpcli.nn.dynamic_filter): x^_{t+1} = DF(x_t; K(x_t, m^_t))        part "generator"

Inference needs G, F and M (m^_t = M(F(x^_{t-c+1..t}))), so only D's head is training-only.

Losses::

    eq. 1  L_dis   = BCE(D(real clips), 1) + BCE(D(fake clips), 0)          (with logits)
    eq. 2  L_M^L   = mean_t || M(f^d_t) - (f^d_{t+1} - f^d_t) ||^2           real clips only
    eq. 3  L_M^T   = mean_t || (F([x^_{t-c+2..t}, x^_{t+1}]) - f^_t) - m^_t ||^2
    eq. 4  L_gen   = L_rec + gdl_weight * L_gdl + gamma * L_M^T
           L_rec   = per-pixel BCE (digits, the paper's Moving MNIST loss) or MSE (``recon``)
           L_gdl   = gradient difference loss, Mathieu et al. 2016 eq. 5 with alpha = 1

Training plan (Algorithm 1, App. A), one iteration runs its steps in this order on one batch::

    stage "pretrain"  d      eq. 1: F + D head; fakes from the current G (no gradient)
                      joint  eq. 4 with gamma = 0: G, F and M together (App. A: "theta_F, theta_M
                             and theta_G are jointly updated")
    stage "main"      d      eq. 1, as above (M and G fixed)
                      m      eq. 2 on real clips (F, G fixed)
                      g      eq. 4 with gamma = config.gamma (M, F fixed)

``gamma = 0`` keeps the plan and removes the teacher term from every step: the same generator
trained without M's guidance (the ablation). The iteration cache hands F's features of the real
clip from ``m`` to ``g`` (F does not change between them, so ``g`` does not recompute them).

Decisions (the paper leaves these open):

* **Clip length** ``clip = 3`` frames per window ending at t: the paper's x_{t-c:t} with c = 2,
  reading it as c + 1 frames, as eq. 3's window [x^_{t-c+1:t}, x^_{t+1}] has. Three frames see
  velocity and a change of velocity (a bounce), and fit the highway protocol's three context frames. Windows never reach
  before the first frame: M starts at the first full window (frame ``clip - 1``); only a
  context shorter than ``clip`` is padded by repeating its first frame.
* **F** stacks the clip on channels (a 2D CNN, three stride-2 4x4 convs, LeakyReLU 0.2) and ends
  in a per-window normalisation (GroupNorm with one group, no affine): f^d lives on a spatial map
  (motion is local) of fixed scale, so eqs. 2 and 3 cannot be made small by shrinking F's output,
  and it cannot saturate. A tanh ending (the first version) saturated: after 150 pretraining
  iterations of a small model 55% of the features were at |f| > 0.99 and D was at chance, the
  joint step's reconstruction gradient driving them out. (D stays near chance during pretraining
  even so: the joint step moves F faster than D's step does; once "main" starts, F follows D only
  and D separates real from fake within tens of iterations.) No batch statistics anywhere: F and M
  run at inference on one clip, and a real / fake batch statistic would leak the label into D.
* **D's fakes** are G's rollouts from the context (the future frames predicted from predicted
  frames, as at test time); D scores every window that ends at a future frame, real windows at
  the same positions. G gets no adversarial term: eq. 4 has none; D acts on G only through the
  features F leaks into eq. 3.
* **Rollout, not teacher forcing** in eqs. 3 and 4: after the context G reads its own last
  prediction and M reads F of predicted windows (eq. 3's hats; the paper's argument for M,
  robustness to a failed earlier prediction, only applies then). Algorithm 1 line 16 writes
  G(x_t, m_t) with real inputs; we follow eq. 3. ``train.scheduled_sampling_k`` is not used.
  Gradients of L_rec flow back through the chain of predicted frames (BPTT over the horizon).
* **Eq. 3's gradient** reaches theta_G only through the new frame x^_{t+1}: f^_t, m^_t and the
  window's older frames are detached ("treated as inputs"), F's parameters are read detached
  (fixed, no stray gradients). Averaged over steps and elements (the paper sums; the scale is
  absorbed by gamma).
* **Which steps move F**: ``d`` (eq. 1) always; ``joint`` (pretrain) too, by L_rec through
  m^_t (App. A); never ``m`` or ``g`` (Algorithm 1: "fix theta_D"). In ``g`` the guidance m^_t
  is an input to G (M and F run without gradient), in ``joint`` it carries gradient into M and F.
* **Dynamic filter**: k = 9 (digits move at most 4 px per frame: radius 4; on synth-street at
  64x64 radius 4 covers 73% of the pixels' motion, measured), replicate padding, one filter per pixel shared by the channels, softmax-normalised
  (a convex combination of input pixels, so the frame stays in [0, 1]). The filter logits start
  with the centre tap at probability 1/2: G starts halfway between copy-last and a box blur.
* **G** is feed-forward per step (the recurrence lives in M): a U-Net whose encoder is the
  spatial encoder (full, 1/2, 1/4, 1/8 resolution), the temporal encoder maps m^_t at 1/8, and the
  filter network fuses both at 1/8 and decodes with the spatial skips to k*k logits per pixel.
* **Widths, gamma, GDL weight, learning rates, pretraining length** are preset values (see the
  presets' comments): gamma 0.1, so that gamma * L_M^T is 7-10% of L_rec + L_gdl when "main"
  starts (measured on digits and street; F's features have unit variance, L_M^T ~ 0.1); GDL
  weight 1 (Mathieu et al.'s lambda_gdl); Adam lr 1e-3 for G / M (the paper says only "Adam"),
  2e-4 with beta1 0.5 for D (DCGAN's); a third of a CPU run's iterations (a sixth of the
  paper-like run's) pretrains, Algorithm 1's "until convergence" giving no length.

``predict`` is deterministic (``deterministic = True``): the S samples of a clip are the same
frames (one computation at batch B, expanded). ``want_extras`` adds ``filter_flow``: the mean
offset of each pixel's filter, i.e. where in the current frame the predicted pixel takes its
value from (a backward flow, pixels).
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
from vpcli.nn.convlstm import ConvLSTM
from vpcli.nn.dynamic_filter import DynamicFilter
from vpcli.predictors.base import Batch, Extra, Losses, Predictor, Stage, StepRecord, TrainState, TrainStep
from vpcli.registry import register

STRIDE = 8          # F's output (and G's bottleneck) is at 1/8 of the frame size
BCE_EPS = 1e-6


@dataclass
class LMVPConfig:
    channels: int = 1                 # 1 for digits, 3 for street scenes
    context: int = 10                 # frames given (10 Moving MNIST, 3 highway)
    clip: int = 3                     # frames per window of F (the paper's clip length c)
    kernel_size: int = 9              # dynamic filter k x k
    feature_dim: int = 32             # channels of f^d_t and m^_t (maps at H/8 x W/8)
    extractor_width: int = 32         # F's conv width (x1, x2, then feature_dim)
    head_width: int = 64              # D head's conv width
    guider_hidden: int = 64           # M's ConvLSTM hidden channels
    guider_layers: int = 1
    gen_width: int = 32               # G's width at full resolution (x2 at 1/2 and 1/4, x4 at 1/8)
    motion_width: int = 32            # G's temporal encoder width
    padding: Literal["replicate", "zeros", "reflect"] = "replicate"   # dynamic filter border
    recon: Literal["bce", "mse"] = "bce"                             # L_rec: BCE for digits
    gdl_weight: float = 1.0           # weight of the gradient difference loss in L_rec
    gamma: float = 0.1                # eq. 4: weight of the teacher loss L_M^T (0 = the ablation)

    def __post_init__(self):
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        for name in ("context", "clip", "feature_dim", "extractor_width", "head_width", "guider_hidden",
                     "guider_layers", "gen_width", "motion_width"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 1, got {self.kernel_size}")
        if self.padding not in ("replicate", "zeros", "reflect"):
            raise ValueError(f"padding must be replicate, zeros or reflect, got {self.padding!r}")
        if self.recon not in ("bce", "mse"):
            raise ValueError(f"recon must be bce or mse, got {self.recon!r}")
        if self.gamma < 0 or self.gdl_weight < 0:
            raise ValueError(f"gamma and gdl_weight must be >= 0, got {self.gamma} and {self.gdl_weight}")


# --------------------------------------------------------------------------- layers


def _conv(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2 if stride == 1 else 1),
                         nn.LeakyReLU(0.2, inplace=True))


def _down(cin: int, cout: int) -> nn.Sequential:  # 4x4 stride 2: H -> H/2
    return _conv(cin, cout, 4, 2)


def _up(cin: int, cout: int) -> nn.Sequential:    # 4x4 transposed, stride 2: H -> 2H
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True))


class Extractor(nn.Module):
    """F: a window of ``clip`` frames stacked on channels ``(N, clip*C, H, W)`` -> f^d ``(N, D, H/8, W/8)``."""

    def __init__(self, in_channels: int, width: int, dim: int):
        super().__init__()
        self.net = nn.Sequential(_down(in_channels, width), _down(width, 2 * width),
                                 nn.Conv2d(2 * width, dim, 4, 2, 1),
                                 # per window: zero mean, unit variance over (D, h, w), no affine
                                 nn.GroupNorm(1, dim, affine=False))

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        return self.net(window)


class DiscriminatorHead(nn.Module):
    """The CNN of D = CNN(F(x)): two stride-2 convs, global average pool, a linear logit."""

    def __init__(self, dim: int, width: int):
        super().__init__()
        self.convs = nn.Sequential(_conv(dim, width, 3, 2), _conv(width, width, 3, 2))
        self.fc = nn.Linear(width, 1)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(self.convs(f).mean((2, 3))).squeeze(1)   # (N, D, h, w) -> (N,) logits


class MotionGuider(nn.Module):
    """M: ConvLSTM over f^d_t -> m^_t (a linear 1x1 read-out: m is a difference, any sign)."""

    def __init__(self, dim: int, hidden: int, layers: int):
        super().__init__()
        self.rnn = ConvLSTM(dim, hidden, layers)
        self.out = nn.Conv2d(hidden, dim, 1)

    def forward(self, f: torch.Tensor, state: list | None = None) -> tuple[torch.Tensor, list]:
        h, state = self.rnn(f, state)     # state None = zeros (Algorithm 1: zero initial states)
        return self.out(h), state


class SpatialEncoder(nn.Module):
    """x_t -> f^s_t at 1/8 plus the skips at full, 1/2 and 1/4 resolution."""

    def __init__(self, channels: int, w: int):
        super().__init__()
        self.e1 = _conv(channels, w)       # H
        self.e2 = _down(w, 2 * w)          # H/2
        self.e3 = _down(2 * w, 2 * w)      # H/4
        self.e4 = _down(2 * w, 4 * w)      # H/8

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        s1 = self.e1(x)
        s2 = self.e2(s1)
        s3 = self.e3(s2)
        return [s1, s2, s3, self.e4(s3)]


class FilterNetwork(nn.Module):
    """[f^s_t, f^m_t] at 1/8 -> k*k filter logits per pixel at full resolution (U-Net decoder)."""

    def __init__(self, w: int, motion_width: int, kernel_size: int):
        super().__init__()
        self.fuse = _conv(4 * w + motion_width, 4 * w)                     # H/8
        self.up3, self.c3 = _up(4 * w, 2 * w), _conv(4 * w, 2 * w)         # H/4, + skip e3
        self.up2, self.c2 = _up(2 * w, w), _conv(3 * w, w)                 # H/2, + skip e2
        self.up1, self.c1 = _up(w, w), _conv(2 * w, w)                     # H,   + skip e1
        taps = kernel_size * kernel_size
        self.logits = nn.Conv2d(w, taps, 1)
        # Start at "centre tap 1/2, the rest uniform": e^b / (e^b + taps - 1) = 1/2.
        nn.init.normal_(self.logits.weight, 0.0, 0.01)
        nn.init.zeros_(self.logits.bias)
        with torch.no_grad():
            self.logits.bias[taps // 2] = float(torch.log(torch.tensor(taps - 1.0))) if taps > 1 else 0.0

    def forward(self, skips: list[torch.Tensor], fm: torch.Tensor) -> torch.Tensor:
        s1, s2, s3, s4 = skips
        y = self.fuse(torch.cat([s4, fm], 1))
        y = self.c3(torch.cat([self.up3(y), s3], 1))
        y = self.c2(torch.cat([self.up2(y), s2], 1))
        y = self.c1(torch.cat([self.up1(y), s1], 1))
        return self.logits(y)                                             # (B, k*k, H, W)


class Generator(nn.Module):
    """G(x_t, m^_t) -> (x^_{t+1}, filters (B, k*k, H, W))."""

    def __init__(self, channels: int, dim: int, w: int, motion_width: int, kernel_size: int, padding: str):
        super().__init__()
        self.spatial_encoder = SpatialEncoder(channels, w)
        self.temporal_encoder = nn.Sequential(_conv(dim, motion_width), _conv(motion_width, motion_width))
        self.filter_network = FilterNetwork(w, motion_width, kernel_size)
        self.filter = DynamicFilter(kernel_size, padding)

    def forward(self, x: torch.Tensor, m_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.filter_network(self.spatial_encoder(x), self.temporal_encoder(m_hat))
        return self.filter(x, logits)


def gradient_difference_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mathieu, Couprie, LeCun 2016, eq. 5 with alpha = 1, averaged over pixels (sum of the two axes)."""
    def grads(x):
        return (x[..., 1:, :] - x[..., :-1, :]).abs(), (x[..., :, 1:] - x[..., :, :-1]).abs()
    (py, px), (ty, tx) = grads(pred), grads(target)
    return (ty - py).abs().mean() + (tx - px).abs().mean()


def filter_flow(filters: torch.Tensor) -> torch.Tensor:
    """Mean tap offset of per-pixel filters ``(B, k*k, H, W)`` -> ``(B, 2, H, W)`` (u right, v down)."""
    k = math.isqrt(filters.shape[1])
    r = k // 2
    off = torch.arange(k, device=filters.device, dtype=filters.dtype) - r
    f = filters.view(filters.shape[0], k, k, *filters.shape[2:])           # (B, rows, cols, H, W)
    v = (f.sum(2) * off.view(1, k, 1, 1)).sum(1)
    u = (f.sum(1) * off.view(1, k, 1, 1)).sum(1)
    return torch.stack([u, v], 1)


# --------------------------------------------------------------------------- the method


@register("predictor", "lmvp", config_cls=LMVPConfig,
          description="LMVP (Wang et al. 2018): motion leaked from the discriminator, motion guider, dynamic filters")
class LMVP(Predictor):
    name = "lmvp"
    parts = {"generator": ("generator",), "guider": ("guider",), "extractor": ("extractor",)}
    training_only = ("disc_head",)
    cache_keys = {"real_features": "F's leaked features of the real clip's windows (B, N, D, H/8, W/8), "
                                   "windows ending at frames clip-1 .. T-1, computed by step m after D's "
                                   "update, no gradient"}
    validation_metric = ("mse", "min")   # MSE of the rolled-out future frames
    deterministic: ClassVar[bool] = True  # predict's samples are copies: one suffices
    extras = {"filter_flow": Extra("flow", "mean offset of each pixel's dynamic filter: where the predicted pixel "
                                           "takes its value from in the previous frame (backward flow, pixels)")}

    def __init__(self, config: LMVPConfig):
        super().__init__(config)
        c = config
        self.extractor = Extractor(c.clip * c.channels, c.extractor_width, c.feature_dim)
        self.disc_head = DiscriminatorHead(c.feature_dim, c.head_width)
        self.guider = MotionGuider(c.feature_dim, c.guider_hidden, c.guider_layers)
        self.generator = Generator(c.channels, c.feature_dim, c.gen_width, c.motion_width, c.kernel_size, c.padding)

    # --- pieces ------------------------------------------------------------------------------
    def _check(self, rgb: torch.Tensor) -> None:
        c = self.config
        if rgb.dim() != 5 or rgb.shape[2] != c.channels:
            raise InputError(f"lmvp expects rgb (B, T, {c.channels}, H, W), got {tuple(rgb.shape)}",
                             "set model.channels / data.channels to the clips' channel count")
        h, w = rgb.shape[-2:]
        if h % STRIDE or w % STRIDE:
            raise InputError(f"lmvp needs H and W divisible by {STRIDE}, got {h}x{w}",
                             "set data.size to a multiple of 8 (64x64 is the paper's size)")

    def _first_end(self, t0: int) -> int:
        """Index of the frame the first window ends at: the first full window, or the last
        context frame when the context is shorter than a window."""
        return min(self.config.clip, t0) - 1

    def _windows(self, x: torch.Tensor, ends: range) -> torch.Tensor:
        """Windows of ``clip`` frames ending at ``ends``, stacked on channels:
        ``(B, T, C, H, W)`` -> ``(B, N, clip*C, H, W)``; frames before 0 repeat frame 0."""
        k = self.config.clip
        idx = torch.tensor([[max(e - k + 1 + j, 0) for j in range(k)] for e in ends], device=x.device)
        w = x[:, idx.flatten()]                                           # (B, N*clip, C, H, W)
        return w.reshape(x.shape[0], len(ends), k * x.shape[2], *x.shape[-2:])

    def _features(self, windows: torch.Tensor, fixed: bool = False) -> torch.Tensor:
        """F over ``(B, N, clip*C, H, W)`` -> ``(B, N, D, h, w)``; ``fixed``: F's parameters detached
        (gradients reach the input only: eq. 3 with theta_F fixed)."""
        flat = windows.flatten(0, 1)
        if fixed:
            params = {n: p.detach() for n, p in self.extractor.named_parameters()}
            f = torch.func.functional_call(self.extractor, params, (flat,))
        else:
            f = self.extractor(flat)
        return f.view(*windows.shape[:2], *f.shape[1:])

    def _steps(self, context: torch.Tensor, horizon: int, *, guide_grad: bool = False, teacher_grad: bool = False,
               last_features: bool = False, ctx_features: torch.Tensor | None = None
               ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        """Roll G out ``horizon`` steps from ``context`` ``(B, T0, C, H, W)``; yields
        ``(x^_{t+1}, filters, L_M^T term of that step or None)``.

        ``guide_grad`` (pretrain joint step): F and M carry gradients. Otherwise M and F run
        without (the caller may also run the whole rollout under no_grad); ``teacher_grad`` then
        lets eq. 3's term reach G through F with F's parameters fixed. The teacher term is computed
        whenever F of the new window is (every step but the last, and the last with
        ``last_features`` or ``teacher_grad``). ``ctx_features``: F of the context windows, if known.
        """
        c = self.config
        t0 = context.shape[1]
        first = self._first_end(t0)

        def grad_ctx():  # a fresh context manager each time; none spans a yield
            return torch.enable_grad() if guide_grad else torch.no_grad()
        with grad_ctx():
            f_ctx = ctx_features if ctx_features is not None else self._features(
                self._windows(context, range(first, t0)))                 # (B, N, D, h, w)
            state = None
            for i in range(f_ctx.shape[1]):
                m_hat, state = self.guider(f_ctx[:, i], state)
        f_cur = f_ctx[:, -1]
        # The window's older frames: x_{t-clip+2 .. t} for the first prediction x_{t+1}.
        recent = [context[:, max(j, 0)] for j in range(t0 - c.clip + 1, t0)]
        cur = context[:, -1]
        for k in range(horizon):
            x_next, filters = self.generator(cur, m_hat if guide_grad else m_hat.detach())
            teacher = None
            more = k + 1 < horizon
            if more or last_features or teacher_grad:
                win = torch.cat([r.detach() for r in recent] + [x_next], 1)[:, None]   # (B, 1, clip*C, H, W)
                if guide_grad:
                    f_next = self._features(win)[:, 0]
                elif teacher_grad:
                    f_next = self._features(win, fixed=True)[:, 0]
                else:
                    with torch.no_grad():
                        f_next = self._features(win)[:, 0]
                # eq. 3: the change of F between consecutive generated windows should be M's guess
                teacher = (f_next - f_cur.detach() - m_hat.detach()).square().mean()
                if not teacher_grad:
                    teacher = teacher.detach()
                if more:
                    with grad_ctx():
                        m_hat, state = self.guider(f_next if guide_grad else f_next.detach(), state)
                f_cur = f_next
            yield x_next, filters, teacher
            if c.clip > 1:
                recent = recent[1:] + [x_next]
            cur = x_next

    def _recon(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.config.recon == "bce":
            return F.binary_cross_entropy(pred.clamp(BCE_EPS, 1 - BCE_EPS), target)
        return F.mse_loss(pred, target)

    # --- training plan -------------------------------------------------------------------------
    def training_plan(self) -> list[Stage]:
        d = TrainStep("d", lambda: self.module_parameters("extractor", "disc_head"), self.d_loss)
        return [Stage("pretrain", (d, TrainStep("joint", lambda: self.part_parameters("generator", "guider",
                                                                                     "extractor"), self.joint_loss))),
                Stage("main", (d, TrainStep("m", lambda: self.part_parameters("guider"), self.m_loss),
                               TrainStep("g", lambda: self.part_parameters("generator"), self.g_loss)))]

    def _split(self, batch: Batch) -> tuple[torch.Tensor, int, int]:
        x = batch["rgb"]                                                  # (B, T, C, H, W)
        self._check(x)
        t0 = self.config.context
        if x.shape[1] <= t0:
            raise InputError(f"lmvp trains on clips longer than the context ({t0} frames), got {x.shape[1]}",
                             "set data.future >= 1")
        return x, t0, x.shape[1] - t0

    def d_loss(self, batch: Batch, state: TrainState) -> Losses:
        """Eq. 1 on the windows ending at future frames: real clips vs G's rollouts (Algorithm 1
        line 8: fakes generated by the current G, no gradient into G or M)."""
        x, t0, n = self._split(batch)
        with torch.no_grad():
            fake_future = torch.stack([s[0] for s in self._steps(x[:, :t0], n)], 1)   # (B, n, C, H, W)
        fake = torch.cat([x[:, :t0], fake_future], 1)
        ends = range(t0, x.shape[1])
        windows = torch.cat([self._windows(x, ends), self._windows(fake, ends)], 0)   # (2B, n, clip*C, H, W)
        logits = self.disc_head(self._features(windows).flatten(0, 1)).view(2, -1)   # (2, B*n)
        real, fk = logits[0], logits[1]
        loss = (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                + F.binary_cross_entropy_with_logits(fk, torch.zeros_like(fk)))
        return {"loss": loss, "d_real": torch.sigmoid(real).mean().detach(),
                "d_fake": torch.sigmoid(fk).mean().detach()}

    def _real_features(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self._features(self._windows(x, range(self._first_end(self.config.context), x.shape[1])))

    def _learner(self, feats: torch.Tensor) -> torch.Tensor:
        """Eq. 2 over a clip's features ``(B, N, D, h, w)`` (zero initial state)."""
        state, total = None, feats.new_zeros(())
        for i in range(feats.shape[1] - 1):
            m_hat, state = self.guider(feats[:, i], state)
            total = total + (m_hat - (feats[:, i + 1] - feats[:, i])).square().mean()
        return total / max(feats.shape[1] - 1, 1)

    def m_loss(self, batch: Batch, state: TrainState) -> Losses:
        """Eq. 2 on real clips only; F fixed (its features carry no gradient)."""
        x, _, _ = self._split(batch)
        feats = self._real_features(x)
        state.cache.put("real_features", feats)
        loss = self._learner(feats)
        return {"loss": loss}

    def _gen_loss(self, batch: Batch, state: TrainState, *, joint: bool) -> Losses:
        x, t0, n = self._split(batch)
        gamma = 0.0 if joint else self.config.gamma
        ctx = None
        if not joint and "real_features" in state.cache:                 # made by step m this iteration
            ctx = state.cache.get("real_features")[:, :t0 - self._first_end(t0)]
        rec = gdl = teacher = mse = x.new_zeros(())
        for k, (pred, _, tch) in enumerate(self._steps(x[:, :t0], n, guide_grad=joint, teacher_grad=gamma > 0,
                                                        last_features=True, ctx_features=ctx)):
            target = x[:, t0 + k]
            rec = rec + self._recon(pred, target)
            gdl = gdl + gradient_difference_loss(pred, target)
            teacher = teacher + tch
            mse = mse + F.mse_loss(pred.detach(), target)
        rec, gdl, teacher, mse = rec / n, gdl / n, teacher / n, mse / n
        loss = rec + self.config.gdl_weight * gdl
        if gamma > 0:
            loss = loss + gamma * teacher                                # eq. 4
        else:
            teacher = teacher.detach()                                   # reported, not trained on
        return {"loss": loss, "recon": rec.detach(), "gdl": gdl.detach(), "teacher": teacher.detach(),
                "mse": mse}

    def joint_loss(self, batch: Batch, state: TrainState) -> Losses:
        """Pretraining: eq. 4 with gamma = 0, G, F and M updated together (App. A)."""
        return self._gen_loss(batch, state, joint=True)

    def g_loss(self, batch: Batch, state: TrainState) -> Losses:
        """Eq. 4 with gamma = config.gamma; M and F fixed (Algorithm 1 line 17)."""
        return self._gen_loss(batch, state, joint=False)

    @torch.no_grad()
    def validate(self, batch: Batch, state: TrainState) -> dict[str, float]:
        """Quality of the rolled-out future (as `predict` makes it): MSE (the validation metric),
        BCE, PSNR; plus eq. 2 on the real clip and eq. 3 along the rollout."""
        x, t0, n = self._split(batch)
        preds, teach = [], []
        for pred, _, tch in self._steps(x[:, :t0], n, last_features=True):
            preds.append(pred)
            teach.append(tch)
        pred, target = torch.stack(preds, 1), x[:, t0:]
        mse_frame = (pred - target).square().flatten(2).mean(2)          # (B, n)
        psnr = (10 * torch.log10(1.0 / mse_frame.clamp_min(1e-10))).mean()
        bce = F.binary_cross_entropy(pred.clamp(BCE_EPS, 1 - BCE_EPS), target)
        return {"mse": float(mse_frame.mean()), "bce": float(bce), "psnr": float(psnr),
                "teacher": float(torch.stack(teach).mean()), "learner": float(self._learner(self._real_features(x)))}

    # --- inference -----------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, context: Batch, horizon: int, samples: int = 1, generator: torch.Generator | None = None,
                *, want_extras: bool = False) -> Iterator[StepRecord]:
        """Yield ``horizon`` records, frames ``(B, S, C, H, W)``. Deterministic: computed once at
        batch B and expanded to the S samples (``generator`` is not used). Only the last ``clip``
        frames and M's state are kept, so any horizon runs in constant memory."""
        rgb = context["rgb"]                                              # (B, T0, C, H, W)
        self._check(rgb)
        if horizon < 0 or samples < 1:
            raise ValueError(f"horizon must be >= 0 and samples >= 1, got {horizon} and {samples}")
        if horizon == 0:
            return
        b = rgb.shape[0]

        def expand(v: torch.Tensor) -> torch.Tensor:                     # (B, ...) -> (B, S, ...)
            return v.unsqueeze(1).expand(b, samples, *v.shape[1:])
        for x_next, filters, _ in self._steps(rgb, horizon):
            extras = {"filter_flow": expand(filter_flow(filters))} if want_extras else {}
            yield StepRecord(frames=expand(x_next.clamp(0, 1)), extras=extras)

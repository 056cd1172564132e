"""SLAMP and SLAMP-Baseline (Akan, Erdem, Erdem, Güney: "SLAMP: Stochastic Latent Appearance and
Motion Prediction", ICCV 2021; paper: ../shared/papers/004_*.txt; code: github.com/kaanakan/slamp).

SLAMP-Baseline (Sec. 3.2, App. A Fig. 11) is SVG-LP (Denton & Fergus 2018) with two more
decoders: one stochastic latent ``z_t`` (learned prior), one frame-predictor LSTM whose output
``g_t`` is decoded three ways -- an appearance frame ``x^p_t`` (pixel decoder), a flow field that
warps ``x_{t-1}`` into ``x^f_t`` (flow decoder), and a mask that blends the two (Eq. 1).

SLAMP (Sec. 3.2-3.4, Fig. 3) splits the latent in two: an appearance latent ``z^p_t`` from pixel
features and a motion latent ``z^f_t`` from a *motion encoder* over frame pairs, each with its
own posterior, learned prior and frame predictor (static / dynamic). The motion prior and the
dynamic predictor read the motion of the previous step, ``h^f_{t-1} = MotionEnc(x_{t-2},
x_{t-1})`` (Eq. 5-6): the motion history. Training maximises the ELBO of Eq. 3: L2 on ``x^p_t``,
``x^f_t`` and ``x_t`` plus ``beta`` times the two KL terms.

Architecture facts come from the paper's App. C and the authors' code (file names below are in
kaanakan/slamp). Module names are the authors' component names (``helpers.get_model_*``), and
every parameter maps one to one onto their checkpoints (see vpcli/weights/convert_slamp.py).

One transition ``t-1 -> t`` (``helpers.train_step`` / ``eval_step``), for t = 1 ... T-1::

    h_{t-1}, skip = Enc(x_{t-1});  skips = running mean of skip over steps 1..t (App. C.2)
    h_t = Enc(x_t);  h^f_t = MotionEnc(x_{t-1}, x_t)                [only when x_t is known]
    z^p_t ~ q(h_t) (train, context) or p(h_{t-1}) (future)          Gaussian LSTMs
    z^f_t ~ q(h^f_t) (train, context) or p(h^f_{t-1}) (future)
    g^p_t = LSTM_static([h_{t-1}, z^p_t]);  g^f_t = LSTM_dynamic([h^f_{t-1}, z^f_t])
    x^p_t = PixelDec(g^p_t, skips);  f_t = FlowDec(g^f_t, skips);  x^f_t = clamp(warp(x_{t-1}, f_t))
    m_t = MaskDec([x^p_t, x^f_t]);  x_t_hat = m_t x^p_t + (1 - m_t) x^f_t       (Eq. 1)

``f_t`` is a *backward* flow of frame t (DESIGN.md convention: where each pixel of frame t
comes from in frame t-1); the first step's motion history is the zero motion
``MotionEnc(x_0, x_0)`` (Sec. 3.4).

Backbones: ``dcgan64`` (MNIST), ``vgg64`` (KTH, BAIR) encode a 64x64 frame to a vector and use
linear LSTMs; ``kitti`` (92x310) and ``cityscapes`` (128x256) share one image encoder whose
features feed small conv encoders for appearance and motion, with ConvLSTMs on 4x4 / 4x8 maps
(App. C "Training details for KITTI and Cityscapes"; ``models/kitti_models.py``,
``models/cityscapes_models.py``, ``models/conv_lstms.py``).

Deliberate differences from the authors' code (each also noted where it happens):

* recurrent state is passed around instead of stored on modules, so ``predict`` runs the ``S``
  samples as one batch, encodes each context frame once, and keeps no history;
* a frame's encoding is reused when that frame is the next step's input (the reference encodes
  it twice; same values, BatchNorm running statistics are updated once instead of twice);
* ``predict`` uses the module mode the caller set (``model.eval()``: BatchNorm running
  statistics). The reference evaluates with encoders/decoders in *train* mode (batch statistics):
  ``helpers.load_model_from_checkpoint`` calls ``.train()`` on every component whose name holds
  ``encoder`` or ``decoder`` (``mask_decoder`` too) and ``.eval()`` only on the LSTMs, and
  ``evaluate.py`` runs batches of 20 test clips, one sample at a time. ``batchnorm:
  batch-per-sample`` reproduces that: in eval mode every BatchNorm of the encoders / decoders
  normalises with the statistics of the current batch, computed separately for each sample group
  (the B clips of one sample), so that running the S samples as one batch of B*S gives what S
  separate runs of B give (their protocol) instead of pooling B*S rows. A layer that would see a
  single value per channel (one clip at the 64x64 encoders' 1x1 output), where PyTorch's train
  mode raises, uses its running statistics and says so (:class:`BatchNormWarning`).
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from vpcli.errors import InputError
from vpcli.nn.encoders import (
    KITTI_POOLS,
    DCGAN64Decoder,
    DCGAN64Encoder,
    SpatialEncoder,
    StreetDecoder,
    StreetEncoder,
    VGG64Decoder,
    VGG64Encoder,
    conv_bn_lrelu,
)
from vpcli.nn.gaussian_lstm import (
    ConvLSTMStack,
    GaussianConvLSTM,
    GaussianLSTM,
    LSTMStack,
    gaussian_kl,
    reparameterize,
)
from vpcli.nn.se import SqueezeExcitation
from vpcli.nn.warp import backward_warp, warp_border
from vpcli.predictors.base import Batch, Extra, Losses, Predictor, StepRecord, TrainState
from vpcli.registry import register

Backbone = Literal["dcgan64", "vgg64", "kitti", "cityscapes"]
BatchNormMode = Literal["eval", "batch-per-sample"]
BATCHNORM_MODES = ("eval", "batch-per-sample")
WarpPadding = Literal["zeros", "border"]
WARP_PADDINGS = ("zeros", "border")
STREET = ("kitti", "cityscapes")
# noise(kind, t, shape) -> standard-normal eps for latent `kind` ("app" / "motion") at target frame t;
# shape is (B, S, *z) in predict and (B, *z) in loss.
NoiseFn = Callable[[str, int, tuple], torch.Tensor]


# --------------------------------------------------------------------------- configs

@dataclass
class _Common:
    """Fields both models share. Defaults: Stochastic Moving MNIST (README "Training", args.py)."""

    channels: int = 1                 # 1 for MNIST / KTH, 3 for BAIR / KITTI / Cityscapes
    context: int = 5                  # n_past
    backbone: Backbone = "dcgan64"    # App. C.2: DCGAN for MNIST, VGG for KTH/BAIR; street models
    nf: int = 64                      # base conv width of encoders/decoders (64 in every published model)
    rnn_size: int = 256               # args.py: LSTM width
    predictor_rnn_layers: int = 2     # args.py
    posterior_rnn_layers: int = 1     # args.py
    prior_rnn_layers: int = 1         # args.py
    mask_channels: int = 64           # App. C.2: "64-channel filters at each layer"
    beta: float = 1e-4                # App. C.3 (MNIST); KL weight of Eq. 3
    free_bits: float = 0.0            # not in the paper (0 = its plain beta KL): nats per latent channel
                                      # and position, see _kl
    warp_padding: WarpPadding = "zeros"  # x^f_t outside the frame: "zeros" (flow_utils.warp: samples whose
                                      # footprint leaves the frame are 0) or "border" (not in the paper: the
                                      # edge pixels continue; on real video any outward flow otherwise turns
                                      # the frame's rim black, which the mask can only patch with the blurry
                                      # appearance prediction)
    running_avg: bool = True          # App. C.2: average of all skips so far (args.py: always on)
    last_frame_skip: bool = True      # skips keep updating with generated frames (args.py: always on)
    batchnorm: BatchNormMode = "eval"  # BatchNorm statistics outside training: "eval" (running statistics)
                                      # or "batch-per-sample" (the authors' evaluate.py: batch statistics,
                                      # per sample group; see the module docstring)

    def _validate(self, dims: dict[str, int]) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        for name, v in {"context": self.context, "nf": self.nf, "rnn_size": self.rnn_size,
                        "predictor_rnn_layers": self.predictor_rnn_layers, "mask_channels": self.mask_channels,
                        "posterior_rnn_layers": self.posterior_rnn_layers,
                        "prior_rnn_layers": self.prior_rnn_layers, **dims}.items():
            if v < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        if self.backbone not in ("dcgan64", "vgg64", *STREET):
            raise ValueError(f"backbone must be dcgan64, vgg64, kitti or cityscapes, got {self.backbone!r}")
        if self.backbone in STREET and self.nf % 2:
            raise ValueError(f"street backbones need an even nf (widths nf * 3/2), got {self.nf}")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")
        if self.free_bits < 0:
            raise ValueError(f"free_bits must be >= 0, got {self.free_bits}")
        if self.warp_padding not in WARP_PADDINGS:
            raise ValueError(f"warp_padding must be one of {', '.join(WARP_PADDINGS)}, got {self.warp_padding!r}")
        if self.batchnorm not in BATCHNORM_MODES:
            raise ValueError(f"batchnorm must be one of {', '.join(BATCHNORM_MODES)}, got {self.batchnorm!r}")


@dataclass
class SLAMPConfig(_Common):
    g_dim_app: int = 128              # App. C.2: h_appearance = 128 (64 for KITTI/Cityscapes, README)
    g_dim_motion: int = 128           # App. C.2: h_motion = 128
    z_dim_app: int = 20               # README: 20 MNIST, 50 KTH, 64 BAIR, 32 KITTI/Cityscapes
    z_dim_motion: int = 20
    motion_skip: bool = False         # args.py --motion_skip (off in every README command): flow
                                      # decoder takes the motion encoder's skips, 64x64 models only

    def __post_init__(self):
        self._validate({"g_dim_app": self.g_dim_app, "g_dim_motion": self.g_dim_motion,
                        "z_dim_app": self.z_dim_app, "z_dim_motion": self.z_dim_motion})
        if self.backbone in STREET and self.g_dim_app != self.g_dim_motion:
            # helpers.get_model_real asserts it: both branches read the shared encoder's 2*g channels
            raise ValueError(f"street backbones need g_dim_app == g_dim_motion, got {self.g_dim_app} and "
                             f"{self.g_dim_motion}")
        if self.motion_skip and self.backbone in STREET:
            raise ValueError("motion_skip needs a 64x64 backbone (the street motion encoder has no skips)")


@dataclass
class SLAMPBaselineConfig(_Common):
    g_dim: int = 128                  # App. C.2: h_appearance = 128
    z_dim: int = 20                   # not stated for the baseline: SLAMP's appearance latent size

    def __post_init__(self):
        self._validate({"g_dim": self.g_dim, "z_dim": self.z_dim})


# --------------------------------------------------------------------------- layers

class MaskPredictor(nn.Module):
    """App. C.2: five 3x3 conv layers of 64 channels at full resolution, an SE layer after every
    two, sigmoid output (one channel). ``models/mask_predictor.py``: conv-BN-LeakyReLU blocks."""

    def __init__(self, in_channels: int, width: int = 64):
        super().__init__()
        self.c1 = nn.Sequential(conv_bn_lrelu(in_channels, width), conv_bn_lrelu(width, width), SqueezeExcitation(width))
        self.c2 = nn.Sequential(conv_bn_lrelu(width, width), conv_bn_lrelu(width, width), SqueezeExcitation(width))
        self.c3 = nn.Sequential(nn.Conv2d(width, 1, 3, 1, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c3(self.c2(self.c1(x)))  # (B, 2C, H, W) -> (B, 1, H, W)


class BatchNormWarning(UserWarning):
    """``batchnorm: batch-per-sample`` fell back to running statistics in a layer (see below)."""


class _SampleGroups:
    """Shared by a model's :class:`_GroupBatchNorm2d` layers: how many sample groups the current
    batch holds (rows are sample-minor, ``b * S + s``), and the layers that fell back."""

    def __init__(self):
        self.n = 1
        self.fell_back: set[str] = set()


class _GroupBatchNorm2d(nn.BatchNorm2d):
    """``batchnorm: batch-per-sample``: outside training, normalise with the batch's own statistics
    (biased variance, as ``F.batch_norm(training=True)``) per sample group; the running statistics
    are neither used nor updated. In training it is an ordinary BatchNorm2d. Installed by
    ``_SLAMPFamily._setup_batchnorm`` (same parameters and buffers, so state dicts are unchanged)."""

    _groups: _SampleGroups
    _where: str

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return super().forward(x)
        g = self._groups.n
        b = x.shape[0] // g
        if b * x[0, 0].numel() < 2:  # one value per channel and group: F.batch_norm raises in train mode
            if self._where not in self._groups.fell_back:
                self._groups.fell_back.add(self._where)
                warnings.warn(f"model.batchnorm=batch-per-sample: {self._where} sees one value per channel "
                              f"({b} clip(s) at {x.shape[2]}x{x.shape[3]}), where the authors' train-mode "
                              f"BatchNorm raises; it uses its running statistics (batch several clips, as their "
                              f"evaluate.py does with 20, for their protocol)", BatchNormWarning, stacklevel=2)
            return super().forward(x)
        # Rows are sample-minor (b * S + s), so (B*S, C, H, W) viewed as (B, S*C, H, W) makes each
        # (sample, channel) pair one channel: one train-mode batch_norm without running statistics
        # gives every group its own statistics. Its kernel is 4x (fp32) to 20x (bf16) faster than
        # the var_mean over a 5-D view this replaced (32 rows of 64x64x64, one thread, AVX512);
        # channels-last input is copied to contiguous and back (still 2x faster than var_mean).
        if g == 1:  # one group: PyTorch's own train-mode kernel, in any memory format, without copies
            return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        cl = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        xv = x.contiguous().view(b, g * x.shape[1], *x.shape[2:])
        w = None if self.weight is None else self.weight.repeat(g)
        bias = None if self.bias is None else self.bias.repeat(g)
        y = F.batch_norm(xv, None, None, w, bias, True, 0.0, self.eps).view(x.shape)
        return y.contiguous(memory_format=torch.channels_last) if cl else y


class Frame(NamedTuple):
    """One frame, encoded."""

    h: torch.Tensor                   # appearance features: (B, g) or (B, g, h, w) for street backbones
    skips: list[torch.Tensor]         # the pixel encoder's skip maps, fine to coarse
    m: torch.Tensor                   # what the motion encoder reads: the frame itself (64x64 models)
                                      # or the shared encoder's features (street models)


class Decoded(NamedTuple):
    app: torch.Tensor                 # x^p_t, appearance prediction (B, C, H, W)
    flow: torch.Tensor                # f_t, backward flow of frame t in pixels (B, 2, H, W)
    motion: torch.Tensor              # x^f_t = x_{t-1} warped by f_t (B, C, H, W)
    mask: torch.Tensor                # m_t (B, 1, H, W): weight of the appearance prediction
    x: torch.Tensor                   # Eq. 1, the final prediction (B, C, H, W)


def _init_weights(module: nn.Module) -> None:
    """``utils.init_weights``: conv / linear weights N(0, 0.02) (biases keep PyTorch's default),
    BatchNorm weights N(1, 0.02) and biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------- the shared model

class _SLAMPFamily(Predictor):
    """Encoders, decoders and the recurrence of both models; subclasses add their latents."""

    # Eq. 1's parts of every predicted frame (`vpcli predict --save-components`), and the heads
    # `vpcli eval --head` scores instead of the fused frame (App. D, Table 7).
    extras = {
        "flow": Extra("flow", "f_t: backward flow of the predicted frame into the previous one, (u, v) pixels"),
        "mask": Extra("mask", "m_t: the weight of the pixel decoder's frame against the warped frame (Eq. 1)"),
        "pixel": Extra("image", "x^p_t: the pixel decoder's frame (appearance head)"),
        "warped": Extra("image", "x^f_t: the previous frame warped by f_t (motion head)"),
        "average": Extra("image", "(x^p_t + x^f_t) / 2: both heads without the mask"),
    }
    heads = {"static": "pixel", "dynamic": "warped", "average": "average"}
    # predict / eval (vpcli.engine.loading.load_predictor) hold the weights in channels-last memory
    # format on the CPU: oneDNN's convolutions skip a reorder per call. Same frames to 2.5e-6;
    # predict 0.47x the time at 480x640 and 0.83x at 128x192 (slamp-real's structure, 1 clip x 4
    # samples), 0.88x for slamp-mmnist (2 clips x 10 samples), on an AVX2 CPU, fp32, one thread
    # (`python benchmarks/bench_slamp_levers.py --batch 8 --reps 3`). Training stays contiguous:
    # there it was 1.08x slower (1.17x in a second run).
    inference_channels_last = True
    # ... and fold each eval-mode BatchNorm into the convolution before it (vpcli.nn.fold; the
    # batch-per-sample BatchNorms, which use batch statistics, stay): see CHANGELOG for the figures.
    inference_fold_batchnorm = True
    # Training under bf16 autocast on the CPU (train.amp=bf16, or auto where bf16 is native) holds
    # the weights in channels-last too (vpcli.engine.trainer): oneDNN's AMX convolutions then skip
    # their reorders. Paper config, batch 32, AVX512 + AMX, one thread, against the authors' fp32
    # step: 0.397x channels-last vs 0.467x contiguous (`python benchmarks/bench_slamp_official.py
    # --ref REF --train-only --repeats 3`).
    train_channels_last_bf16 = True
    # fp32 training in channels-last too, on AVX-512 CPUs only: 0.836x the authors' step against
    # 0.924x contiguous (paper config, batch 32, one thread, heap malloc; `python
    # benchmarks/bench_slamp_official.py --ref REF --train-only --malloc heap`); on AVX2 it was
    # 1.08-1.17x slower (glibc malloc, bench_slamp_levers).
    train_channels_last_fp32_avx512 = True
    # Best checkpoint by the validation ELBO of Eq. 3 (L2 terms + beta KL), the objective itself: the
    # authors keep their last checkpoint and select none, so there is no published criterion.
    validation_metric = ("loss", "min")

    def __init__(self, config: _Common, g_app: int, g_flow: int):
        super().__init__(config)
        c, nc = config, config.channels
        self.street = c.backbone in STREET
        # Issue 15: the Cityscapes structure is fully convolutional (strided convs, ConvLSTMs and
        # spatial latents, a decoder that up-samples to its skips' sizes), so predict runs it at
        # the clip's own resolution padded to a multiple of 32; KITTI's adaptive pools and the
        # 64x64 encoders' 1x1 latents fix their size.
        self.size_multiple = 32 if c.backbone == "cityscapes" else None
        if self.street:
            # App. C: a shared encoder down-samples the frame; pixel (and motion) encoders act on it.
            pools, stride = (KITTI_POOLS, 1) if c.backbone == "kitti" else (None, 2)
            self.img_encoder = StreetEncoder(2 * g_app, nc, c.nf, pools=pools, c5_stride=stride)
            self.pixel_encoder = SpatialEncoder(g_app, 2 * g_app, c.nf)
            self.pixel_decoder = StreetDecoder(g_app, nc, c.nf)
            self.flow_decoder = StreetDecoder(g_flow, 2, c.nf, sigmoid=False)
        else:
            enc, dec = (DCGAN64Encoder, DCGAN64Decoder) if c.backbone == "dcgan64" else (VGG64Encoder, VGG64Decoder)
            self.pixel_encoder = enc(g_app, nc, c.nf)
            self.pixel_decoder = dec(g_app, nc, c.nf)
            self.flow_decoder = dec(g_flow, 2, c.nf, sigmoid=False)  # 2 channels (u, v), no activation
        self.mask_decoder = MaskPredictor(2 * nc, c.mask_channels)
        self.lstm_cls = ConvLSTMStack if self.street else LSTMStack
        self.gauss_cls = GaussianConvLSTM if self.street else GaussianLSTM

    def _setup_batchnorm(self) -> None:
        """``batchnorm: batch-per-sample``: the BatchNorms of the components the authors evaluate in
        train mode (names with ``encoder`` / ``decoder``: helpers.load_model_from_checkpoint)."""
        self._groups = _SampleGroups()
        if self.config.batchnorm != "batch-per-sample":
            return
        for name, child in self.named_children():
            if "encoder" in name or "decoder" in name:
                for sub, m in child.named_modules():
                    if type(m) is nn.BatchNorm2d:
                        m.__class__ = _GroupBatchNorm2d
                        m._groups, m._where = self._groups, f"{name}.{sub}"

    def _init_weights(self) -> None:
        # helpers.get_model_generic initialises every component this way; get_model_real leaves
        # the ConvLSTMs at PyTorch's defaults.
        for child in self.children():
            if not isinstance(child, (ConvLSTMStack, GaussianConvLSTM)):
                _init_weights(child)

    # --- pieces ----------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> Frame:
        if self.street:
            feat, skips = self.img_encoder(x)          # (B, 2g, h, w), 5 skips
            return Frame(self.pixel_encoder(feat), skips, feat)
        h, skips = self.pixel_encoder(x)               # (B, g), 4 skips
        return Frame(h, skips, x)

    def motion(self, m_prev: torch.Tensor, m_next: torch.Tensor):
        """``h^f`` (and the motion encoder's skips, 64x64 models) for a frame pair (Eq. 4)."""
        return None, None

    def _decode(self, g_app: torch.Tensor, g_flow: torch.Tensor, skips: list, flow_skips: list,
                x_in: torch.Tensor) -> Decoded:
        if self.street:
            size = x_in.shape[-2:]
            app = self.pixel_decoder(g_app, skips, size)
            flow = self.flow_decoder(g_flow, flow_skips, size)
        else:
            app = self.pixel_decoder(g_app, skips)
            flow = self.flow_decoder(g_flow, flow_skips)
        if self.config.warp_padding == "border":
            warped = warp_border(x_in, flow).clamp(0, 1)
        else:
            warped = backward_warp(x_in, flow).clamp(0, 1)   # x^f_t (flow_utils.warp, then clamp as train_step)
        mask = self.mask_decoder(torch.cat([app, warped], 1))
        return Decoded(app, flow, warped, mask, mask * app + (1 - mask) * warped)  # Eq. 1

    def _update_skips(self, avg: list | None, skip: list, t: int, context: int) -> list | None:
        """App. C.2: the decoders' skips are the running mean of the skips of every input frame so
        far (steps 1..t), generated ones included; ``last_frame_skip=False`` freezes them after
        the context as SVG does (the reference's update rule, kept as is)."""
        c = self.config
        if not (c.last_frame_skip or t < context):
            return avg
        if avg is None or t == 1 or not c.running_avg:
            return list(skip)
        return [(a * (t - 1) + s) / t for a, s in zip(avg, skip)]

    def _latent_step(self, st: dict, cur_h: torch.Tensor, last_motion: Any, post: tuple | None, t: int,
                     eps: Callable) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Update the Gaussian LSTMs and frame predictor(s); -> (g_app, g_flow, elementwise-KL sum)."""
        raise NotImplementedError

    def _check(self, rgb: torch.Tensor) -> None:
        c = self.config
        if rgb.dim() != 5 or rgb.shape[2] != c.channels:
            raise InputError(f"{self.name} expects rgb (B, T, {c.channels}, H, W), got {tuple(rgb.shape)}",
                             "set model.channels / data.channels to the clips' channel count")
        h, w = rgb.shape[-2:]
        if c.backbone in ("dcgan64", "vgg64") and (h, w) != (64, 64):
            raise InputError(f"the {c.backbone} backbone takes 64x64 frames, got {h}x{w}",
                             "set data.size to [64, 64] or use a street backbone (kitti, cityscapes)")
        if c.backbone == "cityscapes" and (h % 32 or w % 32):
            raise InputError(f"the cityscapes backbone needs H and W divisible by 32, got {h}x{w}",
                             "use 128x256 (the paper's size) or another multiple of 32")

    @staticmethod
    def _noise(noise: NoiseFn | None, lead: tuple, generator: torch.Generator | None):
        """eps(kind, t, like) -> standard normal shaped like ``like`` ((prod(lead), *z))."""
        def draw(kind: str, t: int, like: torch.Tensor) -> torch.Tensor:
            shape = (*lead, *like.shape[1:])
            if noise is None:
                return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype).view(like.shape)
            e = noise(kind, t, shape)
            if tuple(e.shape) != shape:
                raise ValueError(f"noise({kind!r}, {t}) must have shape {shape}, got {tuple(e.shape)}")
            return e.to(like).reshape(like.shape)  # (B, S, *z) -> (B*S, *z), sample-minor
        return draw

    # --- training --------------------------------------------------------------------------
    def loss(self, batch: Batch, state: TrainState, noise: NoiseFn | None = None) -> Losses:
        """Eq. 3 over every transition of the clip (the reference trains on all T-1 steps, the
        context ones included, with posterior latents): the three L2 terms summed over time plus
        ``beta`` x KL (summed over latent units and time, averaged over the batch)."""
        c, x = self.config, batch["rgb"]            # (B, T, C, H, W)
        self._check(x)
        self._groups.n = 1                          # one group: the batch (batch-per-sample outside training)
        b, n = x.shape[0], x.shape[1]
        eps = self._noise(noise, (b,), None)        # training noise: the global RNG the engine seeds
        st: dict = {}
        skips = None
        x_in, cur = x[:, 0], self.encode(x[:, 0])
        last_motion, last_mskip = self.motion(cur.m, cur.m)  # Sec. 3.4: zero motion before the first pair
        mse_app = mse_motion = mse = kl = x.new_zeros(())
        for t in range(1, n):
            skips = self._update_skips(skips, cur.skips, t, c.context)
            tgt = self.encode(x[:, t])
            h_motion, mskip = self.motion(cur.m, tgt.m)      # posterior motion input: x_{t-1} -> x_t
            g_app, g_flow, kl_t = self._latent_step(st, cur.h, last_motion, (tgt.h, h_motion), t, eps)
            out = self._decode(g_app, g_flow, skips, self._flow_skips(skips, last_mskip), x_in)
            mse_app = mse_app + F.mse_loss(out.app, x[:, t])
            mse_motion = mse_motion + F.mse_loss(out.motion, x[:, t])
            mse = mse + F.mse_loss(out.x, x[:, t])
            kl = kl + kl_t / b                               # helpers.kl_criterion: sum / batch
            last_motion, last_mskip = h_motion, mskip
            if t + 1 == n:
                break
            # App. C.1 scheduled sampling (train_step): after the context, feed the ground truth
            # with probability teacher_forcing (inverse-sigmoid decay), else the detached prediction.
            if t < c.context or state.teacher_forcing >= 1 or float(torch.rand(())) < state.teacher_forcing:
                x_in, cur = x[:, t], tgt
            else:
                x_in = out.x.detach()
                cur = self.encode(x_in)
        total = mse_app + mse_motion + mse + c.beta * kl
        steps = n - 1
        return {"loss": total, "mse": mse / steps, "mse_app": mse_app / steps, "mse_motion": mse_motion / steps,
                "kl": kl / steps}

    def _flow_skips(self, skips: list, last_mskip: list | None) -> list:
        return skips

    def _kl(self, mu_q, lv_q, mu_p, lv_p) -> torch.Tensor:
        """KL(q || p) summed over the batch and latent units (Eq. 3's term). With ``free_bits`` > 0
        (a deviation, off by default): free bits (Kingma et al. 2016) per latent channel, averaged
        over the batch and positions -- a channel whose mean KL is below the threshold costs the
        threshold and gives the posterior no gradient -- while the prior always gets the plain
        KL's gradient, so it keeps following the posterior below the threshold (the idea of KL
        balancing, Hafner et al. 2021). Above the threshold, value and gradients equal the plain KL's."""
        lam = self.config.free_bits
        if lam <= 0:
            return gaussian_kl(mu_q, lv_q, mu_p, lv_p).sum()
        to_post = gaussian_kl(mu_q, lv_q, mu_p.detach(), lv_p.detach())
        to_prior = gaussian_kl(mu_q.detach(), lv_q.detach(), mu_p, lv_p).sum()
        dims = [d for d in range(to_post.dim()) if d != 1]            # all but the channel axis
        floored = to_post.mean(dim=dims).clamp(min=lam) * (to_post.numel() / to_post.shape[1])
        return floored.sum() + (to_prior - to_prior.detach())        # value: the floored KL

    # --- inference ---------------------------------------------------------------------------
    # Rows (clips x samples) one forward pass of predict holds at most, as frame pixels: None picks
    # ROW_PIXELS // (H * W). More samples run as several sample blocks in lockstep, each step in
    # turn, with the same draws and frames (to float rounding) as one batch of B*S. At 64x64,
    # 8 / 16 / 32 / 64 / 200 rows took 24.0 / 22.0 / 21.1 / 20.7 / 22.3 s (paper model, 4 clips x 50
    # samples, heap malloc; `python benchmarks/bench_slamp_predict.py`, "blocks"), and under glibc's
    # malloc 200 rows 1.3x the time of 16 (each 64-channel map is 210 MB, mapped afresh); at
    # 480x640 one row per pass takes 0.93x the time of four (0.81x under glibc's malloc). Blocks split samples,
    # never clips, so `batchnorm: batch-per-sample` still sees each sample's B clips together; with
    # 8 or more clips it runs one sample per block, where its BatchNorm is PyTorch's own kernel.
    ROW_PIXELS = 32 * 64 * 64
    BPS_ONE_SAMPLE_ROWS = 8
    rows_per_pass: int | None = None

    def sample_blocks(self, b: int, s: int, size: tuple[int, int]) -> list[tuple[int, int]]:
        """Split ``s`` samples of ``b`` clips into ``[lo, hi)`` ranges of about equal size whose
        ``b * (hi - lo)`` rows stay within :attr:`rows_per_pass` (at least one sample per block)."""
        cap = self.rows_per_pass or max(1, self.ROW_PIXELS // (size[0] * size[1]))
        per = max(1, cap // max(b, 1))
        if self.config.batchnorm == "batch-per-sample" and b >= self.BPS_ONE_SAMPLE_ROWS:
            per = 1   # one sample group per block: BatchNorm runs as one native kernel, no layout copies
        n = -(-s // per)
        bounds = [round(i * s / n) for i in range(n + 1)]
        return list(zip(bounds[:-1], bounds[1:]))

    @torch.no_grad()
    def predict(self, context: Batch, horizon: int, samples: int = 1, generator: torch.Generator | None = None,
                *, want_extras: bool = False, noise: NoiseFn | None = None) -> Iterator[StepRecord]:
        """Yield ``horizon`` step records, frames ``(B, S, C, H, W)`` in [0, 1], one step at a time.

        Context steps draw latents from the posteriors, later steps from the learned priors
        (Sec. 3.4, Fig. 10), so each sample reads its context through its own posterior draws as
        in ``eval_step``. The encoders see each context frame once, at batch ``B``; only the cheap
        recurrent part and the generated frames run at ``B * S``, in sample blocks of at most
        :attr:`rows_per_pass` rows (:meth:`sample_blocks`). ``noise`` replaces the Gaussian draws
        (see :data:`NoiseFn`); otherwise they come from ``generator``, drawn for all ``S`` samples
        at once in the same order whatever the blocks.

        With ``want_extras`` each record also holds the step's parts (``extras`` above), each
        ``(B, S, c, H, W)``; asking for them changes nothing else (same frames, same draws).
        """
        rgb = context["rgb"]                                 # (B, T0, C, H, W)
        self._check(rgb)
        b, t0 = rgb.shape[:2]
        s = samples
        if horizon < 0 or s < 1:
            raise ValueError(f"horizon must be >= 0 and samples >= 1, got {horizon} and {samples}")
        blocks = self.sample_blocks(b, s, tuple(rgb.shape[-2:]))
        draw = self._noise(noise, (b, s), generator)
        ctx = self._encode_context(rgb)
        if len(blocks) == 1:
            yield from self._rollout(ctx, rgb, horizon, s, draw, want_extras)
            return
        cache: dict = {}

        def block_noise(lo: int, hi: int):
            def eps(kind: str, t: int, like: torch.Tensor) -> torch.Tensor:
                key = (kind, t)
                if key not in cache:          # the first block to reach (kind, t) draws every sample's
                    full = draw(kind, t, like.new_empty((b * s, *like.shape[1:])))
                    cache[key] = [full.view(b, s, *like.shape[1:]), 0]
                entry = cache[key]
                entry[1] += 1
                if entry[1] == len(blocks):   # every block has read it
                    del cache[key]
                return entry[0][:, lo:hi].reshape(like.shape)
            return eps

        runs = [self._rollout(ctx, rgb, horizon, hi - lo, block_noise(lo, hi), want_extras) for lo, hi in blocks]
        for _ in range(horizon):
            recs = [next(r) for r in runs]
            yield StepRecord(frames=torch.cat([r.frames for r in recs], 1),
                             extras={k: torch.cat([r.extras[k] for r in recs], 1) for k in recs[0].extras})

    def _encode_context(self, rgb: torch.Tensor) -> dict:
        """What every sample shares, at batch B: each context frame encoded once, the motion
        between consecutive frames, and the decoders' skips after the context."""
        self._groups.n = 1                                   # the context runs at batch B: one group
        t0 = rgb.shape[1]
        skips = None
        cur = self.encode(rgb[:, 0])
        last_motion, last_mskip = self.motion(cur.m, cur.m)  # zero motion (Sec. 3.4)
        steps = []                                           # (cur.h, last motion, target h, motion in)
        for t in range(1, t0):                               # context: posterior latents
            skips = self._update_skips(skips, cur.skips, t, t0)
            tgt = self.encode(rgb[:, t])
            h_motion, mskip = self.motion(cur.m, tgt.m)
            steps.append((cur.h, last_motion, tgt.h, h_motion))
            cur, last_motion, last_mskip = tgt, h_motion, mskip
        return {"steps": steps, "last": (cur, skips, last_motion, last_mskip)}

    def _rollout(self, ctx: dict, rgb: torch.Tensor, horizon: int, s: int, eps: Callable,
                 want_extras: bool) -> Iterator[StepRecord]:
        """One sample block: ``s`` samples of the B clips, rows sample-minor (``b * s + j``)."""
        b, t0 = rgb.shape[:2]

        def rep(v):  # (B, ...) -> (B*S, ...): each clip repeated S times in a row (sample-minor)
            return None if v is None else (v.repeat_interleave(s, 0) if torch.is_tensor(v) else [rep(u) for u in v])

        st: dict = {}
        groups = self._groups
        for t, (cur_h, last_motion, tgt_h, h_motion) in enumerate(ctx["steps"], 1):
            self._latent_step(st, rep(cur_h), rep(last_motion), (rep(tgt_h), rep(h_motion)), t, eps)
        # Hand over from B to B*S: from here on every sample has its own frames.
        cur, skips, last_motion, last_mskip = ctx["last"]
        cur, skips, last_motion, last_mskip = Frame(*rep(list(cur))), rep(skips), rep(last_motion), rep(last_mskip)
        x_in = rep(rgb[:, -1])
        for k in range(horizon):                             # future: prior latents
            t = t0 + k
            groups.n = s                                     # B*S rows: S sample groups (batch-per-sample);
            skips = self._update_skips(skips, cur.skips, t, t0)  # set each step: other blocks run between
            g_app, g_flow, _ = self._latent_step(st, cur.h, last_motion, None, t, eps)
            out = self._decode(g_app, g_flow, skips, self._flow_skips(skips, last_mskip), x_in)
            x_hat = out.x
            extras = {}
            if want_extras:                                  # (B*S, ...) -> (B, S, ...)
                def bs(v: torch.Tensor) -> torch.Tensor:
                    return v.view(b, s, *v.shape[1:])
                extras = {"flow": bs(out.flow), "mask": bs(out.mask), "pixel": bs(out.app),
                          "warped": bs(out.motion), "average": bs((out.app + out.motion) / 2)}
            yield StepRecord(frames=x_hat.clamp(0, 1).view(b, s, *x_hat.shape[1:]), extras=extras)
            if k + 1 < horizon:                              # the prediction is the next input
                groups.n = s                                 # (other blocks ran while this one yielded)
                nxt = self.encode(x_hat)
                last_motion, last_mskip = self.motion(cur.m, nxt.m)
                cur, x_in = nxt, x_hat


# --------------------------------------------------------------------------- SLAMP

@register("predictor", "slamp", config_cls=SLAMPConfig,
          description="SLAMP (Akan et al., ICCV 2021): stochastic appearance + motion latents, flow, mask")
class SLAMP(_SLAMPFamily):
    name = "slamp"

    def __init__(self, config: SLAMPConfig):
        super().__init__(config, config.g_dim_app, config.g_dim_motion)
        c = config
        if self.street:   # motion from the pair of shared features, 2 x (2 g) channels
            self.motion_encoder = SpatialEncoder(c.g_dim_motion, 4 * c.g_dim_app, c.nf)
        else:             # motion from the pair of frames stacked on channels (Eq. 4)
            enc = DCGAN64Encoder if c.backbone == "dcgan64" else VGG64Encoder
            self.motion_encoder = enc(c.g_dim_motion, 2 * c.channels, c.nf)
        lstm, gauss, r = self.lstm_cls, self.gauss_cls, c.rnn_size
        self.static_frame_predictor = lstm(c.g_dim_app + c.z_dim_app, c.g_dim_app, r, c.predictor_rnn_layers)
        self.dynamic_frame_predictor = lstm(c.g_dim_motion + c.z_dim_motion, c.g_dim_motion, r, c.predictor_rnn_layers)
        self.posterior_app = gauss(c.g_dim_app, c.z_dim_app, r, c.posterior_rnn_layers)
        self.prior_app = gauss(c.g_dim_app, c.z_dim_app, r, c.prior_rnn_layers)
        self.posterior_motion = gauss(c.g_dim_motion, c.z_dim_motion, r, c.posterior_rnn_layers)
        self.prior_motion = gauss(c.g_dim_motion, c.z_dim_motion, r, c.prior_rnn_layers)
        self._init_weights()
        self._setup_batchnorm()

    def motion(self, m_prev, m_next):
        out = self.motion_encoder(torch.cat([m_prev, m_next], 1))  # (B, 2C, H, W) or (B, 4g, h, w)
        return (out, None) if self.street else out                # 64x64 encoders also return skips

    def _flow_skips(self, skips, last_mskip):
        return last_mskip if self.config.motion_skip else skips

    def _latent_step(self, st, cur_h, last_motion, post, t, eps):
        # Priors read the previous frame / the previous motion (Eq. 5); posteriors the target
        # frame / the motion into it (Eq. 4).
        mu_pa, lv_pa, st["prior_app"] = self.prior_app(cur_h, st.get("prior_app"))
        mu_pm, lv_pm, st["prior_motion"] = self.prior_motion(last_motion, st.get("prior_motion"))
        if post is None:
            z_app = reparameterize(mu_pa, lv_pa, eps("app", t, mu_pa))
            z_mot = reparameterize(mu_pm, lv_pm, eps("motion", t, mu_pm))
            kl = None
        else:
            h_target, h_motion = post
            mu_qa, lv_qa, st["posterior_app"] = self.posterior_app(h_target, st.get("posterior_app"))
            mu_qm, lv_qm, st["posterior_motion"] = self.posterior_motion(h_motion, st.get("posterior_motion"))
            z_app = reparameterize(mu_qa, lv_qa, eps("app", t, mu_qa))
            z_mot = reparameterize(mu_qm, lv_qm, eps("motion", t, mu_qm))
            kl = self._kl(mu_qa, lv_qa, mu_pa, lv_pa) + self._kl(mu_qm, lv_qm, mu_pm, lv_pm)
        # Eq. 6: g^f_t = LSTM(h^f_{t-1}, z^f_t); the static predictor reads h_{t-1} and z^p_t.
        g_app, st["static"] = self.static_frame_predictor(torch.cat([cur_h, z_app], 1), st.get("static"))
        g_flow, st["dynamic"] = self.dynamic_frame_predictor(torch.cat([last_motion, z_mot], 1), st.get("dynamic"))
        return g_app, g_flow, kl


# --------------------------------------------------------------------------- SLAMP-Baseline

@register("predictor", "slamp-baseline", config_cls=SLAMPBaselineConfig,
          description="SLAMP-Baseline: SVG-LP with pixel, flow and mask decoders on one latent")
class SLAMPBaseline(_SLAMPFamily):
    """Sec. 3.2 / App. A Fig. 11-12: one posterior ``q(z_t | x_{1:t})``, one learned prior
    ``p(z_t | x_{1:t-1})``, one frame predictor; its output feeds the pixel *and* the flow
    decoder. The authors did not release it; component names follow SVG's code (``frame_predictor``,
    ``posterior``, ``prior``) and SLAMP's for the decoders."""

    name = "slamp-baseline"

    def __init__(self, config: SLAMPBaselineConfig):
        super().__init__(config, config.g_dim, config.g_dim)
        c, r = config, config.rnn_size
        self.frame_predictor = self.lstm_cls(c.g_dim + c.z_dim, c.g_dim, r, c.predictor_rnn_layers)
        self.posterior = self.gauss_cls(c.g_dim, c.z_dim, r, c.posterior_rnn_layers)
        self.prior = self.gauss_cls(c.g_dim, c.z_dim, r, c.prior_rnn_layers)
        self._init_weights()
        self._setup_batchnorm()

    def _latent_step(self, st, cur_h, last_motion, post, t, eps):
        mu_p, lv_p, st["prior"] = self.prior(cur_h, st.get("prior"))
        if post is None:
            z, kl = reparameterize(mu_p, lv_p, eps("app", t, mu_p)), None
        else:
            mu_q, lv_q, st["posterior"] = self.posterior(post[0], st.get("posterior"))
            z = reparameterize(mu_q, lv_q, eps("app", t, mu_q))
            kl = self._kl(mu_q, lv_q, mu_p, lv_p)
        g, st["frame_predictor"] = self.frame_predictor(torch.cat([cur_h, z], 1), st.get("frame_predictor"))
        return g, g, kl                                  # one g_t feeds pixel and flow decoders

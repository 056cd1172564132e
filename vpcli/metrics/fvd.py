"""Fréchet Video Distance (Unterthiner et al. 2018) and HVP's shot-wise FVD.

FVD fits a Gaussian to the I3D embeddings of each set of videos and reports the Fréchet
(2-Wasserstein) distance between the two Gaussians::

    FVD = ||mu_1 - mu_2||^2 + tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2))

As in the reference implementation (google-research ``frechet_video_distance``):

- embedding: the 400 Kinetics logits of Inception-I3D averaged over time (TF-Hub
  ``deepmind/i3d-kinetics-400/1``, tensor ``RGB/inception_i3d/Mean:0``), see :mod:`.i3d`;
- preprocessing: every frame resized to 224x224 with bilinear interpolation, then scaled to
  ``[-1, 1]``. The reference calls TF1's ``tf.image.resize_bilinear`` (``align_corners=False``,
  no half-pixel centres: output pixel ``i`` samples input ``i * in / out``); ``resize="tf1"``
  (default) reproduces that sampling exactly, ``resize="torch"`` uses
  ``F.interpolate(..., align_corners=False)`` (half-pixel centres) as some PyTorch ports do.
  Grey videos are repeated to 3 channels;
- statistics: mean and unbiased covariance (``N - 1``) of the embeddings, in float64.

The matrix square-root term is computed from a symmetric eigen-decomposition:
``tr((S_1 S_2)^(1/2)) = sum_i sqrt(lambda_i)`` with ``lambda_i`` the eigenvalues of the symmetric
PSD matrix ``S_1^(1/2) S_2 S_1^(1/2)`` (same spectrum as ``S_1 S_2``); negative round-off
eigenvalues are clipped to 0. This is exact for singular covariances (fewer videos than
dimensions), where ``scipy.linalg.sqrtm`` becomes ill-conditioned; ``method="sqrtm"`` uses scipy
as the classic FID/FVD code does.

Values are comparable with the literature only with the standard I3D weights (manifest entry
``i3d-kinetics400``: StyleGAN-V's TorchScript port of the TF-Hub module, read without running
it, see :mod:`vpcli.weights.convert_torchscript`; ``vpcli weights download i3d-kinetics400``) and
the same protocol (16-frame clips, 256 or more videos per set — FVD is biased for small sets).

Protocol choices that change the number (published FVDs differ in all of them; vpcli records
its choice as ``fvd_protocol`` in ``results.json``, see :data:`REFERENCE_PROTOCOL`):

- **resize**: the reference resizes every frame to 224x224 with TF1 bilinear sampling, ignoring
  the aspect ratio, no crop (``resize="tf1"``, default). The StyleGAN-V-derived PyTorch code
  (``fvd/styleganv/fvd.py`` of common_metrics_on_video_quality) scales the shorter side to 224
  with ``F.interpolate(bilinear, align_corners=False)`` and centre-crops
  (``resize="center-crop"``): on a non-square video it drops the sides, on any video it samples
  differently. ``resize="torch"``: full frame, half-pixel bilinear;
- **embedding**: the 400 pre-softmax logits (the reference, and ``return_features=True`` of the
  TorchScript port), not the 1024-d pooled features (:meth:`InceptionI3d.pooled`);
- **frames**: conditioning (context) frames included or not. vpcli's evaluator feeds context +
  predicted frames against the real clip of the same length when it predicts itself (as the
  reference evaluates whole clips), and exactly the frames of the prediction files in folder mode;
  excluding the context lowers FVD for a model that copies it well and raises it otherwise;
- **sample**: one random sample per sequence (vpcli: the first, an unbiased draw) vs the
  best-of-N sample by another metric (biased low, not an FVD of the model's distribution);
- **number of videos**: FVD's bias grows as the sets shrink; the reference uses 256 or more
  (``SmallSampleWarning`` below), StyleGAN-V 2048 real clips. FVD needs at least
:data:`FVD_MIN_VIDEOS` = 2 videos per set (a covariance); below
:data:`FVD_RECOMMENDED_VIDEOS` = 256 a :class:`SmallSampleWarning` is issued.

Shot-wise FVD (HVP, Lee et al. 2021, Eq. 7) evaluates long horizons without long ground truth::

    shot-wise FVD(t) = FVD({X_hat^m[t : t + w - 1]}_{m=1..M}, {X^l_w}_{l=1..L})

the ``M`` predicted shots (windows of ``w`` frames) starting at step ``t`` against ``L``
ground-truth shots: all overlapping ``w``-frame windows of the real videos ("the total number of
overlapping shots in the training video"). The paper gives no window length; :func:`shotwise_fvd`
uses ``window=16`` (I3D's standard clip length) and stride 1 by default.
"""
from __future__ import annotations

import math
import os
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from vpcli.errors import DataFormatError
from vpcli.metrics._checks import (
    check_batch_size,
    check_video,
    chunks,
    load_tensor_file,
    resolve_weights_file,
)
from vpcli.metrics.i3d import (
    INPUT_SIZE,
    MIN_FRAMES,
    InceptionI3d,
    convert_pytorch_i3d_state_dict,
)

FVD_MIN_VIDEOS = 2
FVD_RECOMMENDED_VIDEOS = 256
DEFAULT_WEIGHTS = "i3d-kinetics400"
RESIZE_MODES = ("tf1", "torch", "center-crop")

# What the default FVD computes (recorded as ``fvd_protocol`` in results.json by `vpcli eval`).
REFERENCE_PROTOCOL = {
    "name": "reference",
    "resize": "tf1-bilinear-224",  # every frame to 224x224, aspect ratio not kept, no crop
    "embedding": "i3d-logits-400",  # pre-softmax Kinetics-400 logits, averaged over time
    "frames": "all frames of each clip",  # no temporal crop or subsampling
    "source": "google-research frechet_video_distance (TF-Hub deepmind/i3d-kinetics-400/1)",
}
_RESIZE_TEXT = {"tf1": "tf1-bilinear-224", "torch": "torch-bilinear-224 (half-pixel, no crop)",
                "center-crop": "short-side-224 + center-crop (torch bilinear; StyleGAN-V-derived ports)"}


class SmallSampleWarning(UserWarning):
    """FVD computed from fewer videos than the reference protocol uses (biased upwards)."""


def how_to_get_weights() -> str:
    return f"FVD needs the Kinetics-400 I3D: vpcli weights download {DEFAULT_WEIGHTS}"


# --- preprocessing ---------------------------------------------------------------------------

def _tf1_resize_matrix(in_size: int, out_size: int, device: torch.device) -> torch.Tensor:
    """``out x in`` bilinear interpolation matrix of TF1 ``resize_bilinear`` (align_corners=False,
    half_pixel_centers=False): output ``i`` samples input ``i * in / out``, clamped at the edge."""
    src = torch.arange(out_size, dtype=torch.float64) * (in_size / out_size)
    lo = src.floor().long().clamp(max=in_size - 1)
    hi = (lo + 1).clamp(max=in_size - 1)
    frac = src - lo.double()
    m = torch.zeros(out_size, in_size, dtype=torch.float64)
    rows = torch.arange(out_size)
    m[rows, lo] += 1 - frac
    m[rows, hi] += frac
    return m.float().to(device)


def resize_frames(x: torch.Tensor, size: int = INPUT_SIZE, mode: str = "tf1") -> torch.Tensor:
    """Bilinear resize of ``N,C,H,W`` frames to ``size x size`` (see the module docstring for ``mode``)."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    if mode == "torch":
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    if mode == "center-crop":  # shorter side to `size` (the longer one rounded up), then the centre
        scale = size / min(h, w)
        target = (size, math.ceil(w * scale)) if h < w else (math.ceil(h * scale), size)
        x = F.interpolate(x, size=target, mode="bilinear", align_corners=False)
        top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
        return x[..., top:top + size, left:left + size]
    rh = _tf1_resize_matrix(h, size, x.device)  # size,H
    rw = _tf1_resize_matrix(w, size, x.device)  # size,W
    return torch.einsum("ih,nchw,jw->ncij", rh, x, rw)


def preprocess_i3d(videos: torch.Tensor, *, resize: str = "tf1") -> torch.Tensor:
    """``B,T,C,H,W`` in ``[0, 1]`` -> I3D input ``B,3,T,224,224`` in ``[-1, 1]``."""
    b, t, c, h, w = videos.shape
    if c not in (1, 3):
        raise DataFormatError(f"FVD needs RGB (or grey) videos; got {c} channels", "pass B,T,3,H,W videos")
    frames = resize_frames(videos.reshape(b * t, c, h, w).float(), INPUT_SIZE, resize)  # (B*T),C,224,224
    frames = frames.expand(-1, 3, -1, -1) * 2 - 1
    return frames.reshape(b, t, 3, INPUT_SIZE, INPUT_SIZE).permute(0, 2, 1, 3, 4)  # B,3,T,224,224


# --- statistics ------------------------------------------------------------------------------

def gaussian_stats(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and unbiased covariance ``(D, D)`` (float64) of ``N x D`` features, ``N >= 2``."""
    f = features.detach().cpu().double().numpy() if isinstance(features, torch.Tensor) else np.asarray(features, np.float64)
    if f.ndim != 2:
        raise DataFormatError(f"features must be N x D; got shape {f.shape}", "stack one embedding per video")
    if f.shape[0] < FVD_MIN_VIDEOS:
        raise DataFormatError(f"FVD needs at least {FVD_MIN_VIDEOS} videos per set to estimate a covariance; "
                              f"got {f.shape[0]}",
                              f"pass at least {FVD_MIN_VIDEOS} videos (the reference protocol uses "
                              f"{FVD_RECOMMENDED_VIDEOS} or more)")
    if not np.isfinite(f).all():
        raise DataFormatError("features hold NaN or Inf", "check the videos and the I3D weights")
    return f.mean(axis=0), np.cov(f, rowvar=False, ddof=1).reshape(f.shape[1], f.shape[1])


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def trace_sqrt_product(s1: np.ndarray, s2: np.ndarray, method: str = "eigh") -> float:
    """``tr((S_1 S_2)^(1/2))`` for symmetric PSD ``S_1, S_2``."""
    if method == "eigh":
        r1 = _psd_sqrt(s1)
        m = r1 @ s2 @ r1
        lam = np.linalg.eigvalsh((m + m.T) / 2)
        return float(np.sqrt(np.clip(lam, 0, None)).sum())
    if method == "sqrtm":
        import scipy.linalg

        root = scipy.linalg.sqrtm(s1 @ s2)
        return float(np.real(np.trace(root)))
    raise ValueError(f"method must be 'eigh' or 'sqrtm', got {method!r}")


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, *,
                     method: str = "eigh") -> float:
    """Fréchet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)`` (float64)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise DataFormatError(f"Gaussian statistics do not match: mu {mu1.shape} vs {mu2.shape}, "
                              f"sigma {sigma1.shape} vs {sigma2.shape}", "compute both with the same embedding")
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2, method)
    return float(max(value, 0.0))  # clip round-off below zero (identical sets)


def fvd_from_features(pred_features: np.ndarray | torch.Tensor, target_features: np.ndarray | torch.Tensor, *,
                      method: str = "eigh") -> float:
    """FVD between two sets of embeddings ``N x D`` and ``M x D``."""
    n1, n2 = len(pred_features), len(target_features)
    if min(n1, n2) < FVD_MIN_VIDEOS:
        raise DataFormatError(f"FVD needs at least {FVD_MIN_VIDEOS} videos per set; got pred={n1}, target={n2}",
                              f"pass at least {FVD_MIN_VIDEOS} videos per set (the reference protocol uses "
                              f"{FVD_RECOMMENDED_VIDEOS} or more)")
    if min(n1, n2) < FVD_RECOMMENDED_VIDEOS:
        warnings.warn(f"FVD from {min(n1, n2)} videos (pred={n1}, target={n2}); below "
                      f"{FVD_RECOMMENDED_VIDEOS} the estimate is biased upwards and not comparable with published values",
                      SmallSampleWarning, stacklevel=2)
    return frechet_distance(*gaussian_stats(pred_features), *gaussian_stats(target_features), method=method)


# --- the metric ------------------------------------------------------------------------------

def load_i3d_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Our I3D state dict from a weights file: the TorchScript archive (``i3d_torchscript.pt``, read
    without running it), a pytorch-i3d ``.pt`` state dict, or a safetensors conversion."""
    from vpcli.weights.convert_torchscript import is_torchscript_archive, load_i3d_torchscript

    if is_torchscript_archive(path):
        return load_i3d_torchscript(path)
    return convert_pytorch_i3d_state_dict(load_tensor_file(path))


class FVD:
    """FVD between two sets of videos: ``FVD()(pred, target) -> float`` (lower is better).

    ``pred`` and ``target`` are ``N,T,C,H,W`` in ``[0, 1]`` with ``T >= 9`` (16 in the reference
    protocol); the two sets may differ in size and length. ``model`` overrides the weights
    (e.g. a seeded random ``InceptionI3d()`` in tests); ``device`` defaults to the model's.
    Clips go through I3D ``batch_size`` at a time.
    """

    name = "fvd"
    kind = "video_set"
    higher_is_better = False

    def __init__(self, weights: str | os.PathLike = DEFAULT_WEIGHTS, *, model: InceptionI3d | None = None,
                 device: torch.device | str | None = None, batch_size: int | None = 8, resize: str = "tf1",
                 method: str = "eigh"):
        if resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
        if method not in ("eigh", "sqrtm"):
            raise ValueError(f"method must be 'eigh' or 'sqrtm', got {method!r}")
        self.batch_size = check_batch_size(batch_size)
        self.resize, self.method = resize, method
        if model is None:
            model = InceptionI3d()
            path = resolve_weights_file(weights, "FVD (I3D)", how_to_get_weights())
            model.load_state_dict(load_i3d_weights(path), strict=True)
        self.model = model.eval().requires_grad_(False)
        if device is not None:
            self.model.to(device)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def protocol(self) -> dict[str, str]:
        """The preprocessing and embedding this instance uses (``name`` is ``reference`` only for
        the reference resize); the caller adds which frames and samples it feeds."""
        out = dict(REFERENCE_PROTOCOL)
        if self.resize != "tf1":
            out.update(name="custom", resize=_RESIZE_TEXT[self.resize])
        return out

    @torch.inference_mode()
    def features(self, videos: torch.Tensor) -> torch.Tensor:
        """I3D embeddings ``(N, 400)`` float64 (on CPU) of ``N,T,C,H,W`` videos in ``[0, 1]``."""
        videos = check_video(videos, "videos")
        if videos.shape[1] < MIN_FRAMES:
            raise DataFormatError(f"FVD's I3D needs clips of at least {MIN_FRAMES} frames; got {videos.shape[1]}",
                                  "use 16-frame clips (the reference protocol)")
        out = []
        for sl in chunks(videos.shape[0], self.batch_size):
            x = preprocess_i3d(videos[sl].to(self.device), resize=self.resize)
            out.append(self.model(x).double().cpu())
        return torch.cat(out, dim=0)

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> float:
        for name, v in (("pred", pred), ("target", target)):
            if isinstance(v, torch.Tensor) and v.ndim == 5 and v.shape[0] < FVD_MIN_VIDEOS:
                raise DataFormatError(f"FVD needs at least {FVD_MIN_VIDEOS} videos per set; {name} has {v.shape[0]}",
                                      f"pass at least {FVD_MIN_VIDEOS} videos per set (the reference protocol uses "
                                      f"{FVD_RECOMMENDED_VIDEOS} or more)")
        pred_features = self.features(pred)
        target_features = pred_features if target is pred else self.features(target)
        return fvd_from_features(pred_features, target_features, method=self.method)

    def shotwise(self, pred: torch.Tensor, target: torch.Tensor, *, window: int = 16, stride: int = 1,
                 target_stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Shot-wise FVD (HVP Eq. 7); see :func:`shotwise_fvd`."""
        return shotwise_fvd(pred, target, window=window, stride=stride, target_stride=target_stride, metric=self)


def _windows(videos: torch.Tensor, window: int, stride: int) -> list[int]:
    return list(range(0, videos.shape[1] - window + 1, stride))


def shotwise_fvd(pred: torch.Tensor, target: torch.Tensor, *, window: int = 16, stride: int = 1,
                 target_stride: int = 1, metric: FVD | None = None) -> tuple[np.ndarray, np.ndarray]:
    """HVP's shot-wise FVD of long predictions.

    ``pred``: ``M,T,C,H,W`` predicted videos (M samples / test videos); ``target``: ``L0,T',C,H,W``
    real videos, cut into every ``window``-frame shot (step ``target_stride``) to form the
    reference set. Returns ``(starts, values)``: the 0-based start step ``t`` of each predicted
    window (every ``stride`` steps) and ``FVD(pred[:, t:t+window], real shots)``.
    """
    metric = metric if metric is not None else FVD()
    pred = check_video(pred, "pred")
    target = check_video(target, "target")
    if window < MIN_FRAMES:
        raise ValueError(f"window must be >= {MIN_FRAMES} frames for I3D, got {window}")
    if stride < 1 or target_stride < 1:
        raise ValueError(f"stride and target_stride must be >= 1, got {stride}, {target_stride}")
    for name, v in (("pred", pred), ("target", target)):
        if v.shape[1] < window:
            raise DataFormatError(f"shot-wise FVD: {name} has {v.shape[1]} frames, fewer than the {window}-frame window",
                                  "use a shorter window or longer videos")
    if pred.shape[0] < FVD_MIN_VIDEOS:
        raise DataFormatError(f"shot-wise FVD needs at least {FVD_MIN_VIDEOS} predicted videos per step; "
                              f"got {pred.shape[0]}", "sample more predictions per step")
    # Real shots: every window of every real video, L0 * n_windows clips: (L, window, C, H, W).
    shots = torch.cat([target[:, s:s + window] for s in _windows(target, window, target_stride)], dim=0)
    real_stats = gaussian_stats(metric.features(shots))
    starts = _windows(pred, window, stride)
    m = pred.shape[0]
    # Several windows per I3D batch when there are few samples per window: (G*M),window,C,H,W.
    group = max(1, (metric.batch_size or m) // m)
    values = []
    for g in range(0, len(starts), group):
        clips = torch.cat([pred[:, s:s + window] for s in starts[g:g + group]], dim=0)
        feats = metric.features(clips)
        for i in range(len(starts[g:g + group])):
            values.append(frechet_distance(*gaussian_stats(feats[i * m:(i + 1) * m]), *real_stats,
                                           method=metric.method))
    if min(pred.shape[0], shots.shape[0]) < FVD_RECOMMENDED_VIDEOS:
        warnings.warn(f"shot-wise FVD from {pred.shape[0]} predicted and {shots.shape[0]} real shots per step; "
                      f"below {FVD_RECOMMENDED_VIDEOS} the estimate is biased upwards", SmallSampleWarning, stacklevel=2)
    return np.asarray(starts), np.asarray(values)


def fvd(pred: torch.Tensor, target: torch.Tensor, *, model: InceptionI3d | None = None,
        weights: str | os.PathLike = DEFAULT_WEIGHTS, **kwargs) -> float:
    """FVD between two sets of ``N,T,C,H,W`` videos; see :class:`FVD`."""
    return FVD(weights, model=model, **kwargs)(pred, target)

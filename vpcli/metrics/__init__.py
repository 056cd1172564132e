"""Evaluation metrics, one file each; learned backbones (AlexNet/VGG16, I3D) in plain torch.

Every metric is a class with ``name``, ``kind``, ``higher_is_better`` and ``__call__``:

- ``kind == "frame"``: ``m(pred, target) -> Tensor (B, T)`` for ``B,T,C,H,W`` float videos in
  ``[0, 1]`` — psnr, ssim, ms-ssim, lpips, csim, mse, mae, bce;
- ``kind == "label"``: ``m(pred_labels, target_labels) -> Tensor (B, T)`` for int ``B,T,H,W``
  label maps (255 = ignore) — miou;
- ``kind == "flow"``: ``m(pred_flow, target_flow) -> Tensor (B, T)`` for float ``B,T,2,H,W``
  forward flows in pixels — epe;
- ``kind == "video_set"``: ``m(pred_videos, target_videos) -> float`` over two sets of videos — fvd.

Per-frame values let the evaluator draw per-step curves and pick the best of N samples; average
over frames and clips afterwards. Plain functions do the same without the class; import them from
their modules (``from vpcli.metrics.ssim import ssim, ms_ssim``, ``vpcli.metrics.pixel.mse``,
``vpcli.metrics.segmentation.miou``, ``vpcli.metrics.fvd.shotwise_fvd``, ...).

``METRICS`` maps each name to its class; ``get_metric(name)`` looks one up (case-insensitive,
``_`` or ``-``) and raises :class:`vpcli.errors.UsageError` listing the valid names.
"""
from __future__ import annotations

import difflib

from vpcli.errors import UsageError

# Only classes and constants here: the functions share their modules' names (psnr, ssim, lpips,
# csim, fvd), and re-exporting them would shadow the modules (``import vpcli.metrics.lpips as m``
# would then give the function). Import functions from their modules: ``from vpcli.metrics.psnr
# import psnr``.
from vpcli.metrics.csim import CSIM
from vpcli.metrics.fvd import (
    FVD,
    FVD_MIN_VIDEOS,
    FVD_RECOMMENDED_VIDEOS,
    SmallSampleWarning,
)
from vpcli.metrics.flow import EPE
from vpcli.metrics.lpips import LPIPS
from vpcli.metrics.pixel import BCE, BCE_EPS, MAE, MSE
from vpcli.metrics.psnr import PSNR, PSNR_CAP_DB
from vpcli.metrics.segmentation import HVP_MOVING_CLASSES, MIoU
from vpcli.metrics.ssim import MS_SSIM3_WEIGHTS, MS_SSIM_WEIGHTS, MSSSIM, MSSSIM3, SSIM

METRICS: dict[str, type] = {cls.name: cls for cls in (PSNR, SSIM, MSSSIM, MSSSIM3, LPIPS, CSIM, MSE, MAE, BCE, MIoU, EPE, FVD)}
_ALIASES = {"msssim": "ms-ssim", "iou": "miou", "vgg-csim": "csim", "cosine": "csim"}

_DESCRIPTIONS = {
    "psnr": "peak signal-to-noise ratio per frame, dB (identical frames capped at 100 dB)",
    "ssim": "structural similarity per frame (11x11 Gaussian, sigma 1.5)",
    "ms-ssim": "multi-scale SSIM per frame (5 scales; frames >= 161 px)",
    "ms-ssim-3": "multi-scale SSIM over 3 scales (weights renormalised; frames >= 41 px; not the 5-scale value)",
    "lpips": "LPIPS v0.1 perceptual distance per frame (AlexNet or VGG16)",
    "csim": "VGG16 cosine similarity per frame",
    "mse": "mean squared error per frame",
    "mae": "mean absolute error per frame",
    "bce": "binary cross-entropy per pixel per frame (Moving MNIST)",
    "miou": "mean intersection-over-union of label maps per frame",
    "epe": "mean end-point error of predicted forward flow per frame, pixels",
    "fvd": "Fréchet Video Distance between two sets of videos (I3D)",
}


def _normalise(name: str) -> str:
    key = str(name).strip().lower().replace("_", "-")
    return _ALIASES.get(key, key)


def get_metric(name: str) -> type:
    """The metric class registered under ``name``; unknown names raise ``UsageError`` listing valid ones."""
    key = _normalise(name)
    if key in METRICS:
        return METRICS[key]
    valid = sorted(METRICS)
    close = difflib.get_close_matches(key, valid, n=1)
    hint = (f"did you mean {close[0]!r}? " if close else "") + f"valid metrics: {', '.join(valid)}"
    raise UsageError(f"unknown metric {name!r}", hint)


def _register_all() -> None:
    """Also list the metrics in the project-wide registry (``vpcli.registry``, kind "metric")."""
    try:
        from vpcli.registry import register
    except ImportError:  # pragma: no cover - registry is part of vpcli
        return
    for key, cls in METRICS.items():
        register("metric", key, description=_DESCRIPTIONS.get(key, ""))(cls)


_register_all()

__all__ = [
    "BCE", "BCE_EPS", "CSIM", "EPE", "FVD", "FVD_MIN_VIDEOS", "FVD_RECOMMENDED_VIDEOS", "HVP_MOVING_CLASSES", "LPIPS",
    "MAE", "METRICS", "MSE", "MSSSIM", "MSSSIM3", "MS_SSIM3_WEIGHTS", "MS_SSIM_WEIGHTS", "PSNR", "PSNR_CAP_DB", "SSIM", "MIoU",
    "SmallSampleWarning", "get_metric",
]

"""Per-pixel errors per frame: MSE, MAE and binary cross-entropy.

All three take two ``B,T,C,H,W`` videos in ``[0, 1]`` and return ``(B, T)``: the mean over the
frame's ``C*H*W`` values (``reduction="sum"`` gives the sum instead).

BCE is LMVP's Moving MNIST metric (Wang et al. 2018, Table 1: "binary cross-entropy ... 0.061
per pixel"): the cross-entropy between the predicted intensity ``p`` and the true intensity
``y``, both in ``[0, 1]``, ``-(y log p + (1 - y) log(1 - p))``. The prediction is clamped to
``[eps, 1 - eps]`` with ``eps = BCE_EPS = 1e-7`` so that a confident wrong pixel costs at most
``-log(1e-7) ~ 16.1`` nats instead of ``inf``. (``torch.nn.functional.binary_cross_entropy``
clamps the log at -100 instead; results differ only for predictions within 1e-7 of 0 or 1.)
Note that for non-binary targets the BCE of a perfect prediction is the entropy of ``y``, not 0.
Older Moving MNIST papers (Srivastava et al. 2015) report the per-frame *sum* over the 64x64
pixels; use ``reduction="sum"`` for that convention.
"""
from __future__ import annotations

import torch

from vpcli.metrics._checks import check_pair

BCE_EPS = 1e-7
_REDUCTIONS = ("mean", "sum")


def _reduce(per_value: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    flat = per_value.flatten(2)  # B,T,(C*H*W)
    out = flat.mean(dim=2) if reduction == "mean" else flat.sum(dim=2)
    return out.float()


def mse(pred: torch.Tensor, target: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """Per-frame mean squared error, ``(B, T)``."""
    pred, target = check_pair(pred, target)
    return _reduce((pred.double() - target.double()).square(), reduction)


def mae(pred: torch.Tensor, target: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """Per-frame mean absolute error, ``(B, T)``."""
    pred, target = check_pair(pred, target)
    return _reduce((pred.double() - target.double()).abs(), reduction)


def bce(pred: torch.Tensor, target: torch.Tensor, *, eps: float = BCE_EPS, reduction: str = "mean") -> torch.Tensor:
    """Per-frame binary cross-entropy (nats) of predicted vs true intensities, ``(B, T)``."""
    if not 0 < eps < 0.5:
        raise ValueError(f"eps must be in (0, 0.5), got {eps!r}")
    pred, target = check_pair(pred, target)
    p = pred.double().clamp(eps, 1 - eps)
    y = target.double().clamp(0, 1)
    return _reduce(-(y * torch.log(p) + (1 - y) * torch.log1p(-p)), reduction)


class _PixelMetric:
    kind = "frame"
    higher_is_better = False
    _fn = staticmethod(mse)

    def __init__(self, *, reduction: str = "mean"):
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return type(self)._fn(pred, target, reduction=self.reduction)


class MSE(_PixelMetric):
    """Registry wrapper for :func:`mse`."""

    name = "mse"
    _fn = staticmethod(mse)


class MAE(_PixelMetric):
    """Registry wrapper for :func:`mae`."""

    name = "mae"
    _fn = staticmethod(mae)


class BCE(_PixelMetric):
    """Registry wrapper for :func:`bce`."""

    name = "bce"
    _fn = staticmethod(bce)

    def __init__(self, *, eps: float = BCE_EPS, reduction: str = "mean"):
        super().__init__(reduction=reduction)
        if not 0 < eps < 0.5:
            raise ValueError(f"eps must be in (0, 0.5), got {eps!r}")
        self.eps = eps

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return bce(pred, target, eps=self.eps, reduction=self.reduction)

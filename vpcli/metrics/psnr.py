"""Peak signal-to-noise ratio per frame.

``PSNR = 10 * log10(1 / MSE)`` with the MSE taken over one frame's ``C*H*W`` values in ``[0, 1]``
(data range 1). Papers average the per-frame values over time and test clips; this module returns
the per-frame values ``(B, T)`` so that the evaluator can draw per-step curves and pick the best of
N samples.

Identical frames have MSE 0 and an infinite PSNR, which would turn every average into ``inf``.
Such frames are *capped* at :data:`PSNR_CAP_DB` (100 dB, i.e. an MSE of 1e-10, far below the
8-bit quantisation floor of about 58.9 dB for an error of one grey level on every pixel) and
reported: ``psnr(..., return_capped=True)`` also returns a boolean ``(B, T)`` mask of the capped
frames, so a report can say "k frames were identical and counted as 100 dB".
"""
from __future__ import annotations

import torch

from vpcli.metrics._checks import check_pair

PSNR_CAP_DB = 100.0


def psnr(pred: torch.Tensor, target: torch.Tensor, *, cap_db: float = PSNR_CAP_DB,
         return_capped: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Per-frame PSNR in dB of two ``B,T,C,H,W`` videos in ``[0, 1]``; returns ``(B, T)`` float32.

    Frames whose PSNR would exceed ``cap_db`` (in particular identical frames) get exactly
    ``cap_db``; with ``return_capped=True`` the result is ``(values, capped)`` where ``capped`` is a
    bool ``(B, T)`` mask of those frames.
    """
    if not cap_db > 0:
        raise ValueError(f"cap_db must be positive, got {cap_db!r}")
    pred, target = check_pair(pred, target)
    # float64 for the mean: a float32 sum over 128x256x3 values loses digits at high PSNR.
    mse = (pred.double() - target.double()).square().flatten(2).mean(dim=2)  # B,T
    floor = 10.0 ** (-cap_db / 10.0)  # the MSE at which PSNR == cap_db
    capped = mse <= floor
    values = torch.where(capped, torch.full_like(mse, cap_db), -10.0 * torch.log10(mse.clamp_min(floor)))
    values = values.float()
    return (values, capped) if return_capped else values


class PSNR:
    """Registry wrapper: ``PSNR()(pred, target) -> (B, T)``; see :func:`psnr`."""

    name = "psnr"
    kind = "frame"
    higher_is_better = True
    unit = "dB"

    def __init__(self, *, cap_db: float = PSNR_CAP_DB):
        self.cap_db = float(cap_db)

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return psnr(pred, target, cap_db=self.cap_db)

    def with_capped(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(values, capped)``: the per-frame PSNR and the mask of frames set to ``cap_db``."""
        return psnr(pred, target, cap_db=self.cap_db, return_capped=True)

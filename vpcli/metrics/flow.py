"""End-point error of a predicted optical flow against the ground truth.

``EPE = mean over pixels of || f_pred(x) - f_gt(x) ||_2`` in pixels (Baker et al., IJCV 2011):
the standard flow accuracy measure (Middlebury, Sintel, KITTI's "EPE-all"). Ground-truth vectors
that are unknown -- Middlebury's marker value (|u| or |v| >= 1e9) or not finite -- are left out.
"""
from __future__ import annotations

import torch

from vpcli.errors import DataFormatError

UNKNOWN_FLOW = 1e9  # Middlebury .flo marks unknown vectors with values >= 1e9


def epe(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-frame mean end-point error ``(B, T)`` of flows ``(B, T, 2, H, W)`` in pixels."""
    if pred.dim() != 5 or pred.shape[2] != 2 or pred.shape != target.shape:
        raise DataFormatError(f"flows must both be (B, T, 2, H, W), got {tuple(pred.shape)} and {tuple(target.shape)}",
                              "compare forward flows of the same frames and size")
    pred, target = pred.double(), target.double()
    known = torch.isfinite(target).all(2) & (target.abs() < UNKNOWN_FLOW).all(2)  # B,T,H,W
    err = torch.linalg.vector_norm(torch.nan_to_num(pred - target), dim=2)  # B,T,H,W
    count = known.sum((-2, -1))
    out = (err * known).sum((-2, -1)) / count.clamp(min=1)
    return torch.where(count > 0, out, torch.full_like(out, float("nan"))).float()


class EPE:
    name = "epe"
    kind = "flow"
    higher_is_better = False
    unit = "px"

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return epe(pred, target)

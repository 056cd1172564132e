"""Library functions behind the CLI: segment, estimate_flow, predict, train, evaluate.

Each function takes plain Python values and returns plain records; the CLI only parses and
renders. Engines that are not in this build yet raise :class:`NotAvailableError` (exit code 2)
naming what is missing, instead of producing pretend output.
"""
from __future__ import annotations

from typing import Any

from vpcli.errors import NotAvailableError


def _missing(command: str, what: str) -> NotAvailableError:
    return NotAvailableError(f"vpcli {command}: {what} is not implemented in vpcli yet",
                             "see README.md 'Status' for what this build can do")


def segment(*args: Any, **kwargs: Any):
    raise _missing("segment", "the DeepLabV3+ segmentation engine")


def estimate_flow(*args: Any, **kwargs: Any):
    raise _missing("flow", "the optical-flow engine (DIS, Farneback, PWC-Net)")


def predict(*args: Any, **kwargs: Any):
    raise _missing("predict", "the prediction engine (SLAMP, HVP, SADM, LMVP predictors)")


def train(*args: Any, **kwargs: Any):
    raise _missing("train", "the training engine")


def evaluate(*args: Any, **kwargs: Any):
    raise _missing("eval", "the evaluation engine (PSNR, SSIM, MS-SSIM, LPIPS, FVD, mIoU)")

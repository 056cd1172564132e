"""Squeeze-and-excitation (Hu et al., CVPR 2018): re-weight channels by a gate from their global mean."""
from __future__ import annotations

import torch
from torch import nn


class SqueezeExcitation(nn.Module):
    """``x * sigmoid(W2 relu(W1 mean_hw(x)))``; both projections without bias, reduction 16.

    Parameter names (``fc.0``, ``fc.2``) follow the layer SLAMP's mask predictor and street
    encoders use (kaanakan/slamp ``models/mask_predictor.py`` ``SELayer``), so their weights load
    one to one.
    """

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)  # tiny test models: never a zero-width bottleneck
        self.fc = nn.Sequential(nn.Linear(channels, hidden, bias=False), nn.ReLU(inplace=True),
                                nn.Linear(hidden, channels, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc(x.mean((2, 3)))           # (B, C, H, W) -> (B, C)
        return x * gate[:, :, None, None]        # (B, C, 1, 1) broadcast over H, W

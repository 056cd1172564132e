"""Partial convolution (Liu, Reda, Shih, Wang, Tao, Catanzaro: "Image Inpainting for Irregular
Holes Using Partial Convolutions", ECCV 2018, eqs. 1-2), the encoder layer of SADM's inpainting
network (Sec. 4).

For a window with mask M (1 = valid pixel) the output is ``W^T (X * M) * sum(1) / sum(M) + b``
when ``sum(M) > 0`` and 0 otherwise; the mask is updated to 1 wherever ``sum(M) > 0``. One mask
channel is shared by all input channels (the paper's single-channel variant).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class PartialConv2d(nn.Conv2d):
    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` ``(B, C, H, W)``, ``mask`` ``(B, 1, H, W)`` in {0, 1} -> (output, updated mask)."""
        with torch.no_grad():
            ones = torch.ones(1, 1, *self.kernel_size, device=x.device, dtype=mask.dtype)
            count = F.conv2d(mask, ones, stride=self.stride, padding=self.padding, dilation=self.dilation)
            new_mask = (count > 0).to(x.dtype)
            scale = (self.kernel_size[0] * self.kernel_size[1]) / count.clamp(min=1.0) * new_mask
        raw = F.conv2d(x * mask, self.weight, None, self.stride, self.padding, self.dilation, self.groups)
        out = raw * scale.to(raw.dtype)
        if self.bias is not None:
            out = (out + self.bias.view(1, -1, 1, 1)) * new_mask.to(raw.dtype)
        return out, new_mask

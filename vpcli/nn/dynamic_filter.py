"""Dynamic local filtering (Jia, De Brabandere, Tuytelaars, Van Gool: "Dynamic Filter Networks",
NeurIPS 2016): every output pixel is its own ``k x k`` filter applied to the neighbourhood of the
same pixel in the input, the filters being predicted per sample and per pixel by a network.

For input ``x`` ``(B, C, H, W)`` and filters ``K`` ``(B, k*k, H, W)`` (one filter per pixel,
shared by the channels) or ``(B, C, k*k, H, W)`` (one per pixel and channel), with ``r = k // 2``
and ``x`` padded by ``r`` on every side::

    out[b, c, i, j] = sum_{u, v < k} K[b, (c,) u * k + v, i, j] * x_pad[b, c, i + u, j + v]

i.e. tap ``(u, v)`` reads the input pixel at offset ``(u - r, v - r)`` (row, column). This is a
correlation, as ``torch.nn.functional.conv2d`` is; tap order is row-major, the order
``F.unfold`` lays out a patch in.

The whole frame is one batched operation: ``F.unfold`` gathers every pixel's ``k x k``
neighbourhood into ``(B, C, k*k, H, W)`` and a product-and-sum over the tap axis applies all
filters at once (no loop over pixels or taps; channels, 1 or 3, one after another). Memory is
``k*k`` times the input's, which is what DFN's own layer costs too.

Padding: ``replicate`` (default) continues the border pixels outward, so content entering the
frame takes the colour of the edge instead of black (camera motion); ``zeros`` and ``reflect``
are there for comparison.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

Padding = Literal["replicate", "zeros", "reflect"]


def _kernel_size(taps: int) -> int:
    k = math.isqrt(taps)
    if k * k != taps or k % 2 == 0:
        raise ValueError(f"filters must have k*k taps for an odd k, got {taps} taps")
    return k


def neighbourhoods(x: torch.Tensor, kernel_size: int, padding: Padding = "replicate") -> torch.Tensor:
    """Every pixel's ``k x k`` neighbourhood: ``(B, C, H, W)`` -> ``(B, C, k*k, H, W)``."""
    if x.dim() != 4:
        raise ValueError(f"x must be (B, C, H, W), got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    r = kernel_size // 2
    mode = "constant" if padding == "zeros" else padding
    xp = F.pad(x, (r, r, r, r), mode=mode)                # (B, C, H + 2r, W + 2r)
    patches = F.unfold(xp, kernel_size)                   # (B, C * k*k, H * W), channel-major
    return patches.view(b, c, kernel_size * kernel_size, h, w)


def dynamic_filter(x: torch.Tensor, filters: torch.Tensor, padding: Padding = "replicate") -> torch.Tensor:
    """Apply per-pixel filters ``(B, k*k, H, W)`` or ``(B, C, k*k, H, W)`` to ``x`` ``(B, C, H, W)``.

    The filters are used as given (normalise them first if the output should stay in the input's
    range: :class:`DynamicFilter` does, with a softmax over the taps).
    """
    if x.dim() != 4:
        raise ValueError(f"x must be (B, C, H, W), got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    per_channel = filters.dim() == 5
    if filters.dim() not in (4, 5) or filters.shape[0] != b or tuple(filters.shape[-2:]) != (h, w) \
            or (per_channel and filters.shape[1] != c):
        raise ValueError(f"filters must be (B, k*k, H, W) or (B, C, k*k, H, W) for x of shape {tuple(x.shape)}, "
                         f"got {tuple(filters.shape)}")
    k = _kernel_size(filters.shape[-3])
    patches = neighbourhoods(x, k, padding)               # (B, C, k*k, H, W)
    # A product and a sum over the tap axis, one channel at a time (C is 1 or 3). Measured on CPU
    # (B 16, 64x64, k 9): einsum("bckhw,bkhw->bchw") lowers to a (B*H*W)-batched matrix product of
    # (C x k*k) by (k*k x 1) and is 2x slower; one product over all channels at once allocates a
    # (B, C, k*k, H, W) temporary and was 1.3-2.5x slower for RGB than this.
    return torch.stack([(patches[:, i] * (filters[:, i] if per_channel else filters)).sum(1)
                        for i in range(c)], 1)            # (B, C, H, W)


class DynamicFilter(nn.Module):
    """Filter logits ``(B, k*k, H, W)`` -> softmax over the taps (each filter sums to one, every
    tap >= 0, so the output is a convex combination of input pixels and stays in its range) ->
    :func:`dynamic_filter`. Returns ``(output, filters)``."""

    def __init__(self, kernel_size: int, padding: Padding = "replicate"):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 1, got {kernel_size}")
        if padding not in ("replicate", "zeros", "reflect"):
            raise ValueError(f"padding must be replicate, zeros or reflect, got {padding!r}")
        self.kernel_size, self.padding = kernel_size, padding

    def forward(self, x: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        taps = self.kernel_size * self.kernel_size
        if logits.shape[-3] != taps:
            raise ValueError(f"expected {taps} filter taps ({self.kernel_size}x{self.kernel_size}), "
                             f"got logits of shape {tuple(logits.shape)}")
        filters = logits.softmax(dim=-3)                  # normalised over the taps
        return dynamic_filter(x, filters, self.padding), filters

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, padding={self.padding!r}"

"""Differentiable backward warping (Jaderberg et al. 2015 spatial-transformer sampling).

Flow follows DESIGN.md: ``(u, v)`` in pixels, x right, y down. :func:`backward_warp` takes a
**backward** flow of the *target* frame: for every target pixel ``p`` it says where in the
*source* image to read, ``out[p] = image[p + flow[p]]`` (bilinear). A forward flow ``t -> t+1``
of frame ``t`` cannot be used here directly; the backward flow of frame ``t+1`` (``t+1 -> t``) can.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F


def sampling_grid(flow: torch.Tensor) -> torch.Tensor:
    """Backward flow ``(B, 2, H, W)`` in pixels -> ``grid_sample`` grid ``(B, H, W, 2)`` in [-1, 1].

    Pixel centres map to -1 ... 1 corner to corner (``align_corners=True``), so a flow of one
    pixel moves exactly one pixel whatever the size.
    """
    _, _, h, w = flow.shape
    ys = torch.arange(h, device=flow.device, dtype=flow.dtype).view(1, h, 1)
    xs = torch.arange(w, device=flow.device, dtype=flow.dtype).view(1, 1, w)
    x = (xs + flow[:, 0]) * (2.0 / max(w - 1, 1)) - 1.0  # (B, H, W)
    y = (ys + flow[:, 1]) * (2.0 / max(h - 1, 1)) - 1.0  # (B, H, W)
    return torch.stack((x, y), dim=-1)                    # (B, H, W, 2): grid_sample wants (x, y)


def backward_warp(image: torch.Tensor, flow: torch.Tensor, *, zero_outside: bool = True) -> torch.Tensor:
    """Sample ``image`` ``(B, C, H, W)`` at ``p + flow[p]`` for every pixel ``p``.

    ``zero_outside``: pixels whose bilinear footprint leaves the image are set to 0 (the
    validity mask of SLAMP's ``flow_utils.warp``: a warped all-ones image below 0.9999 counts as
    outside). The mask is a constant: no gradient flows through it, only through the samples.
    """
    if image.shape[0] != flow.shape[0] or image.shape[-2:] != flow.shape[-2:] or flow.shape[1] != 2:
        raise ValueError(f"image {tuple(image.shape)} and flow {tuple(flow.shape)} do not fit: "
                         "expected (B, C, H, W) and (B, 2, H, W)")
    grid = sampling_grid(flow.to(image.dtype))
    out = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    if not zero_outside:
        return out
    with torch.no_grad():
        ones = image.new_ones(image.shape[0], 1, *image.shape[-2:])
        valid = F.grid_sample(ones, grid, mode="bilinear", padding_mode="zeros", align_corners=True) >= 0.9999
    return out * valid  # (B, 1, H, W) mask broadcast over channels


def warp_border(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``image[p + flow[p]]`` (bilinear, border padding): content entering at an edge continues it."""
    # in float32 whatever the image's dtype: a bf16 grid is off by up to 1/4 px at 256 px wide, and
    # the error compounds over recursive warping
    grid = sampling_grid(flow.float())
    out = F.grid_sample(image.float(), grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.to(image.dtype)


def invert_flow(flow: torch.Tensor, iters: int = 5) -> torch.Tensor:
    """The reverse of flow fields ``(..., 2, H, W)``: from a forward flow of frame t (t -> t+1) the
    backward flow of frame t+1 (t+1 -> t), or the other way round, by the fixed-point iteration
    ``b(p) = -f(p + b(p))`` (exact where the flow is locally smooth; occlusions keep the value of
    the surface in front). Leading dimensions (batch, time) are kept."""
    f = flow.reshape(-1, *flow.shape[-3:])                              # (N, 2, H, W)
    b = -f
    for _ in range(iters):
        b = -warp_border(f, b)
    return b.view(flow.shape)

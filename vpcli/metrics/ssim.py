"""SSIM and MS-SSIM per frame.

SSIM (Wang et al. 2004) with the settings every video-prediction paper uses: an 11x11 Gaussian
window with sigma 1.5, ``K1 = 0.01``, ``K2 = 0.03``, data range 1, population (not sample)
covariances; computed per channel and averaged over channels. The window is applied only where
it fits inside the frame ("valid" filtering), which is what both references do:

- scikit-image ``structural_similarity(x, y, gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1, channel_axis=...)`` filters with reflect padding but
  then averages only over pixels at least ``(11 - 1) // 2 = 5`` from the border, i.e. exactly
  where the window does not touch the padding;
- ``pytorch_msssim.ssim(..., win_size=11, win_sigma=1.5)`` filters without padding.

MS-SSIM (Wang, Simoncelli, Bovik 2003) over 5 scales with weights ``0.0448, 0.2856, 0.3001,
0.2363, 0.1333``: the contrast-structure term at the first four scales and the full SSIM at the
coarsest, each clipped at 0 (so that a negative term cannot make the weighted product complex),
combined as ``prod_i v_i ** w_i`` per channel, then averaged over channels. Between scales the
image is 2x2 average-pooled, padding odd sizes by one pixel (as ``pytorch_msssim.ms_ssim``).
With an 11-pixel window the coarsest scale must still hold the window, so the shorter frame side
must exceed ``(11 - 1) * 2**4 = 160`` pixels; smaller frames raise an error naming the size and
the options (a smaller ``win_size``, or fewer ``weights``) — values computed with other settings
are not comparable with published MS-SSIM numbers, which is why nothing is adapted silently.

``ms-ssim-3`` is the explicit small-frame variant: the first three scales, their standard weights
renormalised to sum 1 (``MS_SSIM3_WEIGHTS``), defined from 41 px; its name says it is not the
5-scale number.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from vpcli.errors import DataFormatError
from vpcli.metrics._checks import check_batch_size, check_pair, chunks, flatten_frames

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MS_SSIM3_WEIGHTS = tuple(w / sum(MS_SSIM_WEIGHTS[:3]) for w in MS_SSIM_WEIGHTS[:3])


def gaussian_window(size: int = 11, sigma: float = 1.5, *, dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """The normalised 1-D Gaussian of odd length ``size`` (the separable SSIM window)."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"win_size must be a positive odd int, got {size!r}")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma!r}")
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-coords.square() / (2 * sigma * sigma))
    return (g / g.sum()).to(dtype=dtype, device=device)


def _blur_valid(x: torch.Tensor, win: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of every channel of ``N,C,H,W`` over the 'valid' region."""
    c = x.shape[1]
    k = win.numel()
    x = F.conv2d(x, win.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)  # along H
    return F.conv2d(x, win.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)  # along W


def _ssim_and_cs(x: torch.Tensor, y: torch.Tensor, win: torch.Tensor, k1: float, k2: float
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean SSIM and mean contrast-structure term per image and channel: two ``N,C`` tensors."""
    c1, c2 = k1 ** 2, k2 ** 2  # data range 1
    c = x.shape[1]
    # One grouped convolution for the five local moments: N,5C,H,W -> N,5C,H',W'.
    stats = _blur_valid(torch.cat([x, y, x * x, y * y, x * y], dim=1), win)
    mu_x, mu_y, e_xx, e_yy, e_xy = stats.split(c, dim=1)
    var_x = e_xx - mu_x * mu_x
    var_y = e_yy - mu_y * mu_y
    cov = e_xy - mu_x * mu_y
    cs_map = (2 * cov + c2) / (var_x + var_y + c2)
    ssim_map = (2 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1) * cs_map
    return ssim_map.flatten(2).mean(dim=2), cs_map.flatten(2).mean(dim=2)


def _check_window_fits(h: int, w: int, win_size: int, levels: int, metric: str) -> None:
    need = (win_size - 1) * 2 ** (levels - 1) + 1 if levels > 1 else win_size
    if min(h, w) < need:
        if levels > 1:
            hint = (f"MS-SSIM with {levels} scales and an {win_size}-px window needs frames of at least "
                    f"{need}x{need}; use frames that large, pass a smaller win_size (e.g. 7 needs "
                    f"{6 * 2 ** (levels - 1) + 1} px) or fewer weights — and report the settings, since "
                    f"such values are not comparable with the standard MS-SSIM")
        else:
            hint = f"SSIM needs frames at least as large as its {win_size}x{win_size} window; pass a smaller win_size"
        raise DataFormatError(f"{metric}: frames of {h}x{w} are too small", hint)


def ssim(pred: torch.Tensor, target: torch.Tensor, *, win_size: int = 11, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03, batch_size: int | None = 256) -> torch.Tensor:
    """Per-frame SSIM of two ``B,T,C,H,W`` videos in ``[0, 1]``; returns ``(B, T)`` float32.

    Frames are processed ``batch_size`` at a time (all at once when ``None``).
    """
    pred, target = check_pair(pred, target)
    check_batch_size(batch_size)
    b, t, _, h, w = pred.shape
    _check_window_fits(h, w, win_size, 1, "SSIM")
    win = gaussian_window(win_size, sigma, device=pred.device)
    x, y = flatten_frames(pred).float(), flatten_frames(target).float()  # (B*T),C,H,W
    out = torch.empty(b * t, device=pred.device)
    for sl in chunks(b * t, batch_size):
        s, _ = _ssim_and_cs(x[sl], y[sl], win, k1, k2)
        out[sl] = s.mean(dim=1)  # mean over channels
    return out.view(b, t)


def ms_ssim(pred: torch.Tensor, target: torch.Tensor, *, weights: tuple[float, ...] = MS_SSIM_WEIGHTS,
            win_size: int = 11, sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03,
            batch_size: int | None = 256) -> torch.Tensor:
    """Per-frame MS-SSIM of two ``B,T,C,H,W`` videos in ``[0, 1]``; returns ``(B, T)`` float32."""
    pred, target = check_pair(pred, target)
    check_batch_size(batch_size)
    if len(weights) < 1:
        raise ValueError("weights must hold at least one scale weight")
    b, t, _, h, w = pred.shape
    levels = len(weights)
    _check_window_fits(h, w, win_size, levels, "MS-SSIM")
    win = gaussian_window(win_size, sigma, device=pred.device)
    wts = torch.tensor(weights, dtype=torch.float32, device=pred.device).view(levels, 1, 1)
    x_all, y_all = flatten_frames(pred).float(), flatten_frames(target).float()
    out = torch.empty(b * t, device=pred.device)
    for sl in chunks(b * t, batch_size):
        x, y = x_all[sl], y_all[sl]
        terms = []
        for level in range(levels):
            s, cs = _ssim_and_cs(x, y, win, k1, k2)  # N,C each
            if level < levels - 1:
                terms.append(cs.clamp_min(0))
                pad = (x.shape[2] % 2, x.shape[3] % 2)
                x = F.avg_pool2d(x, kernel_size=2, padding=pad)
                y = F.avg_pool2d(y, kernel_size=2, padding=pad)
            else:
                terms.append(s.clamp_min(0))
        per_channel = torch.prod(torch.stack(terms, dim=0) ** wts, dim=0)  # levels,N,C -> N,C
        out[sl] = per_channel.mean(dim=1)
    return out.view(b, t)


class SSIM:
    """Registry wrapper: ``SSIM()(pred, target) -> (B, T)``; see :func:`ssim`."""

    name = "ssim"
    kind = "frame"
    higher_is_better = True

    def __init__(self, *, win_size: int = 11, sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03,
                 batch_size: int | None = 256):
        gaussian_window(win_size, sigma)  # validates both
        self.kwargs = {"win_size": win_size, "sigma": sigma, "k1": k1, "k2": k2, "batch_size": check_batch_size(batch_size)}

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ssim(pred, target, **self.kwargs)


class MSSSIM:
    """Registry wrapper: ``MSSSIM()(pred, target) -> (B, T)``; see :func:`ms_ssim`."""

    name = "ms-ssim"
    kind = "frame"
    higher_is_better = True

    def __init__(self, *, weights: tuple[float, ...] = MS_SSIM_WEIGHTS, win_size: int = 11, sigma: float = 1.5,
                 k1: float = 0.01, k2: float = 0.03, batch_size: int | None = 256):
        gaussian_window(win_size, sigma)
        self.kwargs = {"weights": tuple(weights), "win_size": win_size, "sigma": sigma, "k1": k1, "k2": k2,
                           "batch_size": check_batch_size(batch_size)}

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ms_ssim(pred, target, **self.kwargs)


class MSSSIM3(MSSSIM):
    """MS-SSIM over the first three scales (``MS_SSIM3_WEIGHTS``): defined on frames of 41 px and
    more (64x128 clips), not comparable with 5-scale MS-SSIM."""

    name = "ms-ssim-3"

    def __init__(self, **kwargs):
        super().__init__(**{"weights": MS_SSIM3_WEIGHTS, **kwargs})

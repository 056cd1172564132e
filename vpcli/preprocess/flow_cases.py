"""Flow test cases with exact ground truth, shared by the tests, benchmarks/bench_flow.py and
scripts/train_pwcnet.py (needs scikit-image, a test dependency)."""
from __future__ import annotations

import numpy as np


def stereo_motorcycle(factor: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-image's Middlebury 2014 motorcycle pair downscaled by ``factor`` (area average) ->
    ``(left, right, flow, valid)``: uint8 ``(H, W, 3)`` images, flow ``(2, H, W)`` = ``(-d, 0)``
    (left pixel x is at x - d in the right image) and the mask of blocks whose disparity is known
    at every pixel."""
    import cv2
    from skimage import data

    left, right, disp = data.stereo_motorcycle()
    hh, ww = left.shape[0] // factor * factor, left.shape[1] // factor * factor
    size = (ww // factor, hh // factor)
    lo = cv2.resize(left[:hh, :ww], size, interpolation=cv2.INTER_AREA)
    ro = cv2.resize(right[:hh, :ww], size, interpolation=cv2.INTER_AREA)
    blocks = disp[:hh, :ww].reshape(hh // factor, factor, ww // factor, factor)
    valid = np.isfinite(blocks).all(axis=(1, 3))  # a block counts only if all its pixels are known
    d = np.where(valid, np.where(np.isfinite(blocks), blocks, 0).mean(axis=(1, 3)), 0) / factor
    return lo, ro, np.stack([-d, np.zeros_like(d)]).astype(np.float32), valid

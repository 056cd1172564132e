"""Flow test cases with exact ground truth, shared by the tests, benchmarks/bench_flow.py and
scripts/train_pwcnet.py (the photographs need scikit-image, a test dependency)."""
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


def centred_homography(w: int, h: int, angle: float = 3.0, scale: float = 1.04, tx: float = 4.0, ty: float = -3.0,
                       px: float = 2e-5, py: float = -1e-5) -> np.ndarray:
    """A rotation (degrees) + zoom + shift + perspective about the image centre, 3x3 in pixel
    coordinates; the defaults are the fixed case the tests and benchmarks use."""
    c = np.array([[1, 0, -w / 2], [0, 1, -h / 2], [0, 0, 1.0]])
    a = np.deg2rad(angle)
    m = np.array([[scale * np.cos(a), -scale * np.sin(a), tx], [scale * np.sin(a), scale * np.cos(a), ty], [px, py, 1]])
    return np.linalg.inv(c) @ m @ c


def homography_flow(H: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact forward flow ``H(x) - x`` as float32 ``(2, h, w)``, and where ``H(x)`` lands inside the image."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    p = np.stack([xs, ys, np.ones_like(xs)]).reshape(3, -1)
    q = H @ p
    q = q[:2] / q[2]
    flow = (q - p[:2]).reshape(2, h, w).astype(np.float32)
    valid = ((q[0] >= 0) & (q[0] <= w - 1) & (q[1] >= 0) & (q[1] <= h - 1)).reshape(h, w)
    return flow, valid


def homography_pair(img: np.ndarray, H: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(b, flow, valid)``: frame b shows ``img``'s pixel x at H(x) (bilinear, reflected border),
    the exact forward flow ``(2, H, W)`` and the mask of pixels that land inside b."""
    import cv2

    h, w = img.shape[:2]
    b = cv2.warpPerspective(img, H, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return (b, *homography_flow(H, h, w))


def astronaut_homography(size: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-image's astronaut at ``size`` x ``size`` (area) under :func:`centred_homography`'s
    fixed case -> ``(a, b, flow, valid)``."""
    import cv2
    from skimage import data

    img = cv2.resize(data.astronaut(), (size, size), interpolation=cv2.INTER_AREA)
    return (img, *homography_pair(img, centred_homography(size, size)))


def photo_at(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """``img`` centre-cropped to the aspect h:w and resized (area) to h x w (held-out photographs
    at the sizes the PWC-Net targets are measured at)."""
    import cv2
    sh, sw = img.shape[:2]
    if sw * h > sh * w:  # too wide: crop the width
        cw = round(sh * w / h)
        img = img[:, (sw - cw) // 2:(sw - cw) // 2 + cw]
    else:
        ch = round(sw * h / w)
        img = img[(sh - ch) // 2:(sh - ch) // 2 + ch]
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)


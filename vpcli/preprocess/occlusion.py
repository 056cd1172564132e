"""Occlusion from the forward-backward consistency check.

A pixel ``x`` of frame t that stays visible in t+1 moves to ``x + F(x)``, and the backward flow
there brings it back: ``F(x) + B(x + F(x)) ~ 0``. Where that fails, ``x`` is taken as occluded
(Sundaram, Brox, Keutzer, ECCV 2010, with the magnitude-relative threshold of Meister, Hur, Roth,
"UnFlow", AAAI 2018)::

    |F(x) + B(x + F(x))|^2  >  alpha1 * (|F(x)|^2 + |B(x + F(x))|^2) + alpha2

with ``alpha1 = 0.01`` and ``alpha2 = 0.5`` (UnFlow's values). ``B`` is sampled bilinearly.
A pixel whose target ``x + F(x)`` falls outside the image is occluded too (it leaves the view).
Running the same test with the roles swapped gives the pixels of t+1 not visible in t.

Conventions match :mod:`vpcli.data.synth_street`: ``forward[t]`` marks pixels of frame t not
visible in t+1, ``backward[t]`` pixels of frame t+1 not visible in t.
"""
from __future__ import annotations

import cv2
import numpy as np

ALPHA1 = 0.01
ALPHA2 = 0.5


def _sample(field_2hw: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    # cv2.remap samples field(map_y, map_x) bilinearly; outside pixels are handled by the caller.
    u = cv2.remap(field_2hw[0], map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    v = cv2.remap(field_2hw[1], map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return np.stack([u, v])


def inconsistent(flow_2hw: np.ndarray, other_2hw: np.ndarray, *, alpha1: float = ALPHA1,
                 alpha2: float = ALPHA2, mark_outside: bool = True) -> np.ndarray:
    """``bool (H, W)``: pixels where ``flow`` and the reverse flow ``other`` disagree (occluded)."""
    _, h, w = flow_2hw.shape
    xs = np.arange(w, dtype=np.float32)[None, :]
    ys = np.arange(h, dtype=np.float32)[:, None]
    tx = np.ascontiguousarray(xs + flow_2hw[0], dtype=np.float32)  # where each pixel lands
    ty = np.ascontiguousarray(ys + flow_2hw[1], dtype=np.float32)
    back = _sample(np.asarray(other_2hw, np.float32), tx, ty)
    diff = (flow_2hw + back) ** 2
    mag = flow_2hw ** 2 + back ** 2
    occ = diff.sum(0) > alpha1 * mag.sum(0) + alpha2
    if mark_outside:
        occ |= (tx < 0) | (tx > w - 1) | (ty < 0) | (ty > h - 1)
    return occ


def forward_backward_occlusion(forward, backward, *, alpha1: float = ALPHA1, alpha2: float = ALPHA2,
                               mark_outside: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Occlusion masks for flow stacks ``forward`` (t -> t+1) and ``backward`` (t+1 -> t).

    ``forward, backward``: ``float32 (N, 2, H, W)`` (or one ``(2, H, W)`` each). Returns
    ``(occ_forward, occ_backward)``, ``bool (N, H, W)``: pixels of t not visible in t+1, and
    pixels of t+1 not visible in t.
    """
    fwd = np.asarray(forward, np.float32)
    bwd = np.asarray(backward, np.float32)
    single = fwd.ndim == 3
    if single:
        fwd, bwd = fwd[None], bwd[None]
    if fwd.shape != bwd.shape or fwd.ndim != 4 or fwd.shape[1] != 2:
        raise ValueError(f"forward {fwd.shape} and backward {bwd.shape} must both be (N, 2, H, W)")
    kw = {"alpha1": alpha1, "alpha2": alpha2, "mark_outside": mark_outside}
    occ_f = np.stack([inconsistent(f, b, **kw) for f, b in zip(fwd, bwd)]) if len(fwd) else np.zeros(fwd.shape[:1] + fwd.shape[2:], bool)
    occ_b = np.stack([inconsistent(b, f, **kw) for f, b in zip(fwd, bwd)]) if len(fwd) else occ_f.copy()
    return (occ_f[0], occ_b[0]) if single else (occ_f, occ_b)

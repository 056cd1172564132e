"""Any clip size in, the same size out: how `vpcli predict` maps a clip onto what a model takes.

A predictor says what sizes it runs at with ``size_multiple`` (:class:`vpcli.predictors.base.Predictor`):

* ``None`` -- a **fixed size**, the ``data.size`` its weights were trained at (SLAMP's DCGAN/VGG
  encoders end in a 1x1 latent). The clip is fitted into that size with ``--fit``:
  ``letterbox`` (default: the whole frame, aspect ratio kept, the borders filled by repeating the
  edge pixels -- black bars would be content the model never saw), ``crop`` (aspect kept, the
  centre that fills the size) or ``stretch`` (the aspect ratio changes);
* an integer ``m`` -- **fully convolutional**: the model runs at the clip's own resolution, padded
  (edge pixels repeated, bottom and right) to a multiple of ``m`` and cropped back.

Parameter-free methods (copy-last) run at any size. ``--size HxW`` asks for a working resolution
(fitted with ``--fit``, then padded to the multiple). Outputs are written at the clip's size
(``crop``: at the size of the cropped region in the clip's pixels, which is all the model saw).
What was done is one line (:meth:`Geometry.describe`) and ``meta.json``'s ``geometry``.

Only what cannot work is refused: a clip smaller than :data:`MIN_SIDE`, or a ``--size`` that
fixed-size weights cannot take.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from vpcli.errors import InputError, UsageError

FITS = ("letterbox", "crop", "stretch")
MIN_SIDE = 4  # pixels: below this no resize or pad is meaningful


@dataclass(frozen=True)
class Geometry:
    """The mapping between a clip (``source``) and the model's frames (``work``).

    The model's frames hold the content -- the clip resized to ``scaled`` and, for ``crop``, cut
    at ``crop_at`` to ``content`` -- at ``offset`` inside ``work``; the rest repeats the edge.
    """

    mode: str                      # native | pad | letterbox | crop | stretch
    source: tuple[int, int]        # H, W of the clip
    scaled: tuple[int, int]        # the clip resized (before a crop)
    crop_at: tuple[int, int]       # top-left of the crop in ``scaled`` (crop mode), else (0, 0)
    content: tuple[int, int]       # the part of ``scaled`` the model sees
    offset: tuple[int, int]        # where ``content`` sits in ``work``
    work: tuple[int, int]          # what the model sees
    out: tuple[int, int]           # the size outputs are written at

    @property
    def identity(self) -> bool:
        return self.work == self.source == self.out and self.scaled == self.source

    # -- clip -> model ----------------------------------------------------------------------
    def _place(self, x: np.ndarray, axes: tuple[int, int]) -> np.ndarray:
        """Cut the crop (crop mode) and pad ``content`` into ``work`` along ``axes`` (H, W)."""
        (cy, cx), (ch, cw) = self.crop_at, self.content
        index = [slice(None)] * x.ndim
        index[axes[0]], index[axes[1]] = slice(cy, cy + ch), slice(cx, cx + cw)
        x = x[tuple(index)]
        (oy, ox), (wh, ww) = self.offset, self.work
        pad = [(0, 0)] * x.ndim
        pad[axes[0]], pad[axes[1]] = (oy, wh - oy - ch), (ox, ww - ox - cw)
        return np.pad(x, pad, mode="edge") if any(p != (0, 0) for p in pad) else x

    def frames_to_model(self, frames: np.ndarray) -> np.ndarray:
        """``uint8 (T, H, W, C)`` clip frames -> ``(T, h, w, C)`` model frames."""
        from vpcli.data.clips import _resize_frames
        return np.ascontiguousarray(self._place(_resize_frames(frames, self.scaled), (1, 2)))

    def labels_to_model(self, labels: np.ndarray) -> np.ndarray:
        """``(T, H, W)`` ids -> ``(T, h, w)`` (nearest neighbour)."""
        from vpcli.data.clips import _resize_labels
        return np.ascontiguousarray(self._place(_resize_labels(labels, self.scaled), (1, 2)))

    def flow_to_model(self, flow: np.ndarray) -> np.ndarray:
        """``(N, 2, H, W)`` flow in clip pixels -> model pixels."""
        from vpcli.data.clips import _resize_flow
        return np.ascontiguousarray(self._place(_resize_flow(flow, self.scaled), (2, 3)))

    # -- model -> clip ----------------------------------------------------------------------
    def _cut(self, x: np.ndarray, axes: tuple[int, int]) -> np.ndarray:
        (oy, ox), (ch, cw) = self.offset, self.content
        index = [slice(None)] * x.ndim
        index[axes[0]], index[axes[1]] = slice(oy, oy + ch), slice(ox, ox + cw)
        return x[tuple(index)]

    def frames_to_source(self, frames: np.ndarray) -> np.ndarray:
        """``uint8 (S, h, w, C)`` model frames -> ``(S, out_h, out_w, C)``."""
        from vpcli.data.clips import _resize_frames
        return np.ascontiguousarray(_resize_frames(np.ascontiguousarray(self._cut(frames, (1, 2))), self.out))

    def labels_to_source(self, labels: np.ndarray) -> np.ndarray:
        from vpcli.data.clips import _resize_labels
        return np.ascontiguousarray(_resize_labels(self._cut(labels, (1, 2)), self.out))

    def flow_to_source(self, flow: np.ndarray) -> np.ndarray:
        from vpcli.data.clips import _resize_flow
        return _resize_flow(np.ascontiguousarray(self._cut(flow, (2, 3)), dtype=np.float32), self.out)

    def maps_to_source(self, maps: np.ndarray) -> np.ndarray:
        """``float (S, K, h, w)`` maps (class probabilities) -> ``(S, K, out_h, out_w)``, bilinear."""
        import cv2
        cut = self._cut(maps, (2, 3))
        if cut.shape[2:] == self.out:
            return np.ascontiguousarray(cut)
        oh, ow = self.out
        out = np.empty((*cut.shape[:2], oh, ow), np.float32)
        for s in range(cut.shape[0]):
            for k in range(cut.shape[1]):
                out[s, k] = cv2.resize(np.ascontiguousarray(cut[s, k], dtype=np.float32), (ow, oh),
                                       interpolation=cv2.INTER_LINEAR)
        return out

    # -- what was done ----------------------------------------------------------------------
    def describe(self, why: str) -> str:
        """One line: what was done to fit the model (``why``: e.g. 'slamp-synthstreet takes 64x128')."""
        hw = lambda t: f"{t[0]}x{t[1]}"  # noqa: E731
        src = hw(self.source)
        if self.mode == "pad":
            return (f"{src} (HxW) padded to {hw(self.work)} ({why}) and cropped back: outputs at {hw(self.out)}")
        if self.mode == "letterbox":
            extra = f", padded to {hw(self.work)}" if self.work != self.scaled else ""
            return (f"{src} (HxW) letterboxed into {hw(self.work)} ({why}): resized to {hw(self.scaled)} with the "
                    f"aspect ratio kept{extra}, edges repeated; outputs at {hw(self.out)} (--fit crop or stretch "
                    "to change)")
        if self.mode == "crop":
            return (f"{src} (HxW) resized to {hw(self.scaled)} and centre-cropped to {hw(self.content)} ({why}); "
                    f"outputs at {hw(self.out)}, the cropped region in the clip's pixels (--fit letterbox keeps "
                    "the whole frame)")
        if self.mode == "stretch":
            return (f"{src} (HxW) stretched to {hw(self.work)} ({why}; the aspect ratio changes); outputs "
                    f"resized back to {hw(self.out)}")
        return f"{src} (HxW) at its own size"

    def as_meta(self) -> dict[str, Any]:
        return {"mode": self.mode, "source": list(self.source), "scaled": list(self.scaled),
                "crop_at": list(self.crop_at), "content": list(self.content), "offset": list(self.offset),
                "work": list(self.work), "output": list(self.out)}


def _ceil_to(n: int, m: int) -> int:
    return int(math.ceil(n / m) * m)


def plan(source: tuple[int, int], *, multiple: int | None, trained: tuple[int, int] | None,
         size: tuple[int, int] | None = None, fit: str = "letterbox", what: str = "the model") -> Geometry:
    """The geometry for a clip of ``source`` (H, W) and a model that runs at ``trained`` only
    (``multiple`` None) or at any multiple of ``multiple``; ``size`` is ``--size``, ``fit`` ``--fit``."""
    if fit not in FITS:
        raise UsageError(f"--fit must be one of {', '.join(FITS)}, got {fit!r}",
                         "letterbox keeps the whole frame, crop the centre, stretch changes the aspect ratio")
    H, W = (int(v) for v in source)
    if min(H, W) < MIN_SIDE:
        raise InputError(f"the clip is {H}x{W} (HxW): too small for any predictor (at least {MIN_SIDE} pixels a side)",
                         "pass a larger clip")
    if multiple is None:  # fixed size
        if trained is None:
            raise ValueError("a fixed-size model needs its trained size")
        if size is not None and tuple(size) != tuple(trained):
            raise UsageError(f"--size {size[0]}x{size[1]}: {what} only takes {trained[0]}x{trained[1]} (HxW)",
                             f"drop --size (the clip is fitted into {trained[0]}x{trained[1]}), or use weights "
                             "trained at that size")
        target, m = tuple(int(v) for v in trained), 1
    else:
        target, m = (tuple(int(v) for v in size) if size is not None else None), max(1, int(multiple))
    if target is None or target == (H, W):
        work = (_ceil_to(H, m), _ceil_to(W, m))
        mode = "native" if work == (H, W) else "pad"
        return Geometry(mode, (H, W), (H, W), (0, 0), (H, W), (0, 0), work, (H, W))
    th, tw = target
    if fit == "stretch":
        scaled, content, crop_at, out = (th, tw), (th, tw), (0, 0), (H, W)
    elif fit == "letterbox":
        s = min(th / H, tw / W)
        scaled = (min(th, max(1, round(H * s))), min(tw, max(1, round(W * s))))
        content, crop_at, out = scaled, (0, 0), (H, W)
    else:  # crop
        s = max(th / H, tw / W)
        scaled = (max(th, round(H * s)), max(tw, round(W * s)))
        content, crop_at = (th, tw), ((scaled[0] - th) // 2, (scaled[1] - tw) // 2)
        out = (min(H, max(1, round(th / s))), min(W, max(1, round(tw / s))))
    work = (_ceil_to(th, m), _ceil_to(tw, m))
    offset = ((th - content[0]) // 2, (tw - content[1]) // 2)
    return Geometry(fit, (H, W), scaled, crop_at, content, offset, work, out)


__all__ = ["FITS", "Geometry", "MIN_SIDE", "plan"]

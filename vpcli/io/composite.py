"""Side-by-side comparison videos: ``context | ground truth | prediction 1 | prediction 2 ...``.

Border colours follow the convention of video-prediction papers (SVG, SLAMP): green marks
real frames the model was given, red marks generated frames. During the C context steps every
panel shows the context frame (green); afterwards the context panel freezes on the last context
frame (grey) while the other columns play their future frames. Each panel has a caption bar on
top; a footer bar shows the clip frame index ``t=12`` so that the frames themselves stay clean.

Frames are streamed (columns may be generators), so long horizons run in constant memory.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from vpcli.errors import DataFormatError, UsageError

Color = tuple[int, int, int]
CONTEXT_COLOR: Color = (0, 190, 0)      # green: real input frames
HELD_COLOR: Color = (128, 128, 128)     # grey: context panel frozen on its last frame
PREDICTION_COLOR: Color = (220, 0, 0)   # red: generated frames
TRUTH_COLOR: Color = CONTEXT_COLOR      # ground truth is real, so green too
BACKGROUND: Color = (255, 255, 255)     # caption and footer bars
TEXT_COLOR: Color = (0, 0, 0)

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_THICKNESS = 1
_MIN_FONT_SCALE = 0.3


@dataclass(frozen=True)
class CompositeLayout:
    """Pixel geometry of one composite frame (all panels share it)."""

    frame_h: int        # H * scale
    frame_w: int        # W * scale
    border: int
    n_panels: int
    bar_h: int          # height of each caption bar and of the footer
    font_scale: float

    @property
    def panel_w(self) -> int:
        return self.frame_w + 2 * self.border

    @property
    def height(self) -> int:
        return self.bar_h + self.frame_h + 2 * self.border + self.bar_h  # caption, bordered frame, footer

    @property
    def width(self) -> int:
        return self.n_panels * self.panel_w

    def frame_origin(self, panel: int) -> tuple[int, int]:
        """(y, x) of the top-left frame pixel of ``panel`` (inside its border)."""
        return self.bar_h + self.border, panel * self.panel_w + self.border


def composite_layout(h: int, w: int, n_panels: int, *, scale: int = 1, border: int = 2) -> CompositeLayout:
    """The layout for ``n_panels`` frames of size ``h x w``; bars scale with the panel width."""
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise UsageError(f"scale must be an integer >= 1, got {scale!r}")
    if isinstance(border, bool) or not isinstance(border, int) or border < 0:
        raise UsageError(f"border must be an integer >= 0, got {border!r}")
    panel_w = w * scale + 2 * border
    # Text about 1/20 of the panel width tall, readable from 64 px frames to 1080p ones.
    font_scale = float(np.clip(panel_w / 300, _MIN_FONT_SCALE, 1.5))
    (_, text_h), baseline = cv2.getTextSize("Ag", _FONT, font_scale, _THICKNESS)
    bar_h = text_h + baseline + 6
    return CompositeLayout(h * scale, w * scale, border, n_panels, bar_h, font_scale)


def _put_text(img: np.ndarray, text: str, x0: int, width: int, bar_y: int, layout: CompositeLayout) -> None:
    """Draw ``text`` left-aligned in a bar of ``width`` px, shrinking, then shortening it to fit."""
    scale = layout.font_scale
    fits = lambda s, fs: cv2.getTextSize(s, _FONT, fs, _THICKNESS)[0][0] <= width - 6  # noqa: E731
    while not fits(text, scale) and scale > _MIN_FONT_SCALE:
        scale = max(_MIN_FONT_SCALE, scale - 0.05)
    while not fits(text, scale) and len(text) > 1:
        text = text[:-3] + ".." if len(text) > 3 else text[:-1]
    (_, text_h), baseline = cv2.getTextSize(text, _FONT, scale, _THICKNESS)
    y = bar_y + (layout.bar_h + text_h) // 2 - baseline // 2  # baseline position, vertically centred
    cv2.putText(img, text, (x0 + 3, y), _FONT, scale, TEXT_COLOR, _THICKNESS, cv2.LINE_AA)


def _check_frame(frame, what: str, size: tuple[int, int] | None) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise DataFormatError(f"{what} must be uint8 (H, W, 3), got {frame.dtype} {tuple(frame.shape)}",
                              "convert float frames with (x * 255).round().astype(np.uint8)")
    if size is not None and frame.shape[:2] != size:
        raise DataFormatError(f"{what} is {frame.shape[1]}x{frame.shape[0]} but the context is {size[1]}x{size[0]}",
                              "all columns must share the frame size; resize predictions to the input size")
    return frame


def composite_frames(context: Iterable, columns: Sequence[Iterable], *, captions: Sequence[str] | None = None,
                     scale: int = 1, border: int = 2,
                     column_colors: Sequence[Color] | None = None) -> Iterator[np.ndarray]:
    """Yield ``uint8 (H', W', 3)`` comparison frames: the context phase, then one per future step.

    ``context`` is C >= 1 frames; each of ``columns`` is a sequence (or iterator) of future frames,
    all ``uint8 (H, W, 3)`` of one size. Shorter columns hold their last frame until the longest
    ends. ``captions`` names the panels (context first); ``column_colors`` gives each column's
    border colour in the future phase (default red, "generated"). Size: see :func:`composite_layout`.
    """
    n_panels = 1 + len(columns)
    if captions is None:
        captions = ["context"] + [f"column {i + 1}" for i in range(len(columns))]
    captions = list(captions)
    if len(captions) != n_panels:
        raise UsageError(f"{len(captions)} captions for {n_panels} panels (context + {len(columns)} columns)",
                         "give one caption per panel, the context's first")
    colors = list(column_colors) if column_colors is not None else [PREDICTION_COLOR] * len(columns)
    if len(colors) != len(columns):
        raise UsageError(f"{len(colors)} column colours for {len(columns)} columns")

    ctx_iter = iter(context)
    try:
        first = _check_frame(next(ctx_iter), "context frame 0", None)
    except StopIteration:
        raise DataFormatError("the context has no frames", "give at least one context frame") from None
    size = first.shape[:2]
    layout = composite_layout(size[0], size[1], n_panels, scale=scale, border=border)

    # The caption bars never change: draw them once into a template.
    template = np.empty((layout.height, layout.width, 3), np.uint8)
    template[:] = BACKGROUND
    for i, text in enumerate(captions):
        _put_text(template, str(text), i * layout.panel_w, layout.panel_w, 0, layout)

    def render(t: int, panels: list[tuple[np.ndarray, Color]]) -> np.ndarray:
        out = template.copy()
        top = layout.bar_h
        for i, (frame, color) in enumerate(panels):
            x = i * layout.panel_w
            out[top:top + layout.frame_h + 2 * layout.border, x:x + layout.panel_w] = color
            y0, x0 = layout.frame_origin(i)
            # Integer nearest-neighbour upscaling keeps pixels exact (no interpolation blur).
            big = frame if scale == 1 else frame.repeat(scale, axis=0).repeat(scale, axis=1)
            out[y0:y0 + layout.frame_h, x0:x0 + layout.frame_w] = big
        _put_text(out, f"t={t}", 0, layout.width, layout.height - layout.bar_h, layout)
        return out

    # Context phase: every panel shows the same real frame.
    t, last_ctx = 0, first
    frame = first
    while True:
        yield render(t, [(frame, CONTEXT_COLOR)] * n_panels)
        last_ctx, t = frame, t + 1
        try:
            frame = _check_frame(next(ctx_iter), f"context frame {t}", size)
        except StopIteration:
            break

    # Future phase: one step per frame of the longest column; exhausted columns hold.
    iters = [iter(c) for c in columns]
    held: list[np.ndarray | None] = [None] * len(columns)
    step = 0
    while iters:
        advanced = False
        for j, it in enumerate(iters):
            try:
                held[j] = _check_frame(next(it), f"{captions[j + 1]!r} frame {step}", size)
                advanced = True
            except StopIteration:
                if held[j] is None:
                    raise DataFormatError(f"column {captions[j + 1]!r} has no frames",
                                          "every column needs at least one frame") from None
        if not advanced:
            return
        yield render(t, [(last_ctx, HELD_COLOR)] + list(zip(held, colors)))
        t, step = t + 1, step + 1


def write_composite(path, context, ground_truth=None, predictions: Mapping[str, Iterable] | None = None,
                    fps: float = 10, *, scale: int = 1, border: int = 2, overwrite: bool = True) -> Path:
    """Write the comparison video ``context | ground truth | predictions...`` to ``path``.

    The format follows the suffix as in :class:`vpcli.io.video.VideoWriter` (``.mp4`` H.264,
    ``.gif``). ``predictions`` maps a caption (method or sample name) to its frames. The write
    is atomic: on any error nothing is left at ``path``.
    """
    from vpcli.io.video import VideoWriter  # PyAV-backed writer, imported when needed

    columns: list[Iterable] = []
    captions = ["context"]
    colors: list[Color] = []
    if ground_truth is not None:
        columns.append(ground_truth)
        captions.append("ground truth")
        colors.append(TRUTH_COLOR)
    for name, frames in (predictions or {}).items():
        columns.append(frames)
        captions.append(str(name))
        colors.append(PREDICTION_COLOR)
    frames = composite_frames(context, columns, captions=captions, scale=scale, border=border, column_colors=colors)
    with VideoWriter(path, fps=fps, overwrite=overwrite) as writer:
        for f in frames:
            writer.write(f)
    return Path(path)


__all__ = [
    "CompositeLayout", "composite_layout", "composite_frames", "write_composite",
    "CONTEXT_COLOR", "HELD_COLOR", "PREDICTION_COLOR", "TRUTH_COLOR", "BACKGROUND",
]

"""Video input/output: video files (PyAV), folders of image frames, and animated GIFs.

Frames at this boundary are ``uint8`` numpy arrays of shape ``(H, W, 3)`` in RGB order; a clip is
``(T, H, W, 3)``. Readers stream (one decoded frame at a time) and writers encode one frame at a
time, so memory does not grow with the length of a clip except in :func:`read_video`, which
returns the whole selection as one preallocated array.

Every failure is a :class:`vpcli.errors.VpcliError` with a one-line hint; PyAV exceptions are
wrapped and never escape. Writes are atomic: a writer encodes into a hidden temporary beside the
final path and renames it on a successful close (see :mod:`vpcli.io.atomic`).
"""
from __future__ import annotations

import contextlib
import math
import numbers
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter
from PIL import Image

from vpcli.errors import (
    DataFormatError,
    InputError,
    OutputError,
    UsageError,
    VideoError,
)
from vpcli.io.atomic import check_not_a_folder, check_overwrite, check_writable_dir, publish, temp_name
from vpcli.io.paths import natural_key

__all__ = [
    "VIDEO_EXTS", "IMAGE_EXTS", "FOLDER_FPS", "VideoInfo", "VideoWriter", "TruncatedVideoWarning",
    "is_video_file", "is_frame_folder", "is_greyscale", "probe", "iter_frames", "read_video", "write_video",
]


class TruncatedVideoWarning(UserWarning):
    """A video decoded fewer frames than its container declares, and the caller accepted that."""


VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
GIF_EXTS = (".gif",)
# A folder of frames carries no frame rate; this is the rate probe() reports for one.
FOLDER_FPS = 25.0

# Suffix -> (container format, family) for VideoWriter; "" (no suffix) is a PNG folder.
_WRITE_FORMATS = {
    ".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi", ".gif": "gif",
}
_READ_HINT = "the file may be damaged, truncated or not a video: check it with ffprobe, or re-encode it with ffmpeg"


# --------------------------------------------------------------------------------------------
# Paths


def is_greyscale(frames: np.ndarray, tolerance: int = 1) -> bool:
    """True when ``frames`` (``uint8 (..., H, W, C)``) have one channel, or R, G and B agree (within
    ``tolerance``, for lossy codecs) in every frame."""
    if frames.shape[-1] == 1:
        return True
    f = frames.astype(np.int16)
    return bool(np.abs(f[..., 0] - f[..., 1]).max() <= tolerance and np.abs(f[..., 0] - f[..., 2]).max() <= tolerance)


def is_video_file(path: str | os.PathLike) -> bool:
    """True for an existing file whose suffix is a video (``VIDEO_EXTS``) or animated GIF."""
    p = Path(path)
    return p.suffix.lower() in VIDEO_EXTS + GIF_EXTS and p.is_file()


def _is_image_name(name: str) -> bool:
    # Hidden files are skipped: they include our own in-progress temporaries.
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTS


def is_frame_folder(path: str | os.PathLike) -> bool:
    """True for a folder that holds at least one image file (``IMAGE_EXTS``), not recursive."""
    try:
        with os.scandir(path) as it:
            return any(e.is_file() and _is_image_name(e.name) for e in it)
    except OSError:  # not a folder, or unreadable
        return False


def _frame_files(folder: Path) -> list[Path]:
    try:
        names = [e.name for e in os.scandir(folder) if e.is_file() and _is_image_name(e.name)]
    except OSError as e:
        raise InputError(f"cannot list folder {folder}: {e.strerror}", "check the path and its permissions") from None
    if not names:
        raise VideoError(f"frame folder {folder} holds no image files",
                         f"put frames such as 00000.png in it (readable: {' '.join(IMAGE_EXTS)})")
    return [folder / n for n in sorted(names, key=natural_key)]


def _existing(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p} does not exist", "check the path (a video file, GIF, or folder of frames)")
    return p


# --------------------------------------------------------------------------------------------
# Probe


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` learns without decoding. ``kind`` is ``'video'``, ``'frames'`` or ``'gif'``."""

    path: Path
    kind: str
    width: int
    height: int
    num_frames: int
    fps: float
    codec: str

    @property
    def duration(self) -> float:
        """Length in seconds (``num_frames / fps``)."""
        return self.num_frames / self.fps


def _av_reason(e: Exception) -> str:
    return getattr(e, "strerror", None) or str(e)


def _open_video(path: Path):
    """Open a container for reading; return (container, first video stream) or raise VideoError."""
    try:
        container = av.open(str(path), metadata_errors="replace")
    except av.FFmpegError as e:
        raise VideoError(f"cannot decode {path}: {_av_reason(e)}", _READ_HINT) from None
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror or e}", "check the file's permissions") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path} has no video stream (0 frames)", "pass a file that contains video")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame + slice threads: several times faster on long-GOP codecs
    return container, stream


def _stream_fps(stream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and rate > 0:
            return float(rate)
    return FOLDER_FPS


def _count_packets(container, stream, path: Path) -> int:
    # Some containers (Matroska/WebM, GIF) do not store a frame count. Demuxing reads the
    # packet index without decoding; one packet holds one frame for the codecs we meet.
    n = 0
    try:
        for packet in container.demux(stream):
            if packet.size:  # the final flush packet is empty
                n += 1
    except av.FFmpegError as e:
        raise VideoError(f"cannot read {path} after {n} packets: {_av_reason(e)}", _READ_HINT) from None
    return n


def probe(path: str | os.PathLike) -> VideoInfo:
    """Describe a video file, animated GIF or frame folder without decoding its frames.

    ``num_frames`` is exact: the container's frame count when it records one, otherwise a count
    of demuxed packets. Raises :class:`VideoError` for unreadable inputs and for zero frames.
    """
    path = _existing(path)
    if path.is_dir():
        files = _frame_files(path)
        try:
            with Image.open(files[0]) as im:  # reads the header only
                width, height, codec = im.width, im.height, (im.format or files[0].suffix[1:]).lower()
        except (OSError, Image.DecompressionBombError) as e:
            raise VideoError(f"cannot decode image {files[0]}: {e}", "replace or remove that file") from None
        return VideoInfo(path, "frames", width, height, len(files), FOLDER_FPS, codec)

    container, stream = _open_video(path)
    with container:
        ctx = stream.codec_context
        kind = "gif" if container.format.name == "gif" else "video"
        num_frames = stream.frames or _count_packets(container, stream, path)
        info = VideoInfo(path, kind, ctx.width, ctx.height, num_frames, _stream_fps(stream), ctx.name)
    if info.num_frames == 0:
        raise VideoError(f"{path} has no frames", "pass a video that contains at least one frame")
    if info.width <= 0 or info.height <= 0:
        raise VideoError(f"cannot read the frame size of {path}", _READ_HINT)
    return info


# --------------------------------------------------------------------------------------------
# Reading


def _check_range(start, end, stride) -> None:
    def is_int(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if not is_int(start) or start < 0:
        raise UsageError(f"start must be an integer >= 0, got {start!r}", "frames are counted from 0")
    if end is not None and (not is_int(end) or end <= start):
        raise UsageError(f"end must be an integer > start={start}, got {end!r}",
                         "end is exclusive, like a Python slice; omit it to read to the last frame")
    if not is_int(stride) or stride < 1:
        raise UsageError(f"stride must be an integer >= 1, got {stride!r}", "stride=2 keeps every other frame")


def _check_size(size) -> tuple[int, int] | None:
    if size is None:
        return None
    try:
        h, w = (int(s) for s in size)
        ok = (h, w) == tuple(size) and h > 0 and w > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise UsageError(f"size must be (height, width) with positive integers, got {size!r}",
                         "for example size=(64, 64)")
    return h, w


def _resize(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    if size is None or size == frame.shape[:2]:
        return frame
    h, w = size
    # INTER_AREA averages source pixels (no aliasing) when shrinking; it is not meant for enlarging.
    shrink = h <= frame.shape[0] and w <= frame.shape[1]
    return cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def truncation_slack(declared: int) -> int:
    """How many frames decoding may fall short of a declared count before the file counts as cut.

    An MP4/MOV sample table is exact, but other headers (AVI's stream length, for one) may count a
    frame or two that no decoder returns (dropped-frame placeholders, an edit list); a file cut
    by a stopped download or copy loses far more. One frame per 100, at least one, is tolerated
    with a warning.
    """
    return max(1, declared // 100)


def _check_decoded(path: Path, have: int, declared: int, *, allow_truncated: bool) -> None:
    """After reading a stream to its end: compare the frames decoded with the container's count.

    ``declared`` 0 means the container does not say (Matroska, WebM, GIF, MPEG-TS): nothing to
    compare. A clear shortfall is a VideoError unless ``allow_truncated``; then, and for a
    shortfall within :func:`truncation_slack`, a :class:`TruncatedVideoWarning`.
    """
    if not declared or have >= declared:
        return
    what = f"{path}: decoded {have} of the {declared} frames the container declares"
    if allow_truncated or declared - have <= truncation_slack(declared):
        warnings.warn(f"{what}; using the {have} that decode", TruncatedVideoWarning, stacklevel=3)
        return
    raise VideoError(f"{what} (the file is truncated or damaged)",
                     "download or copy it again; to keep only the frames that decode, re-encode it "
                     "(e.g. ffmpeg -i IN -c:v libx264 OUT.mp4)")


def _truncated(have: int, declared: int) -> str:
    return f" (its header declares {declared}: truncated?)" if declared > have else ""


def _too_short(path: Path, have: int, start: int, end: int, stride: int, declared: int = 0) -> VideoError:
    want = f"[{start}:{end}]" if stride == 1 else f"[{start}:{end}:{stride}]"
    return VideoError(f"{path} has {have} frames{_truncated(have, declared)} but frames {want} were asked for",
                      f"use end <= {have}, or omit end to read to the last frame")


def _start_past_end(path: Path, have: int, start: int) -> VideoError:
    return VideoError(f"{path} has {have} frames but start={start}", f"use start < {have}")


def _read_image(file: Path) -> np.ndarray:
    # imdecode(fromfile) copes with any path encoding. IMREAD_COLOR turns grey, palette, RGBA and
    # 16-bit images into 8-bit 3-channel; orientation is ignored so sizes match Image.open (probe).
    try:
        data = np.fromfile(file, dtype=np.uint8)
    except OSError as e:
        raise InputError(f"cannot read {file}: {e.strerror}", "check the file's permissions") from None
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION) if data.size else None
    if bgr is None:
        raise VideoError(f"cannot decode image {file}", "replace or remove that file")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _iter_folder(files: list[Path], start, end, stride, size) -> Iterator[np.ndarray]:
    first_shape = None
    for file in files[start:end:stride]:  # only the selected files are ever decoded
        frame = _read_image(file)
        if first_shape is None:
            first_shape = frame.shape
        elif frame.shape != first_shape:
            raise VideoError(f"{file} is {frame.shape[1]}x{frame.shape[0]} but earlier frames are "
                             f"{first_shape[1]}x{first_shape[0]}", "all frames in a folder must have one size")
        yield _resize(frame, size)


def _iter_container(container, stream, path: Path, start, end, stride, size,
                    allow_truncated: bool = False) -> Iterator[np.ndarray]:
    # The container closes when the iteration finishes, fails, or is abandoned part-way
    # (generator close); a generator that never started leaves it to PyAV's own finaliser.
    with container:
        # One reformatter for the whole stream reuses its swscale context; frame.to_ndarray(format=)
        # would build a new one for every frame (measured ~2x slower on 640x272).
        to_rgb = VideoReformatter()
        last = None if end is None else start + (end - 1 - start) // stride * stride
        i = -1
        try:
            for i, frame in enumerate(container.decode(stream)):
                if i < start or (i - start) % stride:
                    continue  # decoded (later frames depend on it) but never converted
                rgb = to_rgb.reformat(frame, format="rgb24").to_ndarray()
                yield _resize(np.ascontiguousarray(rgb), size)  # rows can be padded: make it dense
                if i == last:
                    return  # stop decoding as soon as the range is done
        except av.FFmpegError as e:
            raise VideoError(f"cannot decode {path} at frame {i + 1}: {_av_reason(e)}", _READ_HINT) from None
        have, declared = i + 1, stream.frames
        if have == 0:
            raise VideoError(f"{path} has no frames{_truncated(have, declared)}", _READ_HINT)
        if end is not None:
            raise _too_short(path, have, start, end, stride, declared)
        # The whole stream was read: every frame the container declares must have decoded.
        _check_decoded(path, have, declared, allow_truncated=allow_truncated)
        if start >= have:
            raise _start_past_end(path, have, start)


def iter_frames(path: str | os.PathLike, *, start: int = 0, end: int | None = None, stride: int = 1,
                size: tuple[int, int] | None = None, allow_truncated: bool = False) -> Iterator[np.ndarray]:
    """Stream frames ``[start:end:stride]`` as ``uint8 (H, W, 3)`` RGB arrays.

    ``path`` is a video file (anything FFmpeg reads), an animated GIF, or a folder of images
    (natural order: ``frame2`` before ``frame10``; grey/RGBA/16-bit converted to 8-bit RGB).
    Frames before ``start`` and between strides are decoded (video codecs need them) but not
    converted; decoding stops once ``end`` is reached. ``size=(H, W)`` resizes each frame with
    OpenCV (``INTER_AREA`` when neither side grows, else ``INTER_LINEAR``).

    Argument errors and unreadable inputs raise at the call; a clip that turns out to be shorter
    than ``end`` (when the container does not record its length) raises :class:`VideoError` after
    the frames it does have.

    Read to its end, a file whose container declares more frames than decode (a cut download)
    raises :class:`VideoError` naming both counts, after the frames it does have, so that no
    command silently processes part of a clip. ``allow_truncated=True`` keeps those frames and
    emits a :class:`TruncatedVideoWarning` instead. A container that declares no count is taken
    as it decodes.
    """
    path = _existing(path)
    _check_range(start, end, stride)
    size = _check_size(size)
    if path.is_dir():
        files = _frame_files(path)
        if end is not None and end > len(files):
            raise _too_short(path, len(files), start, end, stride)
        if start >= len(files):
            raise _start_past_end(path, len(files), start)
        return _iter_folder(files, start, end, stride, size)
    container, stream = _open_video(path)
    declared = stream.frames  # 0 when the container does not say
    if declared and end is not None and end > declared:
        container.close()
        raise _too_short(path, declared, start, end, stride)
    return _iter_container(container, stream, path, start, end, stride, size, allow_truncated)


def read_video(path: str | os.PathLike, *, start: int = 0, end: int | None = None, stride: int = 1,
               size: tuple[int, int] | None = None, allow_truncated: bool = False) -> tuple[np.ndarray, float]:
    """Read frames ``[start:end:stride]`` into one ``uint8 (T, H, W, 3)`` array; return it and the fps.

    The array is allocated once from :func:`probe`'s frame count (no list-then-stack copy). Asking
    for ``end`` beyond the last frame raises :class:`VideoError` with both counts. Without ``end``,
    a damaged file that decodes fewer frames than its header declares raises too, unless
    ``allow_truncated`` (then it returns the frames that decode, with a warning; see
    :func:`iter_frames`).
    """
    _check_range(start, end, stride)
    size = _check_size(size)
    info = probe(path)
    n = info.num_frames
    if end is not None and end > n:
        raise _too_short(info.path, n, start, end, stride)
    if start >= n:
        raise _start_past_end(info.path, n, start)
    height, width = size or (info.height, info.width)
    out = np.empty((len(range(start, min(end or n, n), stride)), height, width, 3), np.uint8)
    extra: list[np.ndarray] = []  # only if the header undercounted (rare, damaged files)
    t = -1
    with contextlib.closing(iter_frames(info.path, start=start, end=end, stride=stride, size=size,
                                        allow_truncated=allow_truncated)) as frames:
        for t, frame in enumerate(frames):
            if frame.shape != out.shape[1:]:
                raise VideoError(f"frame {start + t * stride} of {info.path} is {frame.shape[0]}x{frame.shape[1]}"
                                 f", the first is {height}x{width} (HxW)", "pass size=(H, W) to resize every frame")
            if t < len(out):
                out[t] = frame
            else:
                extra.append(frame)
    got = t + 1
    if extra:
        out = np.concatenate([out, np.stack(extra)])
    elif got < len(out):
        out = out[:got]  # a view: the tail of the buffer is unused, not copied
    return out, info.fps


# --------------------------------------------------------------------------------------------
# Writing


def _as_rgb_frame(frame, index: int) -> np.ndarray:
    arr = np.asarray(frame)
    if arr.dtype != np.uint8:
        # Refused rather than guessed: float frames may be in [0, 1] or [0, 255].
        raise DataFormatError(f"frame {index} has dtype {arr.dtype}, expected uint8",
                              "convert first, e.g. (np.clip(x, 0, 1) * 255).round().astype(np.uint8)")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:  # greyscale -> RGB
        return cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_GRAY2RGB)
    if arr.ndim != 3 or arr.shape[2] != 3 or 0 in arr.shape:
        raise DataFormatError(f"frame {index} has shape {arr.shape}, expected (H, W, 3) RGB",
                              "pass (H, W, 3) RGB, or (H, W) / (H, W, 1) greyscale frames")
    return np.ascontiguousarray(arr)


def _pal8_frame(rgb: np.ndarray) -> av.VideoFrame:
    """Palette-encode one RGB frame for the GIF encoder, with a palette of its own.

    Pillow's median cut keeps every colour of a frame with at most 256 of them (exact round trip,
    pinned by a test) and picks 256 representative colours otherwise.
    """
    quantized = Image.fromarray(rgb).quantize(256)
    palette = np.array(quantized.getpalette()[: 3 * 256], np.uint8).reshape(-1, 3)
    argb = np.zeros((256, 4), np.uint8)  # PyAV wants 256 ARGB entries; unused ones stay black
    argb[:, 0] = 255
    argb[: len(palette), 1:] = palette
    return av.VideoFrame.from_ndarray((np.asarray(quantized), argb), format="pal8")


# x264's default look-ahead (40 frames at preset medium) holds ~290 bytes per pixel per open
# stream, and `vpcli predict` keeps several streams per sample open for the whole run. 10 frames
# halve that (151 B/px) with the same file size and PSNR (568 vs 567 KiB, 37.31 vs 37.30 dB on a
# 60-frame 256x512 synth-street clip at crf 18; each setting in its own process, peak RSS growth).
X264_MEMORY = {"rc-lookahead": "10"}


class VideoWriter:
    """Write frames one at a time to a video file, an animated GIF, or a folder of PNGs.

    The format follows the suffix of ``path``:

    - ``.mp4 .m4v .mov .mkv .avi``: H.264 (libx264, yuv420p, ``crf``). yuv420p needs an even
      width and height, so an odd-sized clip is written as yuv444p (H.264 High 4:4:4) instead:
      it comes back at its exact size (ffmpeg, VLC and mpv play it; some browsers do not).
      ``lossless=True`` uses libx264rgb with ``qp=0`` instead: RGB is stored exactly, any size,
      larger files, fewer players.
    - ``.gif``: looping animated GIF with a palette per frame (exact for frames with at most 256
      colours, median-cut quantised otherwise). GIF stores delays in 1/100 s, so fps is rounded.
    - no suffix: a folder of ``00000.png, 00001.png, ...`` (always lossless).

    Frames are ``uint8`` ``(H, W, 3)`` RGB, or ``(H, W)`` / ``(H, W, 1)`` greyscale (expanded to
    RGB); every frame must have the first frame's size. Other dtypes are refused, not rescaled.

    Output goes to a hidden temporary beside ``path`` and is renamed on :meth:`close`. If the
    ``with`` block raises, a :meth:`write` fails, or the writer is dropped unclosed, the
    temporary is removed and nothing appears at ``path``. Closing with no frames written raises
    :class:`OutputError`.
    """

    def __init__(self, path: str | os.PathLike, fps: float = 25.0, *, lossless: bool = False,
                 crf: int = 18, overwrite: bool = True):
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix and suffix not in _WRITE_FORMATS:
            raise UsageError(f"cannot write {suffix} files ({self.path})",
                             f"use one of {' '.join(_WRITE_FORMATS)}, or a path without suffix for a PNG folder")
        if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not 0 < fps < math.inf:
            raise UsageError(f"fps must be a positive number, got {fps!r}", "for example fps=25")
        if isinstance(crf, bool) or not isinstance(crf, numbers.Integral) or not 0 <= crf <= 51:
            raise UsageError(f"crf must be an integer in 0..51, got {crf!r}",
                             "18 looks lossless to most eyes; lower is better")
        if lossless and suffix == ".gif":
            raise UsageError(f"a GIF cannot be lossless ({self.path}): it holds at most 256 colours per frame",
                             "use .mkv/.mp4 with lossless=True, or a path without suffix for PNG frames")
        self.fps = fps
        self.overwrite = overwrite
        self.lossless = lossless
        self.crf = crf
        self.kind = "frames" if not suffix else "gif" if suffix == ".gif" else "video"
        self._format = _WRITE_FORMATS.get(suffix)
        # Exact rate for NTSC-style floats: 29.97002997 -> 30000/1001.
        self._rate = fps if isinstance(fps, Fraction) else Fraction(float(fps)).limit_denominator(1001)
        self._container = None
        self._stream = None
        self._shape: tuple[int, ...] | None = None
        self.frames_written = 0

        check_writable_dir(self.path.parent)
        if self.kind != "frames":
            check_not_a_folder(self.path)
        check_overwrite(self.path, overwrite)
        try:
            if self.kind == "frames":
                self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".part", dir=self.path.parent))
            else:
                self._tmp = temp_name(self.path)
        except OSError as e:
            raise OutputError(f"cannot write in {self.path.parent}: {e.strerror or e}",
                              "choose a folder you can write to with --out") from None
        self._open = True

    # -- context manager ------------------------------------------------------------------
    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort()

    def __del__(self):
        # An unclosed writer must not leave its temporary behind.
        with contextlib.suppress(Exception):
            self._abort()

    # -- writing --------------------------------------------------------------------------
    def write(self, frame: np.ndarray) -> None:
        """Encode one frame. On any error the writer is aborted (nothing is left at ``path``)."""
        if not getattr(self, "_open", False):
            raise OutputError(f"writer for {self.path} is closed", "create a new VideoWriter")
        try:
            self._write(_as_rgb_frame(frame, self.frames_written))
        except BaseException:
            self._abort()
            raise
        self.frames_written += 1

    def _write(self, rgb: np.ndarray) -> None:
        index = self.frames_written
        if self._shape is None:
            self._shape = rgb.shape
            self._start(rgb.shape[0], rgb.shape[1])
        elif rgb.shape != self._shape:
            h, w = self._shape[:2]
            raise DataFormatError(f"frame {index} is {rgb.shape[0]}x{rgb.shape[1]} (HxW) but frame 0 was {h}x{w}",
                                  "all frames of one video must have the same size")
        if self.kind == "frames":
            ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            if not ok:
                raise OutputError(f"cannot encode frame {index} as PNG", "check the frame data")
            try:
                (self._tmp / f"{index:05d}.png").write_bytes(png.tobytes())
            except OSError as e:
                raise OutputError(f"cannot write frame {index} to {self.path}: {e.strerror}",
                                  "check free disk space and permissions") from None
            return
        if self.kind == "gif":
            vframe = _pal8_frame(rgb)
        else:
            vframe = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        vframe.pts = index
        self._encode(vframe, index)

    def _start(self, height: int, width: int) -> None:
        if self.kind == "frames":
            return
        if self.kind == "gif":
            codec, pix_fmt, options = "gif", "pal8", {}
        elif self.lossless:
            codec, pix_fmt, options = "libx264rgb", "rgb24", {"qp": "0", **X264_MEMORY}
        else:
            # yuv420p subsamples chroma 2x2: an odd size keeps full chroma, so it is stored exactly
            pix_fmt = "yuv444p" if height % 2 or width % 2 else "yuv420p"
            codec, options = "libx264", {"crf": str(int(self.crf)), **X264_MEMORY}
        try:
            self._container = av.open(str(self._tmp), "w", format=self._format)
            stream = self._container.add_stream(codec, rate=self._rate, options=options)
            stream.width, stream.height = width, height
            stream.pix_fmt = pix_fmt
            stream.codec_context.time_base = 1 / self._rate  # pts counts frames
        except av.FFmpegError as e:
            raise OutputError(f"cannot start {codec} encoding to {self.path}: {_av_reason(e)}",
                              "check that this FFmpeg build has the encoder") from None
        self._stream = stream

    def _encode(self, vframe: av.VideoFrame | None, index: int) -> None:
        """Encode one frame (None flushes the encoder) and mux the packets it produces."""
        try:
            self._container.mux(self._stream.encode(vframe))
        except av.FFmpegError as e:
            raise OutputError(f"cannot encode frame {index} to {self.path}: {_av_reason(e)}",
                              "check free disk space and the frame data") from None

    # -- finishing ------------------------------------------------------------------------
    def close(self) -> Path:
        """Flush the encoder and move the output to its final path; return that path."""
        if not getattr(self, "_open", False):
            return self.path
        try:
            if self.frames_written == 0:
                raise OutputError(f"no frames were written to {self.path}", "write at least one frame before closing")
            if self._container is not None:
                self._encode(None, self.frames_written)  # flush the frames the encoder still holds
                try:
                    self._container.close()
                except av.FFmpegError as e:
                    raise OutputError(f"cannot finish {self.path}: {_av_reason(e)}", "check free disk space") from None
                self._container = None
            self._publish()
        except BaseException:
            self._abort()
            raise
        self._open = False
        return self.path

    def _publish(self) -> None:
        publish(self._tmp, self.path, self.overwrite)

    def _abort(self) -> None:
        """Drop everything written so far; nothing is left at the final path."""
        if not getattr(self, "_open", False):
            return
        self._open = False
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.close()
            self._container = None
        if self._tmp.is_dir():
            shutil.rmtree(self._tmp, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                self._tmp.unlink()


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray] | np.ndarray, fps: float = 25.0, *,
                lossless: bool = False, crf: int = 18, overwrite: bool = True) -> Path:
    """Write an iterable of frames (or a ``(T, H, W, C)`` array) with :class:`VideoWriter`; return the path."""
    if isinstance(frames, np.ndarray) and frames.ndim != 4:
        raise DataFormatError(f"a frames array must be (T, H, W, 3), got shape {frames.shape}",
                              "for one frame use frames[None]; for greyscale use frames[..., None]")
    with VideoWriter(path, fps, lossless=lossless, crf=crf, overwrite=overwrite) as writer:
        for frame in frames:
            writer.write(frame)
    return writer.path

"""Library functions behind the CLI: segment, estimate_flow, predict, train, evaluate.

Each function takes plain Python values and returns plain records; the CLI only parses and
renders. Engines that are not in this build yet raise :class:`NotAvailableError` (exit code 2)
naming what is missing, instead of producing pretend output.
"""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

from vpcli import __version__
from vpcli.errors import NotAvailableError, UsageError


def _missing(command: str, what: str) -> NotAvailableError:
    return NotAvailableError(f"vpcli {command}: {what} is not implemented in vpcli yet",
                             "see README.md 'Status' for what this build can do")


def segment(*args: Any, **kwargs: Any):
    raise _missing("segment", "the DeepLabV3+ segmentation engine")


def estimate_flow(*args: Any, **kwargs: Any):
    raise _missing("flow", "the optical-flow engine (DIS, Farneback, PWC-Net)")


def predict(*args: Any, **kwargs: Any):
    raise _missing("predict", "the prediction engine (SLAMP, HVP, SADM, LMVP predictors)")


def train(*args: Any, **kwargs: Any):
    raise _missing("train", "the training engine")


def evaluate(*args: Any, **kwargs: Any):
    raise _missing("eval", "the evaluation engine (PSNR, SSIM, MS-SSIM, LPIPS, FVD, mIoU)")


# --- inputs -----------------------------------------------------------------------------------
def collect_inputs(specs: list[str], *, recursive: bool = False,
                   shard: tuple[int, int] | None = None) -> list[tuple[Path, str]]:
    """Expand input specs and give each a stable output name, then keep shard K of N.

    Names are computed on the full list before sharding, so two shards never pick one name.
    """
    from vpcli.io.sources import expand_inputs, input_names, shard as take_shard
    paths = expand_inputs(specs, recursive=recursive)
    pairs = list(zip(paths, input_names(paths)))
    if shard is not None:
        pairs = take_shard(pairs, *shard) if len(pairs) else pairs
    return pairs


def display_path(path: Path) -> str:
    """A path relative to the working folder when it is inside it (shorter in tables)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def run_meta(**fields: Any) -> dict[str, Any]:
    """The common part of every output folder's meta.json."""
    return {"vpcli": __version__, "python": platform.python_version(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **fields}


def write_meta(folder: Path, meta: dict[str, Any]) -> None:
    from vpcli.io.atomic import write_text
    write_text(folder / "meta.json", json.dumps(meta, indent=2, default=str) + "\n")


# --- data tools -------------------------------------------------------------------------------
def video_info(path: Path) -> dict[str, Any]:
    """Frames, size, fps and codec of one clip (video file, GIF or frame folder), without decoding."""
    from vpcli.io.video import probe
    info = probe(path)
    return {"kind": info.kind, "frames": info.num_frames, "width": info.width, "height": info.height,
            "fps": round(info.fps, 3), "codec": info.codec, "seconds": round(info.duration, 3)}


def parse_size(text: str | None) -> tuple[int, int] | None:
    """``"64x128"`` (H x W) -> (64, 128)."""
    if text is None:
        return None
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"size must be HxW like 128x256, got {text!r}") from None
    if h < 1 or w < 1:
        raise UsageError(f"size must be positive, got {text!r}")
    return h, w


CONVERT_FORMATS = {"mp4": "video.mp4", "mkv": "video.mkv", "gif": "video.gif", "png": "frames"}


def convert(path: Path, out_dir: Path, *, fmt: str = "mp4", lossless: bool = False, fps: float | None = None,
            start: int = 0, end: int | None = None, stride: int = 1, size: str | None = None,
            overwrite: bool = False) -> dict[str, Any]:
    """Re-encode one clip into ``out_dir`` (``video.mp4``/``video.mkv``/``video.gif`` or PNG
    ``frames/``) plus ``meta.json``, streaming frame by frame. Nothing is left on failure."""
    from vpcli.io.atomic import atomic_dir
    from vpcli.io.video import VideoWriter, iter_frames, probe
    if fmt not in CONVERT_FORMATS:
        raise UsageError(f"unknown format {fmt!r}", f"choose one of {', '.join(CONVERT_FORMATS)}")
    info = probe(path)
    t0 = time.perf_counter()
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        target = tmp / CONVERT_FORMATS[fmt]
        out_fps = fps or info.fps / stride
        with VideoWriter(target, out_fps, lossless=lossless) as writer:
            for frame in iter_frames(path, start=start, end=end, stride=stride, size=parse_size(size)):
                writer.write(frame)
        record = {"output": str(out_dir / CONVERT_FORMATS[fmt]), "frames": writer.frames_written,
                  "fps": out_fps}
        write_meta(tmp, run_meta(command="data convert", input=str(path), format=fmt, lossless=lossless,
                                 start=start, end=end, stride=stride, size=size, source=video_info(path),
                                 seconds=round(time.perf_counter() - t0, 3), **record))
    return record

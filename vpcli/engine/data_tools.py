"""The engine behind `vpcli data info | convert | split`: describe, re-encode and split clips.

Nothing here prints; every function returns JSON-able records.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vpcli.engine.options import InputOptions
from vpcli.errors import UsageError
from vpcli.io.runmeta import run_meta, video_info, write_meta
from vpcli.io.sources import check_positive_int, collect_inputs, parse_shard, parse_size

__all__ = ["CONVERT_FORMATS", "ConvertOptions", "convert", "convert_clip", "data_info", "data_split"]

# --format -> what a converted clip's folder holds
CONVERT_FORMATS = {"mp4": "video.mp4", "mkv": "video.mkv", "gif": "video.gif", "png": "frames"}
ForEach = Callable[[list, Callable[[Any], dict[str, Any]]], Any]
Callback = Callable[[str, dict[str, Any]], None]


def _run_all(items: list, fn: Callable[[Any], dict[str, Any]]) -> list[dict[str, Any]]:
    return [fn(item) for item in items]  # raise on the first failure


def data_info(inputs: Sequence[str | os.PathLike], *, recursive: bool = False,
              shard: str | tuple[int, int] | None = None, for_each: ForEach | None = None) -> Any:
    """:func:`vpcli.io.runmeta.video_info` of every input; ``for_each(items, fn)`` runs ``fn`` over
    the ``(path, name)`` items (default: in order, raising the first error, returning the records)."""
    items = collect_inputs(list(inputs), recursive=recursive, shard=parse_shard(shard))
    return (for_each or _run_all)(items, lambda item: video_info(item[0]))


@dataclass(frozen=True, kw_only=True)
class ConvertOptions(InputOptions):
    """Every option of `vpcli data convert` (inputs and output folder aside), checked on construction.

    ``size`` may be given as ``"HxW"``; it is stored as the pair ``(H, W)``.
    ``fps=None`` keeps the input's rate divided by ``stride``; ``end`` is exclusive.
    """

    format: str = "mp4"
    lossless: bool = False
    fps: float | None = None
    start: int = 0
    end: int | None = None
    stride: int = 1
    size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.format not in CONVERT_FORMATS:
            raise UsageError(f"unknown --format {self.format!r}", f"choose one of {', '.join(CONVERT_FORMATS)}")
        if self.fps is not None and (isinstance(self.fps, bool) or not isinstance(self.fps, (int, float))
                                     or not self.fps > 0):
            raise UsageError(f"--fps must be a positive number, got {self.fps!r}", "e.g. --fps 25, or omit it")
        if isinstance(self.start, bool) or not isinstance(self.start, int) or self.start < 0:
            raise UsageError(f"--start must be an integer >= 0, got {self.start!r}", "frames count from 0")
        if self.end is not None and (isinstance(self.end, bool) or not isinstance(self.end, int)
                                     or self.end <= self.start):
            raise UsageError(f"--end must be an integer after --start {self.start}, got {self.end!r}",
                             f"--end is exclusive: pass --end {self.start + 1} or more, or omit it for the whole clip")
        check_positive_int(self.stride, "--stride")
        object.__setattr__(self, "size", parse_size(self.size))  # frozen: normalise once, here


def convert_clip(path: Path, out_dir: Path, options: ConvertOptions | None = None, *,
                 callback: Callback | None = None) -> dict[str, Any]:
    """Re-encode one clip into ``out_dir`` (``video.mp4``/``video.mkv``/``video.gif`` or PNG
    ``frames/``) plus ``meta.json``, streaming frame by frame. Nothing is left on failure.

    ``callback(event, record)`` gets ``input`` (with the ``frames`` expected), ``progress`` after
    each frame and ``done``."""
    from vpcli.io.atomic import atomic_dir
    from vpcli.io.video import VideoWriter, iter_frames, probe
    o = options if options is not None else ConvertOptions()
    info = probe(path)
    t0 = time.perf_counter()
    expected = len(range(o.start, info.num_frames if o.end is None else min(o.end, info.num_frames), o.stride))
    if callback:
        callback("input", {"input": str(path), "out": str(out_dir), "frames": expected})
    with atomic_dir(out_dir, overwrite=o.overwrite) as tmp:
        target = tmp / CONVERT_FORMATS[o.format]
        out_fps = o.fps or info.fps / o.stride
        with VideoWriter(target, out_fps, lossless=o.lossless) as writer:
            for frame in iter_frames(path, start=o.start, end=o.end, stride=o.stride, size=o.size):
                writer.write(frame)
                if callback:
                    callback("progress", {"input": str(path), "done": writer.frames_written, "total": expected})
        record = {"output": str(out_dir / CONVERT_FORMATS[o.format]), "frames": writer.frames_written,
                  "fps": out_fps}
        size = None if o.size is None else f"{o.size[0]}x{o.size[1]}"
        write_meta(tmp, run_meta(command="data convert", input=str(path), format=o.format, lossless=o.lossless,
                                 start=o.start, end=o.end, stride=o.stride, size=size, source=video_info(path),
                                 seconds=round(time.perf_counter() - t0, 3), **record))
    if callback:
        callback("done", {"input": str(path), **record})
    return record


def convert(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, options: ConvertOptions | None = None, *,
            callback: Callback | None = None, for_each: ForEach | None = None) -> Any:
    """Re-encode every input into ``out/<name>/`` (see :func:`convert_clip`, also for ``callback``);
    ``for_each`` as in :func:`data_info`."""
    o = options if options is not None else ConvertOptions()
    items = collect_inputs(list(inputs), recursive=o.recursive, shard=o.shard)
    out = Path(out)
    return (for_each or _run_all)(items, lambda item: convert_clip(item[0], out / item[1], o, callback=callback))


def data_split(folder: Path, out: Path, fractions: str = "0.8,0.1,0.1", *, overwrite: bool = False) -> dict[str, Any]:
    """Write ``train.txt``, ``val.txt``, ``test.txt`` for the clips in ``folder`` into ``out``."""
    from vpcli.data.clips import assign_splits
    from vpcli.io.atomic import check_overwrite, write_text
    try:
        fr = [float(v) for v in fractions.split(",")]
    except ValueError:
        raise UsageError(f"--fractions expects three numbers like 0.8,0.1,0.1, got {fractions!r}",
                         "give the train,val,test shares separated by commas") from None
    splits = assign_splits(folder, fr)
    out = Path(out)
    for name in splits:  # check all three before writing any
        check_overwrite(out / f"{name}.txt", overwrite)
    for name, rels in splits.items():
        write_text(out / f"{name}.txt", "".join(f"{r}\n" for r in rels))
    return {"out": str(out), "counts": {k: len(v) for k, v in splits.items()}}

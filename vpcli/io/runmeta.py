"""The ``meta.json`` every output folder gets (DESIGN.md, Files): common fields and the write.

Lives in ``io`` so that engines (segment, flow, predict, eval, data tools, export) can record
their runs without importing the api layer above them.
"""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

from vpcli import __version__


def run_meta(**fields: Any) -> dict[str, Any]:
    """The common part of every output folder's meta.json (with the CPU threads torch used)."""
    import sys
    threads = sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None
    return {"vpcli": __version__, "python": platform.python_version(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "threads": threads, **fields}


def write_meta(folder: Path, meta: dict[str, Any]) -> None:
    """Write ``meta`` as ``folder/meta.json`` (atomically)."""
    from vpcli.io.atomic import write_text
    write_text(Path(folder) / "meta.json", json.dumps(meta, indent=2, default=str) + "\n")


def video_info(path: Path) -> dict[str, Any]:
    """Frames, size, fps and codec of one clip (video file, GIF or frame folder), without decoding."""
    from vpcli.io.video import probe
    info = probe(path)
    return {"kind": info.kind, "frames": info.num_frames, "width": info.width, "height": info.height,
            "fps": round(info.fps, 3), "codec": info.codec, "seconds": round(info.duration, 3)}


__all__ = ["run_meta", "write_meta", "video_info"]

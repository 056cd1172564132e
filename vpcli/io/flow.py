"""Optical flow on disk: Middlebury ``.flo`` files, ``.npz`` stacks, colour-wheel videos.

Flow is ``float32 (2, H, W)`` per frame, ``(u, v)`` in pixels, x right, y down (DESIGN.md).

``.flo`` layout (Middlebury, little-endian): the float32 magic 202021.25 (the bytes spell
"PIEH"), int32 width, int32 height, then ``H * W`` pairs of float32 ``(u, v)``, row-major.
The colour coding follows Baker et al., "A Database and Evaluation Methodology for Optical
Flow" (IJCV 2011) and its reference ``colorcode.cpp``: hue = direction, saturation = magnitude.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from vpcli.errors import DataFormatError, InputError
from vpcli.io.atomic import atomic_dir, atomic_path
from vpcli.io.sources import natural_key

FLO_MAGIC = 202021.25
_HEADER = np.dtype([("magic", "<f4"), ("width", "<i4"), ("height", "<i4")])
# Middlebury marks unknown flow with values above 1e9; we treat those (and NaN/inf) as unknown.
UNKNOWN_FLOW_THRESH = 1e9
# Dimensions beyond this are a corrupt header, not a real image (guards huge allocations).
_MAX_SIDE = 1 << 16


def _check_flow(flow, what: str = "flow") -> np.ndarray:
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[0] != 2:
        raise DataFormatError(f"{what} must have shape (2, H, W), got {tuple(flow.shape)}",
                              "flow is (u, v) channels first; transpose an (H, W, 2) array with .transpose(2, 0, 1)")
    if not np.issubdtype(flow.dtype, np.number):
        raise DataFormatError(f"{what} must be numeric, got dtype {flow.dtype}", "use float32 flow")
    return flow.astype(np.float32, copy=False)


def _check_stack(flows, what: str = "flows") -> np.ndarray:
    flows = np.asarray(flows)
    if flows.ndim != 4 or flows.shape[1] != 2:
        raise DataFormatError(f"{what} must have shape (T, 2, H, W), got {tuple(flows.shape)}",
                              "stack per-frame (2, H, W) flows along a new first axis")
    return flows.astype(np.float32, copy=False)


# ---------------------------------------------------------------- .flo

def flo_bytes(flow_2hw) -> bytes:
    """The ``.flo`` encoding of one ``(2, H, W)`` flow field."""
    flow = _check_flow(flow_2hw)
    _, h, w = flow.shape
    header = np.array([(FLO_MAGIC, w, h)], dtype=_HEADER).tobytes()
    # (2, H, W) -> (H, W, 2): u and v interleaved per pixel, rows top to bottom.
    body = np.ascontiguousarray(flow.transpose(1, 2, 0), dtype="<f4").tobytes()
    return header + body


def write_flo(path, flow_2hw, *, overwrite: bool = True) -> Path:
    """Write one ``(2, H, W)`` flow field as a Middlebury ``.flo`` file."""
    data = flo_bytes(flow_2hw)
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def read_flo(path) -> np.ndarray:
    """Read a Middlebury ``.flo`` file as ``float32 (2, H, W)``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"flow file {path} does not exist", "check the path")
    data = path.read_bytes()
    hint = "the file is not a Middlebury .flo file, or it was cut short; write flow with write_flo"
    if len(data) < _HEADER.itemsize:
        raise DataFormatError(f"{path} is too short for a .flo header ({len(data)} bytes)", hint)
    head = np.frombuffer(data, dtype=_HEADER, count=1)[0]
    magic, w, h = float(head["magic"]), int(head["width"]), int(head["height"])
    if magic != FLO_MAGIC:
        raise DataFormatError(f"{path} has magic number {magic!r}, expected {FLO_MAGIC} ('PIEH')", hint)
    if not (0 < w <= _MAX_SIDE and 0 < h <= _MAX_SIDE):
        raise DataFormatError(f"{path} declares an impossible size {h}x{w} (HxW)", hint)
    expected = _HEADER.itemsize + 8 * w * h
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise DataFormatError(f"{path} is {what}: {len(data)} bytes, expected {expected} for {h}x{w} (HxW)", hint)
    body = np.frombuffer(data, dtype="<f4", offset=_HEADER.itemsize).reshape(h, w, 2)
    return np.ascontiguousarray(body.transpose(2, 0, 1), dtype=np.float32)  # (H, W, 2) -> (2, H, W)


def write_flo_folder(folder, flows, *, overwrite: bool = False) -> Path:
    """Write ``flows`` (``(T, 2, H, W)`` or a sequence of ``(2, H, W)``) as ``00000.flo``, ``00001.flo``, ...

    The folder appears complete or not at all (it is assembled under a temporary name).
    """
    encoded = [flo_bytes(f) for f in flows]  # validate every field before touching the disk
    with atomic_dir(folder, overwrite=overwrite) as tmp:
        for i, data in enumerate(encoded):
            (tmp / f"{i:05d}.flo").write_bytes(data)
    return Path(folder)


def read_flo_folder(folder) -> np.ndarray:
    """Read every ``.flo`` in ``folder`` (natural order) as ``float32 (T, 2, H, W)``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"flow folder {folder} does not exist", "check the path")
    files = sorted((p for p in folder.glob("*.flo") if not p.name.startswith(".")), key=lambda p: natural_key(p.name))
    if not files:
        raise InputError(f"no .flo files in {folder}", "write flow folders with write_flo_folder")
    flows = [read_flo(f) for f in files]
    for f, fl in zip(files, flows):
        if fl.shape != flows[0].shape:
            raise DataFormatError(f"{f} is {fl.shape[2]}x{fl.shape[1]} but {files[0].name} is "
                                  f"{flows[0].shape[2]}x{flows[0].shape[1]}",
                                  "flow fields of one clip must share a size")
    return np.stack(flows)


# ---------------------------------------------------------------- .npz stacks

def write_flow_npz(path, flows_t2hw, *, overwrite: bool = True) -> Path:
    """Write a ``(T, 2, H, W)`` flow stack to a compressed ``.npz`` (key ``flow``)."""
    flows = _check_stack(flows_t2hw)
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as f:  # a file object, so numpy keeps the temporary name as is
            np.savez_compressed(f, flow=flows)
    return Path(path)


def read_flow_npz(path) -> np.ndarray:
    """Read a flow stack written by :func:`write_flow_npz` as ``float32 (T, 2, H, W)``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"flow file {path} does not exist", "check the path")
    try:
        with np.load(path, allow_pickle=False) as data:  # never unpickle a data file
            if "flow" not in data.files:
                raise DataFormatError(f"{path} has no 'flow' array (has: {', '.join(data.files) or 'nothing'})",
                                      "write flow stacks with write_flow_npz")
            flows = data["flow"]
    except DataFormatError:
        raise
    except (ValueError, OSError, EOFError) as e:
        raise DataFormatError(f"{path} is not a readable .npz file: {e}",
                              "write flow stacks with write_flow_npz") from None
    return _check_stack(flows, what=f"flow in {path}")


# ---------------------------------------------------------------- colour wheel

# Segment lengths between the six primary/secondary hues (Baker et al.): chosen so that
# perceptually similar hue steps get similar angular room on the wheel.
_SEGMENTS = (("RY", 15), ("YG", 6), ("GC", 4), ("CB", 11), ("BM", 13), ("MR", 6))


def make_color_wheel() -> np.ndarray:
    """The Middlebury colour wheel: ``uint8 (55, 3)`` RGB, starting at red ``(255, 0, 0)``."""
    rows = []
    for name, n in _SEGMENTS:
        ramp = np.floor(255 * np.arange(n) / n)  # 0 .. <255 in n steps
        full, up, down = np.full(n, 255.0), ramp, 255 - ramp
        zero = np.zeros(n)
        rgb = {
            "RY": (full, up, zero),    # red -> yellow: green rises
            "YG": (down, full, zero),  # yellow -> green: red falls
            "GC": (zero, full, up),    # green -> cyan: blue rises
            "CB": (zero, down, full),  # cyan -> blue: green falls
            "BM": (up, zero, full),    # blue -> magenta: red rises
            "MR": (full, zero, down),  # magenta -> red: blue falls
        }[name]
        rows.append(np.stack(rgb, axis=1))
    return np.concatenate(rows).astype(np.uint8)


_WHEEL = make_color_wheel().astype(np.float32) / 255.0  # (55, 3) in [0, 1]


def _known(flow: np.ndarray) -> np.ndarray:
    u, v = flow[0], flow[1]
    return np.isfinite(u) & np.isfinite(v) & (np.abs(u) <= UNKNOWN_FLOW_THRESH) & (np.abs(v) <= UNKNOWN_FLOW_THRESH)


def max_magnitude(flows) -> float:
    """The largest ``sqrt(u^2 + v^2)`` over known pixels of one ``(2, H, W)`` field or a ``(T, 2, H, W)`` stack."""
    flows = np.asarray(flows, dtype=np.float32)
    stack = flows[None] if flows.ndim == 3 else flows
    best = 0.0
    for f in stack:  # per frame, to keep the temporaries small for long clips
        known = _known(f)
        if known.any():
            best = max(best, float(np.sqrt(f[0][known] ** 2 + f[1][known] ** 2).max()))
    return best


def flow_to_color(flow_2hw, max_flow: float | None = None) -> np.ndarray:
    """Colour-code one flow field as ``uint8 (H, W, 3)`` RGB (Middlebury convention).

    Hue gives the direction (flow to the right, +u, is red; down, +v, is orange-yellow; left is
    cyan-blue; up is blue-violet), saturation the magnitude: zero flow is white and flow of
    magnitude ``max_flow`` is the fully saturated wheel colour. Beyond it the colour is kept but
    darkened (x0.75) to show saturation. ``max_flow`` defaults to this field's largest magnitude.
    Unknown flow (NaN, inf, or above 1e9) is black.
    """
    flow = _check_flow(flow_2hw)
    if max_flow is not None and not max_flow > 0:
        raise ValueError(f"max_flow must be positive, got {max_flow}")
    known = _known(flow)
    u = np.where(known, flow[0], 0.0).astype(np.float32)
    v = np.where(known, flow[1], 0.0).astype(np.float32)
    rad = np.sqrt(u * u + v * v)
    norm = max_flow if max_flow is not None else (float(rad.max()) if rad.size else 0.0)
    if norm <= 0:  # all-zero flow: everything white, avoid dividing by zero
        norm = 1.0
    # "+ 0.0" turns -0.0 into +0.0, so purely rightward flow always lands on wheel entry 0.
    u, v, rad = u / norm + 0.0, v / norm + 0.0, rad / norm

    ncols = len(_WHEEL)
    # Angle in [-1, 1] (units of pi) measured so that +u maps to -1 -> wheel index 0 (red).
    a = np.arctan2(-v, -u) / np.pi
    fk = (a + 1) / 2 * (ncols - 1)  # fractional wheel index in [0, ncols - 1]
    k0 = np.floor(fk).astype(np.intp)
    k1 = (k0 + 1) % ncols
    f = (fk - k0)[..., None]
    col = (1 - f) * _WHEEL[k0] + f * _WHEEL[k1]  # (H, W, 3), linear between neighbouring entries
    r = rad[..., None]
    # Inside the unit circle: fade towards white at the centre; outside: darken to flag saturation.
    col = np.where(r <= 1, 1 - r * (1 - col), col * 0.75)
    out = np.floor(255 * col).astype(np.uint8)
    out[~known] = 0
    return out


def write_flow_video(path, flows_t2hw, fps: float = 10, max_flow: float | None = None, *,
                     overwrite: bool = True) -> Path:
    """Write a colour-wheel video of a flow clip.

    One normalisation for the whole clip (``max_flow``, default the clip's largest magnitude), so a
    colour means the same motion in every frame.
    """
    from vpcli.io.video import VideoWriter  # PyAV-backed writer, imported when needed

    flows = _check_stack(flows_t2hw)
    if max_flow is not None and not max_flow > 0:
        raise ValueError(f"max_flow must be positive, got {max_flow}")
    if len(flows) == 0:
        raise DataFormatError("no flow fields to write", "pass at least one (2, H, W) flow field")
    norm = max_flow if max_flow is not None else (max_magnitude(flows) or 1.0)
    with VideoWriter(path, fps=fps, overwrite=overwrite) as writer:
        for f in flows:
            writer.write(flow_to_color(f, max_flow=norm))
    return Path(path)


__all__ = [
    "FLO_MAGIC", "UNKNOWN_FLOW_THRESH", "flo_bytes", "write_flo", "read_flo", "write_flo_folder",
    "read_flo_folder", "write_flow_npz", "read_flow_npz", "make_color_wheel", "max_magnitude",
    "flow_to_color", "write_flow_video",
]

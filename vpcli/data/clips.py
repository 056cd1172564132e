"""Clip datasets: fixed-length windows over videos, frame folders, dataset layouts and generators.

:class:`ClipDataset` indexes every window of ``context + future`` frames (``frame_step`` apart)
in a folder of videos and/or frame folders, or in a list of :class:`~vpcli.data.layouts.ClipRecord`.
Each video is probed once when the dataset is built (frame count and size, never a full decode);
a window is read with :func:`vpcli.io.video.iter_frames` (``start``, ``end``, ``stride``), so only
what it needs is converted.

Items are dicts (the default ``collate_fn`` turns them into the DESIGN.md batch layout):

- ``rgb``: ``float32 (T, C, H, W)`` in ``[0, 1]`` (``C`` = 1 with ``grayscale=True``, else 3);
- ``labels``: ``int64 (T, H, W)`` class ids, 255 = ignore (when label companions are loaded);
- ``flow``: ``float32 (T-1, 2, H, W)``, ``flow[t]`` from frame t to t+1 of the window, in pixels
  of the *output* frames: resizing scales ``u`` by ``W'/W`` and ``v`` by ``H'/H``; with
  ``frame_step`` k the k one-step flows are chained (``f = f_a + f_{a+1}(x + f_a)``, bilinear);
- ``meta``: ``path``, ``sequence_id``, ``start`` (first frame index in the source), ``index``.

Companions are found beside each input by name:

- a video ``X.mp4`` or frame folder ``X/``: labels in ``X.labels/`` (palette / grey id PNGs, one
  per frame) or ``X.labels.npz`` (key ``labels``, ``(T, H, W)``); flow in ``X.flow.npz`` (key
  ``flow``, ``(T-1, 2, H, W)``) or ``X.flow/`` (``.flo`` files, one per frame pair);
- a synth-street sequence folder (``frames/`` inside): its own ``labels/`` (or ``labels.npz``)
  and ``flow_forward.npz``;
- a :class:`ClipRecord`: its ``companions`` (Cityscapes: ``{frame index: labelIds PNG}``,
  mapped to train ids; frames without a label map are all 255).

Splits: ``split="train" | "val" | "test"`` keeps the clips whose relative path hashes (SHA-256)
into that share of ``split_fractions``, or those listed in ``split_file`` (one relative path per
line; a folder holding ``<split>.txt`` also works). Records keep their own split.

Bad input: clips shorter than one window are skipped and listed in :meth:`ClipDataset.summary`;
clips whose size differs from the first one are resized to it (one warning; pass ``size`` to
choose); a file that cannot be probed raises an error naming it (``skip_unreadable=True`` lists
it in the summary instead); a folder without clips raises :class:`~vpcli.errors.InputError`.

Synthetic sources: :func:`make_dataset` also accepts ``"synthetic:moving-digits"`` and
``"synthetic:synth-street"`` (generated on the fly, item ``i`` always the same).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import os
import struct
import warnings
import zipfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from vpcli.data.layouts import (
    ClipRecord,
    cityscapes_to_train_ids,
    is_synth_street_sequence,
    npz_array_shape,
    scan_moving_digits,
    synth_street_companions,
)
from vpcli.errors import DataFormatError, InputError, UsageError, VideoError, VpcliError
from vpcli.io.paths import list_folder, natural_key
from vpcli.io.sources import is_companion

__all__ = ["SPLITS", "ClipDataset", "MovingDigitsClips", "SynthStreetClips", "make_dataset", "native_channels"]

SPLITS = ("train", "val", "test")
_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_LABEL_EXTS = (".png", ".bmp", ".tif", ".tiff", ".pgm")


# --------------------------------------------------------------------------- small helpers


def _list_files(folder: Path, exts: Sequence[str]) -> list[Path]:
    try:
        names = [e.name for e in os.scandir(folder)
                 if e.is_file() and not e.name.startswith(".") and os.path.splitext(e.name)[1].lower() in exts]
    except OSError:
        return []
    return [folder / n for n in sorted(names, key=natural_key)]


@functools.lru_cache(maxsize=256)
def _cached_list(folder: str, exts: tuple[str, ...]) -> tuple[Path, ...]:
    return tuple(_list_files(Path(folder), exts))


def _split_of(rel: str, fractions: tuple[float, float, float]) -> str:
    """Deterministic split of a relative path: SHA-256 -> a number in [0, 1) -> fraction bucket."""
    u = int.from_bytes(hashlib.sha256(rel.encode("utf-8")).digest()[:8], "big") / 2.0**64
    edge = 0.0
    for name, frac in zip(SPLITS, fractions):
        edge += frac
        if u < edge:
            return name
    return SPLITS[-1]


def _item_seed(*parts) -> int:
    text = "vpcli.clips|" + "|".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:16], "little")


def _check_hw(value, what: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int):
        value = (value, value)
    try:
        h, w = (int(v) for v in value)
        ok = h > 0 and w > 0 and (h, w) == tuple(value)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise UsageError(f"{what} must be (height, width) with positive integers, got {value!r}",
                         f"for example {what}=(64, 64)")
    return h, w


def _resize_frames(frames: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """``uint8 (T, H, W, C)`` -> ``(T, h, w, C)``; INTER_AREA when shrinking, else bilinear."""
    h, w = hw
    if frames.shape[1:3] == (h, w):
        return frames
    interp = cv2.INTER_AREA if h <= frames.shape[1] and w <= frames.shape[2] else cv2.INTER_LINEAR
    out = np.stack([cv2.resize(f, (w, h), interpolation=interp) for f in frames])
    return out.reshape(len(frames), h, w, frames.shape[3])  # cv2 drops a single channel axis


def _resize_labels(labels: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of ``(T, H, W)`` ids (pixel centres aligned)."""
    h, w = hw
    H, W = labels.shape[1:]
    if (H, W) == (h, w):
        return labels
    rows = np.minimum(((np.arange(h) + 0.5) * H / h).astype(np.int64), H - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * W / w).astype(np.int64), W - 1)
    return labels[:, rows][:, :, cols]


def _resize_flow(flow: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of ``(N, 2, H, W)`` flow; u scaled by W'/W and v by H'/H."""
    h, w = hw
    H, W = flow.shape[2:]
    if (H, W) == (h, w):
        return flow
    out = np.empty((len(flow), 2, h, w), np.float32)
    for i, f in enumerate(flow):
        hwc = cv2.resize(np.ascontiguousarray(f.transpose(1, 2, 0)), (w, h), interpolation=cv2.INTER_LINEAR)
        out[i] = hwc.transpose(2, 0, 1)  # (h, w, 2) -> (2, h, w)
    out[:, 0] *= w / W
    out[:, 1] *= h / H
    return out


def _chain_flow(flows: np.ndarray) -> np.ndarray:
    """Compose consecutive forward flows ``(k, 2, H, W)`` into one ``(2, H, W)`` flow a -> a+k."""
    total = flows[0].astype(np.float32).copy()
    if len(flows) == 1:
        return total
    H, W = total.shape[1:]
    gx, gy = np.meshgrid(np.arange(W, dtype=np.float32), np.arange(H, dtype=np.float32))
    for f in flows[1:]:
        mx, my = gx + total[0], gy + total[1]  # where each pixel has moved to so far
        u = cv2.remap(np.ascontiguousarray(f[0], np.float32), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        v = cv2.remap(np.ascontiguousarray(f[1], np.float32), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        total[0] += u
        total[1] += v
    return total


def _decode_image(file: Path) -> np.ndarray:
    data = np.fromfile(file, dtype=np.uint8) if file.is_file() else np.zeros(0, np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION) if data.size else None
    if bgr is None:
        raise VideoError(f"cannot decode image {file}", "replace or remove that file")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _image_size(file: Path) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(file) as im:
            return im.height, im.width
    except (OSError, Image.DecompressionBombError) as e:
        raise VideoError(f"cannot decode image {file}: {e}", "replace or remove that file") from None


@functools.lru_cache(maxsize=2)
def _load_sequences(path: str) -> np.ndarray:
    # The whole array, once per process (compressed .npz members cannot be memory-mapped).
    with np.load(path, allow_pickle=False) as z:
        return z["sequences"]


def _npz_memmap(path: str, key: str) -> np.ndarray | None:
    """Memory-map ``key`` of an ``.npz`` whose member is stored uncompressed (``np.savez``); else None.

    Reading a window then touches only its frames; a compressed member (``np.savez_compressed``)
    has to be inflated whole (about 75 ms for 29 flow fields at 128x256).
    """
    try:
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo(f"{key}.npy")
        if info.compress_type != zipfile.ZIP_STORED:
            return None
        with open(path, "rb") as f:
            f.seek(info.header_offset)
            local = f.read(30)  # ZIP local file header; name and extra lengths at bytes 26..29
            if local[:4] != b"PK\x03\x04":
                return None
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            f.seek(info.header_offset + 30 + name_len + extra_len)
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
            offset = f.tell()
    except (KeyError, OSError, ValueError, zipfile.BadZipFile):
        return None
    if dtype.hasobject:
        return None
    return np.memmap(path, dtype=dtype, mode="r", shape=shape, offset=offset, order="F" if fortran else "C")


# A few per process: a window reads one clip's companions; shuffled batches revisit clips.
@functools.lru_cache(maxsize=8)
def _load_labels_npz(path: str) -> np.ndarray:
    mm = _npz_memmap(path, "labels")
    if mm is not None and mm.ndim == 3 and np.issubdtype(mm.dtype, np.integer):
        return mm
    from vpcli.io.labels import read_labels_npz

    return read_labels_npz(path)[0]


@functools.lru_cache(maxsize=8)
def _load_flow_npz(path: str) -> np.ndarray:
    mm = _npz_memmap(path, "flow")
    if mm is not None and mm.ndim == 4 and mm.shape[1] == 2 and np.issubdtype(mm.dtype, np.floating):
        return mm
    from vpcli.io.flow import read_flow_npz

    return read_flow_npz(path)


def _to_item(frames: np.ndarray, grayscale: bool) -> torch.Tensor:
    """``uint8 (T, H, W, C)`` (C = 1 or 3) -> ``float32 (T, C', H, W)`` in [0, 1]."""
    if grayscale and frames.shape[3] == 3:
        frames = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])[..., None]  # ITU-R 601 luma
    elif not grayscale and frames.shape[3] == 1:
        frames = np.repeat(frames, 3, axis=3)
    # NumPy, not torch: in the main process torch's intra-op threads make these small element-wise
    # ops slow on a loaded machine (measured 4 ms vs 0.1 ms for 15x64x64); results are identical.
    x = np.divide(frames.transpose(0, 3, 1, 2), np.float32(255.0), dtype=np.float32)  # (T, H, W, C) -> (T, C, H, W)
    return torch.from_numpy(np.ascontiguousarray(x))


# --------------------------------------------------------------------------- discovery


@dataclass
class _Source:
    record: ClipRecord
    rel: str
    num_frames: int = 0
    hw: tuple[int, int] = (0, 0)
    first_window: int = 0  # index of this source's first window in the dataset
    windows: int = 0
    extra: dict = field(default_factory=dict)


def _beside(path: Path) -> dict:
    """Companions named after a video ``X.ext`` / frame folder ``X/`` (see module docstring)."""
    stem = path.name if path.is_dir() else path.stem
    base = path.parent / stem
    comp: dict = {}
    lab_dir, lab_npz = Path(f"{base}.labels"), Path(f"{base}.labels.npz")
    if lab_dir.is_dir() and _list_files(lab_dir, _LABEL_EXTS):
        comp.update(labels=lab_dir, labels_format="train_ids")
    elif lab_npz.is_file():
        comp.update(labels=lab_npz, labels_format="train_ids")
    flow_npz, flow_dir = Path(f"{base}.flow.npz"), Path(f"{base}.flow")
    if flow_npz.is_file():
        comp["flow"] = flow_npz
    elif flow_dir.is_dir() and _list_files(flow_dir, (".flo",)):
        comp["flow"] = flow_dir
    return comp


def _discover(spec: Path, recursive: bool) -> list[tuple[ClipRecord, str]]:
    from vpcli.io.sources import converted_clip
    from vpcli.io.video import is_frame_folder, is_video_file

    out: list[tuple[ClipRecord, str]] = []

    def add_path(p: Path, rel: str) -> None:
        converted = converted_clip(p)  # a `vpcli data convert` folder NAME/ is the clip NAME
        if converted is not None:
            out.append((ClipRecord(rel, "all", "folder", video=converted, companions=_beside(p)), rel))
        elif p.is_dir() and is_synth_street_sequence(p):
            frames = tuple(_list_files(p / "frames", _IMAGE_EXTS))
            out.append((ClipRecord(rel, "all", "synth_street", frames=frames,
                                   companions=synth_street_companions(p)), rel))
        elif p.is_dir() and is_frame_folder(p):
            out.append((ClipRecord(rel, "all", "folder", video=p, companions=_beside(p)), rel))
        elif p.is_file() and p.suffix.lower() == ".npz" and not is_companion(p):
            try:
                recs = scan_moving_digits(p, split="all")
            except InputError:
                return  # an npz without 'sequences' is not a clip source
            out.extend((r, r.sequence_id) for r in recs)
        elif p.is_file() and is_video_file(p):
            out.append((ClipRecord(rel, "all", "folder", video=p, companions=_beside(p)), rel))

    def walk(folder: Path, prefix: str, depth: int) -> None:
        for e in list_folder(folder):
            if is_companion(e):
                continue
            rel = f"{prefix}{e.name}"
            before = len(out)
            add_path(e, rel)
            if len(out) == before and e.is_dir() and recursive and depth < 32:
                walk(e, rel + "/", depth + 1)

    if spec.is_dir() and not is_synth_street_sequence(spec) and not is_frame_folder(spec):
        walk(spec, "", 0)
    else:
        add_path(spec, spec.name)
    return out


# --------------------------------------------------------------------------- dataset


class ClipDataset(Dataset):
    """Windows of ``context + future`` frames over videos, frame folders or clip records.

    Args:
        inputs: a folder (searched recursively for videos, frame folders, synth-street sequences
            and moving-digits ``.npz``), a video or frame folder, a list of those, or a list of
            :class:`ClipRecord`.
        context, future: frames per window = ``context + future``.
        frame_step: take every ``frame_step``-th frame (a window spans
            ``(context + future - 1) * frame_step + 1`` source frames).
        window_stride: source frames between consecutive window starts; default: the window's
            span (non-overlapping windows). Pass 1 for every start.
        size: ``(H, W)`` every frame is resized to (default: the first clip's size).
        crop: ``(h, w)`` cut after resizing, ``crop_mode`` ``"center"`` or ``"random"`` (drawn
            from a generator seeded by ``seed``, the epoch (:meth:`set_epoch`) and the item index,
            so any number of DataLoader workers gives the same items).
        grayscale: 1 channel (ITU-R 601 luma) instead of 3 (``channels=1`` / ``3`` says the same).
        split, split_fractions, split_file: see the module docstring. ``None`` keeps every clip.
        companions: ``"auto"`` (labels / flow when every clip has them), a subset of
            ``("labels", "flow")`` (clips without them are an error), or ``None``.
        skip_unreadable: list files that cannot be probed in :meth:`summary` instead of raising.
        recursive: search sub-folders of ``inputs``.
    """

    def __init__(self, inputs, *, context: int = 10, future: int = 10, frame_step: int = 1,
                 window_stride: int | None = None, size=None, crop=None, crop_mode: str = "center",
                 grayscale: bool = False, channels: int | None = None, split: str | None = None,
                 split_fractions: Sequence[float] = (0.8, 0.1, 0.1), split_file=None,
                 companions="auto", seed: int = 0, skip_unreadable: bool = False, recursive: bool = True):
        for name, v, lo in (("context", context, 0), ("future", future, 0), ("frame_step", frame_step, 1)):
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise UsageError(f"{name} must be an integer >= {lo}, got {v!r}", "e.g. context=10, future=10")
        if context + future < 1:
            raise UsageError("context + future must be at least 1", "e.g. context=10, future=10")
        if channels is not None:
            if channels not in (1, 3):
                raise UsageError(f"channels must be 1 or 3, got {channels!r}", "use channels=1 for grayscale")
            grayscale = channels == 1
        self.context, self.future, self.frame_step = context, future, frame_step
        self.length = context + future
        self.span = (self.length - 1) * frame_step + 1
        if window_stride is None:
            window_stride = self.span
        if not isinstance(window_stride, int) or window_stride < 1:
            raise UsageError(f"window_stride must be an integer >= 1, got {window_stride!r}", "use 1 for every start")
        self.window_stride = window_stride
        self.size = _check_hw(size, "size")
        self.crop = _check_hw(crop, "crop")
        if crop_mode not in ("center", "random"):
            raise UsageError(f"crop_mode must be 'center' or 'random', got {crop_mode!r}", "use crop_mode='center'")
        self.crop_mode = crop_mode
        self.grayscale = bool(grayscale)
        self.seed = int(seed)
        self.epoch = 0
        self.split = split
        if split is not None and split not in SPLITS:
            raise UsageError(f"split must be one of {', '.join(SPLITS)} or None, got {split!r}", "use split='train'")
        fr = tuple(float(f) for f in split_fractions)
        if len(fr) != 3 or min(fr) < 0 or abs(sum(fr) - 1.0) > 1e-6:
            raise UsageError(f"split_fractions must be three non-negative numbers summing to 1, got {split_fractions!r}",
                             "e.g. (0.8, 0.1, 0.1) for train, val, test")
        self.split_fractions = fr
        self._too_short: list[dict] = []
        self._unreadable: list[dict] = []
        self._skip_unreadable = skip_unreadable

        pairs = self._collect(inputs, recursive)
        pairs = self._apply_split(pairs, split, split_file)
        sources = self._probe(pairs)
        self._companions = self._choose_companions(sources, companions)
        self._check_companions(sources)
        self._decide_size(sources)
        total = 0
        kept = []
        for s in sources:
            if s.num_frames < self.span:
                self._too_short.append({"path": str(s.record.path), "frames": s.num_frames, "needed": self.span})
                continue
            s.windows = (s.num_frames - self.span) // self.window_stride + 1
            s.first_window = total
            total += s.windows
            kept.append(s)
        self.sources = kept
        self._starts = np.array([s.first_window for s in kept], np.int64)
        self._len = total
        if total == 0:
            raise InputError(
                f"no clip is long enough for a window of {self.span} frames "
                f"({self.length} frames, frame_step {frame_step}): {len(self._too_short)} too short, "
                f"{len(self._unreadable)} unreadable", "use shorter context/future, a smaller frame_step, or longer clips")

    # ---- construction steps

    def _collect(self, inputs, recursive) -> list[tuple[ClipRecord, str]]:
        if isinstance(inputs, (str, os.PathLike, ClipRecord)):
            inputs = [inputs]
        inputs = list(inputs)
        if not inputs:
            raise InputError("no inputs given", "pass a folder of videos / frame folders or a list of clip records")
        pairs: list[tuple[ClipRecord, str]] = []
        self._roots = []
        for item in inputs:
            if isinstance(item, ClipRecord):
                pairs.append((item, item.sequence_id))
                continue
            p = Path(item).expanduser()
            if not p.exists():
                raise InputError(f"{p} does not exist", "pass a folder of videos or frame folders")
            self._roots.append(p)
            found = _discover(p, recursive)
            if not found:
                raise InputError(f"no videos or frame folders in {p}",
                                 "put videos (.mp4, .avi, ...) or folders of frames (00000.png ...) in it")
            pairs.extend(found)
        return pairs

    def _apply_split(self, pairs, split, split_file):
        if split is None:
            if split_file is not None:
                raise UsageError("split_file needs split='train', 'val' or 'test'", "pass split= too")
            return pairs
        if split_file is not None:
            listed = self._read_split_file(Path(split_file), split)
            have = {rel for _, rel in pairs}
            missing = [p for p in listed if p not in have]
            if missing:
                raise InputError(f"{len(missing)} path(s) in the {split} split file are not among the inputs, "
                                 f"e.g. {missing[0]!r}", "paths are relative to the input folder, one per line")
            keep = set(listed)
            return [(r, rel) for r, rel in pairs if rel in keep]
        out = []
        for r, rel in pairs:
            own = r.split if r.split in SPLITS else _split_of(rel, self.split_fractions)
            if own == split:
                out.append((r, rel))
        return out

    @staticmethod
    def _read_split_file(path: Path, split: str) -> list[str]:
        if path.is_dir():
            path = path / f"{split}.txt"
        if not path.is_file():
            raise InputError(f"split file {path} does not exist", f"write one relative path per line in {split}.txt")
        lines = (ln.strip() for ln in path.read_text().splitlines())
        return [ln.rstrip("/") for ln in lines if ln and not ln.startswith("#")]

    def _probe(self, pairs) -> list[_Source]:
        from vpcli.io.video import probe

        sources = []
        for rec, rel in pairs:
            try:
                if rec.frames is not None:
                    n, hw = len(rec.frames), _image_size(rec.frames[0])
                elif rec.array is not None:
                    shape, _ = npz_array_shape(rec.array, "sequences")
                    n = shape[0] if rec.array_axes == "TNHW" else shape[1]
                    hw = (shape[2], shape[3])
                else:
                    info = probe(rec.video)  # counts frames without decoding them
                    n, hw = info.num_frames, (info.height, info.width)
            except (VpcliError, OSError) as e:
                if not self._skip_unreadable:
                    raise
                self._unreadable.append({"path": str(rec.path), "error": str(e)})
                continue
            end = n if rec.end is None else min(rec.end, n)
            sources.append(_Source(rec, rel, num_frames=max(0, end - rec.start), hw=hw))
        return sources

    def _choose_companions(self, sources, companions) -> tuple[str, ...]:
        if companions is None:
            return ()
        if companions == "auto":
            return tuple(k for k in ("labels", "flow") if sources and all(k in s.record.companions for s in sources))
        if isinstance(companions, str):
            companions = (companions,)
        bad = [c for c in companions if c not in ("labels", "flow")]
        if bad:
            raise UsageError(f"unknown companion(s) {bad}", "companions are 'labels' and/or 'flow'")
        for c in companions:
            missing = [s.rel for s in sources if c not in s.record.companions]
            if missing:
                raise InputError(f"{len(missing)} clip(s) have no {c}, e.g. {missing[0]}",
                                 f"put {c} beside each clip (X.{c}/ or X.{c}.npz for X.mp4), or drop '{c}'")
        return tuple(companions)

    def _check_companions(self, sources) -> None:
        """Companions must cover every frame of their clip (checked from headers, not pixels)."""
        for s in sources:
            rec, need = s.record, s.num_frames + s.record.start
            if "labels" in self._companions:
                lab = rec.companions["labels"]
                if isinstance(lab, dict):
                    have = None
                elif Path(lab).is_dir():
                    have = len(_list_files(Path(lab), _LABEL_EXTS))
                else:
                    have = npz_array_shape(lab, "labels")[0][0]
                if have is not None and have < need:
                    raise DataFormatError(f"{lab} has {have} label maps but {rec.path} has {need} frames",
                                          "write one label map per frame")
            if "flow" in self._companions:
                fl = Path(rec.companions["flow"])
                have = len(_list_files(fl, (".flo",))) if fl.is_dir() else npz_array_shape(fl, "flow")[0][0]
                if have < need - 1:
                    raise DataFormatError(f"{fl} has {have} flow fields but {rec.path} has {need} frames",
                                          "write one forward flow per frame pair (T-1 for T frames)")

    def _decide_size(self, sources) -> None:
        self._resolutions = Counter(f"{s.hw[0]}x{s.hw[1]}" for s in sources)
        if self.size is not None:
            self.out_hw = self.size
        elif sources:
            self.out_hw = sources[0].hw
            odd = sum(1 for s in sources if s.hw != self.out_hw)
            if odd:
                warnings.warn(f"{odd} of {len(sources)} clips are not {self.out_hw[0]}x{self.out_hw[1]} "
                              f"(sizes: {dict(self._resolutions)}); they are resized to it. Pass size=(H, W) "
                              "to choose the size.", stacklevel=3)
        else:
            self.out_hw = (0, 0)
        if self.crop is not None and (self.crop[0] > self.out_hw[0] or self.crop[1] > self.out_hw[1]):
            raise UsageError(f"crop {self.crop} is larger than the frames ({self.out_hw[0]}, {self.out_hw[1]})",
                             "crop at most the (resized) frame size")

    # ---- public API

    def __len__(self) -> int:
        return self._len

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's random crops (no effect with ``crop_mode='center'``)."""
        self.epoch = int(epoch)

    def summary(self) -> dict:
        """What was indexed and what was left out (too short, unreadable), as plain data."""
        return {
            "clips": len(self.sources), "windows": self._len, "window_frames": self.length,
            "window_span": self.span, "frame_step": self.frame_step, "window_stride": self.window_stride,
            "size": list(self.out_hw), "crop": list(self.crop) if self.crop else None,
            "channels": 1 if self.grayscale else 3, "split": self.split,
            "companions": list(self._companions), "resolutions": dict(self._resolutions),
            "too_short": list(self._too_short), "unreadable": list(self._unreadable),
        }

    def locate(self, index: int) -> tuple[_Source, int]:
        """The source of window ``index`` and the window's first frame in that source."""
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"index must be an integer, got {type(index).__name__}")
        if index < 0:
            index += self._len
        if not 0 <= index < self._len:
            raise IndexError(f"window {index} out of range for {self._len} windows")
        k = int(np.searchsorted(self._starts, index, side="right")) - 1
        src = self.sources[k]
        return src, src.record.start + (int(index) - src.first_window) * self.window_stride

    def __getitem__(self, index: int) -> dict:
        src, start = self.locate(index)
        rec = src.record
        idx = start + self.frame_step * np.arange(self.length)  # frame indices in the source
        try:
            frames = self._read_frames(rec, start)
            if len(frames) != self.length:
                raise VideoError(f"{rec.path} gave {len(frames)} frames for window {start}..{start + self.span - 1}",
                                 "the file may be truncated; re-encode it")
            labels = self._read_labels(rec, idx, src.hw) if "labels" in self._companions else None
            flow = self._read_flow(rec, idx) if "flow" in self._companions else None
        except VpcliError as e:
            raise type(e)(f"window {index} of {src.rel} (frames from {start}): {e.message}", e.hint) from None
        frames = _resize_frames(frames, self.out_hw)
        if labels is not None:
            labels = _resize_labels(labels, self.out_hw)
        if flow is not None:
            flow = _resize_flow(flow, self.out_hw)
        if self.crop is not None:
            y0, x0 = self._crop_origin(index)
            ch, cw = self.crop
            frames = frames[:, y0:y0 + ch, x0:x0 + cw]
            labels = None if labels is None else labels[:, y0:y0 + ch, x0:x0 + cw]
            flow = None if flow is None else flow[:, :, y0:y0 + ch, x0:x0 + cw]
        item = {"rgb": _to_item(frames, self.grayscale)}
        if labels is not None:
            item["labels"] = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))
        if flow is not None:
            item["flow"] = torch.from_numpy(np.ascontiguousarray(flow, dtype=np.float32))
        item["meta"] = {"path": str(rec.path), "sequence_id": rec.sequence_id, "start": int(start), "index": int(index)}
        return item

    # ---- reading

    def _crop_origin(self, index: int) -> tuple[int, int]:
        H, W = self.out_hw
        ch, cw = self.crop
        if self.crop_mode == "center":
            return (H - ch) // 2, (W - cw) // 2
        rng = np.random.Generator(np.random.PCG64(_item_seed(self.seed, self.epoch, index)))
        return int(rng.integers(0, H - ch + 1)), int(rng.integers(0, W - cw + 1))

    def _read_frames(self, rec: ClipRecord, start: int) -> np.ndarray:
        end = start + self.span
        if rec.frames is not None:
            return np.stack([_decode_image(f) for f in rec.frames[start:end:self.frame_step]])
        if rec.array is not None:
            arr = _load_sequences(str(rec.array))
            i = rec.array_index
            seq = arr[start:end:self.frame_step, i] if rec.array_axes == "TNHW" else arr[i, start:end:self.frame_step]
            return np.ascontiguousarray(seq)[..., None] if seq.ndim == 3 else np.ascontiguousarray(seq)
        from vpcli.io.video import iter_frames

        return np.stack(list(iter_frames(rec.video, start=start, end=end, stride=self.frame_step)))

    def _read_labels(self, rec: ClipRecord, idx: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        return labels_at(rec.companions, idx, hw)

    def _read_flow(self, rec: ClipRecord, idx: np.ndarray) -> np.ndarray:
        return flow_at(rec.companions, idx, self.out_hw)


def labels_at(companions: dict, idx: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Label maps ``int64 (len(idx), H, W)`` of frames ``idx`` from a clip's label companion."""
    from vpcli.io.labels import read_label_png

    lab = companions["labels"]
    fmt = companions.get("labels_format", "train_ids")
    if isinstance(lab, dict):  # sparse: {frame index: label image}; other frames are all "ignore"
        maps = [read_label_png(lab[int(j)]) if int(j) in lab else None for j in idx]
        shape = next((m.shape for m in maps if m is not None), hw)
        out = np.stack([np.full(shape, 255, np.int64) if m is None else m for m in maps])
    elif Path(lab).is_dir():
        files = _cached_list(str(lab), _LABEL_EXTS)
        out = np.stack([read_label_png(files[int(j)]) for j in idx])
    else:
        out = np.asarray(_load_labels_npz(str(lab))[idx], dtype=np.int64)
    if fmt == "cityscapes_label_ids":
        out = cityscapes_to_train_ids(out)
    return out


def flow_at(companions: dict, idx: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Forward flow ``float32 (len(idx)-1, 2, H, W)`` between consecutive frames of ``idx``
    (chained over skipped frames) from a clip's flow companion."""
    fl = Path(companions["flow"])
    if fl.is_dir():
        from vpcli.io.flow import read_flo

        files = _cached_list(str(fl), (".flo",))
        one = lambda j: read_flo(files[j])
    else:
        arr = _load_flow_npz(str(fl))
        one = lambda j: np.asarray(arr[j], dtype=np.float32)
    out = []
    for a, b in itertools.pairwise(idx):
        out.append(_chain_flow(np.stack([one(int(j)) for j in range(a, b)])))
    if not out:  # a one-frame window has no flow
        h, w = hw
        return np.zeros((0, 2, h, w), np.float32)
    return np.stack(out).astype(np.float32, copy=False)


def clip_companions(path: str | os.PathLike) -> dict:
    """The label / flow companions of one clip (a video ``X.mp4``, a frame folder ``X/``, or a
    synth-street sequence folder), as the dataset finds them; keys ``labels`` and/or ``flow``."""
    path = Path(path)
    if path.is_dir() and path.name == "frames" and is_synth_street_sequence(path.parent):
        path = path.parent  # a sequence given as its folder reads as SEQ/frames
    if path.is_dir() and is_synth_street_sequence(path):
        return synth_street_companions(path)
    return _beside(path)


# --------------------------------------------------------------------------- synthetic sources


class MovingDigitsClips(Dataset):
    """``synthetic:moving-digits``: Stochastic Moving MNIST windows generated on the fly.

    Item ``i`` is sequence ``i`` of :class:`vpcli.data.moving_digits.MovingDigits` (the same on
    every call and machine), ``span`` frames long and sub-sampled by ``frame_step``.
    """

    def __init__(self, *, context: int = 5, future: int = 10, frame_step: int = 1, size=None,
                 grayscale: bool = True, channels: int | None = None, num_clips: int = 10_000,
                 split: str = "train", seed: int = 0, num_digits: int = 2, digit_source="sklearn",
                 deterministic: bool = True, stochastic: bool = True, frame_size: int = 64, **kwargs):
        from vpcli.data.moving_digits import MovingDigits

        if channels is not None:
            grayscale = channels == 1
        self.length = context + future
        self.frame_step = frame_step
        span = (self.length - 1) * frame_step + 1
        md_split = "test" if split in ("val", "test") else "train"
        # val and test draw from the test digit pool with distinct seeds, so they never overlap.
        md_seed = seed if split != "val" else _item_seed("val", seed) % (2**63)
        self.generator = MovingDigits(num_digits=num_digits, size=frame_size, length=span, digit_source=digit_source,
                                      split=md_split, seed=md_seed, deterministic=deterministic,
                                      stochastic=stochastic, num_sequences=num_clips, **kwargs)
        self.out_hw = _check_hw(size, "size") or (frame_size, frame_size)
        self.grayscale = grayscale

    def __len__(self) -> int:
        return len(self.generator)

    def set_epoch(self, epoch: int) -> None:
        self.generator.set_epoch(epoch)

    def summary(self) -> dict:
        return {"source": "synthetic:moving-digits", "clips": len(self), "windows": len(self),
                "window_frames": self.length, "frame_step": self.frame_step, "size": list(self.out_hw),
                "channels": 1 if self.grayscale else 3, **{k: v for k, v in self.generator.config().items()
                                                           if k in ("split", "seed", "num_digits", "digit_source")}}

    def __getitem__(self, index: int) -> dict:
        frames = self.generator[index][::self.frame_step]  # (T, H, W, 1)
        frames = _resize_frames(frames, self.out_hw)
        return {"rgb": _to_item(frames, self.grayscale),
                "meta": {"path": "synthetic:moving-digits", "sequence_id": f"{index:06d}", "start": 0,
                         "index": int(index)}}


class SynthStreetClips(Dataset):
    """``synthetic:synth-street``: procedural street clips with labels and flow, rendered on the fly.

    Item ``i`` is :func:`vpcli.data.synth_street.render_sequence` with a seed derived from
    ``(seed, split, i)`` (train, val and test never share a sequence), rendered directly at
    ``size`` (default 128x256) and ``span`` frames long, then sub-sampled by ``frame_step`` (flow
    chained accordingly). Other keyword arguments are :class:`SynthStreetConfig` fields.
    Rendering costs far more than reading files: for training, write sequences once with
    ``synth_street.generate`` and load the folder with :class:`ClipDataset`.
    """

    def __init__(self, *, context: int = 10, future: int = 10, frame_step: int = 1, size=None,
                 grayscale: bool = False, channels: int | None = None, num_clips: int = 1000,
                 split: str = "train", seed: int = 0, companions="auto", **config):
        from vpcli.data import synth_street

        if channels is not None:
            grayscale = channels == 1
        if split not in SPLITS:
            raise UsageError(f"split must be one of {', '.join(SPLITS)}, got {split!r}", "use split='train'")
        self.module = synth_street
        self.length = context + future
        self.frame_step = frame_step
        self.span = (self.length - 1) * frame_step + 1
        self.num_clips = int(num_clips)
        self.split = split
        self.seed = int(seed)
        h, w = _check_hw(size, "size") or (128, 256)
        self.config = synth_street.SynthStreetConfig(height=h, width=w, length=max(self.span, 2), **config)
        self.grayscale = grayscale
        self.companions = ("labels", "flow") if companions == "auto" else tuple(companions or ())

    def __len__(self) -> int:
        return self.num_clips

    def set_epoch(self, epoch: int) -> None:  # content depends on the index only
        pass

    def summary(self) -> dict:
        return {"source": "synthetic:synth-street", "clips": self.num_clips, "windows": self.num_clips,
                "window_frames": self.length, "frame_step": self.frame_step, "split": self.split,
                "seed": self.seed, "size": [self.config.height, self.config.width],
                "companions": list(self.companions)}

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.num_clips:
            raise IndexError(f"clip {index} out of range for {self.num_clips} clips")
        seq_seed = _item_seed("synth-street", self.seed, self.split, index) % (2**63)
        seq = self.module.render_sequence(self.config, seq_seed)
        idx = np.arange(0, self.span, self.frame_step)
        item = {"rgb": _to_item(seq.rgb[idx], self.grayscale)}
        if "labels" in self.companions:
            item["labels"] = torch.from_numpy(np.ascontiguousarray(seq.labels[idx], dtype=np.int64))
        if "flow" in self.companions:
            flow = [_chain_flow(seq.flow_forward[a:b]) for a, b in itertools.pairwise(idx)]
            flow = np.stack(flow) if flow else np.zeros((0, 2, self.config.height, self.config.width), np.float32)
            item["flow"] = torch.from_numpy(np.ascontiguousarray(flow, dtype=np.float32))
        item["meta"] = {"path": "synthetic:synth-street", "sequence_id": f"{index:06d}", "start": 0, "index": int(index)}
        return item


class CameraMotionClips(Dataset):
    """``synthetic:camera-motion``: camera pans, zooms, rotations and perspective motion over real
    photographs, with textured objects moving in front (:mod:`vpcli.data.camera_motion`),
    rendered on the fly at ``size`` (default 64x128).

    Item ``i`` is :func:`camera_motion.render_clip` with a seed derived from ``(seed, split, i)``.
    ``streets=FOLDER`` mixes in windows of a folder of clips (e.g. ``vpcli data synth-street``
    output) as a ``street_fraction`` of the items, chosen by hash of the index; they are resized to
    ``size``. Other keyword arguments are :class:`CameraMotionConfig` fields (``photos=heldout``
    renders the evaluation photographs: for test sets only).
    """

    def __init__(self, *, context: int = 4, future: int = 6, frame_step: int = 1, size=None,
                 grayscale: bool = False, channels: int | None = None, num_clips: int = 10_000,
                 split: str = "train", seed: int = 0, streets=None, street_fraction: float = 0.25, **config):
        from vpcli.data import camera_motion

        if channels is not None:
            grayscale = channels == 1
        if split not in SPLITS:
            raise UsageError(f"split must be one of {', '.join(SPLITS)}, got {split!r}", "use split='train'")
        if not 0.0 <= float(street_fraction) <= 1.0:
            raise UsageError(f"street_fraction must be in [0, 1], got {street_fraction!r}", "e.g. street_fraction=0.25")
        self.module = camera_motion
        self.length = context + future
        self.frame_step = frame_step
        self.span = (self.length - 1) * frame_step + 1
        self.num_clips, self.split, self.seed = int(num_clips), split, int(seed)
        h, w = _check_hw(size, "size") or (64, 128)
        self.config = camera_motion.CameraMotionConfig.from_dict({"height": h, "width": w, "length": self.span,
                                                                   **config})
        self.grayscale = grayscale
        self.street_fraction = float(street_fraction) if streets else 0.0
        self.streets = None
        if streets:
            self.streets = ClipDataset(streets, context=context, future=future, frame_step=frame_step, size=(h, w),
                                       split=split, channels=1 if grayscale else 3)

    def __len__(self) -> int:
        return self.num_clips

    def set_epoch(self, epoch: int) -> None:  # content depends on the index only
        pass

    def summary(self) -> dict:
        out = {"source": "synthetic:camera-motion", "clips": self.num_clips, "windows": self.num_clips,
               "window_frames": self.length, "frame_step": self.frame_step, "split": self.split,
               "seed": self.seed, "size": [self.config.height, self.config.width], "photos": self.config.photos}
        if self.streets is not None:
            out["streets"] = {"fraction": self.street_fraction, "windows": len(self.streets)}
        return out

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.num_clips:
            raise IndexError(f"clip {index} out of range for {self.num_clips} clips")
        key = _item_seed("camera-motion", self.seed, self.split, index)
        meta = {"path": "synthetic:camera-motion", "sequence_id": f"{index:06d}", "start": 0, "index": int(index)}
        if self.streets is not None and (key >> 64) % 10_000 < self.street_fraction * 10_000:
            item = self.streets[key % len(self.streets)]
            return {"rgb": item["rgb"], "meta": {**meta, "path": str(item["meta"]["path"])}}  # the keys collate
        frames = self.module.render_clip(self.config, key % (2**63))[::self.frame_step]
        return {"rgb": _to_item(frames, self.grayscale), "meta": meta}


_SYNTHETIC = {"moving-digits": MovingDigitsClips, "moving_digits": MovingDigitsClips,
              "synth-street": SynthStreetClips, "synth_street": SynthStreetClips,
              "camera-motion": CameraMotionClips, "camera_motion": CameraMotionClips}


def _parse_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def make_dataset(spec, **kwargs) -> Dataset:
    """A dataset from a source string: a folder / video / npz path, or ``synthetic:NAME[?k=v&...]``.

    ``synthetic:moving-digits`` and ``synthetic:synth-street`` generate clips on the fly; query
    parameters (``synthetic:moving-digits?num_digits=1&seed=3``) and ``kwargs`` (which win) go to
    :class:`MovingDigitsClips` / :class:`SynthStreetClips`. ``num_clips`` sets their length. Any
    other spec builds a :class:`ClipDataset` with ``kwargs``.
    """
    text = os.fspath(spec)
    if text.startswith("synthetic:"):
        name, _, query = text[len("synthetic:"):].partition("?")
        if name not in _SYNTHETIC:
            raise UsageError(f"unknown synthetic source {name!r}",
                             "use synthetic:moving-digits, synthetic:synth-street or synthetic:camera-motion")
        params = {k: _parse_value(v) for k, v in parse_qsl(query, keep_blank_values=True)}
        params.update(kwargs)
        if _SYNTHETIC[name] in (MovingDigitsClips, CameraMotionClips) and \
                params.get("companions", "auto") in ("auto", None, ()):
            params.pop("companions", None)  # "auto": these generators simply have no labels or flow
        try:
            return _SYNTHETIC[name](**params)
        except TypeError as e:
            raise UsageError(f"synthetic:{name}: {e}",
                             "folder options (crop, window_stride, split_file, ...) do not apply to generators") from None
    return ClipDataset(text, **kwargs)


def native_channels(spec) -> int | None:
    """1 or 3: the channels a source's clips carry, or None when that cannot be told cheaply.

    ``synthetic:NAME`` gives its generator's default (``channels`` / ``grayscale`` in the query
    win); a folder, video or ``.npz`` gives its first clip's first frame (greyscale when it has one
    channel or R = G = B). Used to pick a method's default weights for the data at hand, as
    ``vpcli predict`` does per clip."""
    import inspect

    from vpcli.io.video import is_greyscale, iter_frames

    text = os.fspath(spec)
    if text.startswith("synthetic:"):
        name, _, query = text[len("synthetic:"):].partition("?")
        cls = _SYNTHETIC.get(name)
        if cls is None:
            return None
        params = {k: _parse_value(v) for k, v in parse_qsl(query, keep_blank_values=True)}
        if params.get("channels") in (1, 3):
            return int(params["channels"])
        grey = params.get("grayscale", inspect.signature(cls).parameters["grayscale"].default)
        return 1 if grey else 3
    path = Path(text).expanduser()
    if not path.exists():
        return None
    found = _discover(path, recursive=True)
    if not found:
        return None
    rec = found[0][0]
    try:
        if rec.frames:
            frame = _decode_image(rec.frames[0])[None]
        elif rec.array is not None:
            return 1  # moving-digits arrays are greyscale (T, H, W)
        else:
            with contextlib.closing(iter_frames(rec.video, start=rec.start, end=rec.start + 1)) as frames:
                frame = np.stack(list(frames))
    except VpcliError:
        return None  # an unreadable first clip: the dataset reports it, with its own message
    return 1 if is_greyscale(frame) else 3


def assign_splits(folder, fractions: Sequence[float] = (0.8, 0.1, 0.1), *,
                  recursive: bool = True) -> dict[str, list[str]]:
    """The clips under ``folder`` (relative paths, as split files list them) grouped by the
    deterministic hash split that :class:`ClipDataset` uses, so a written split file and the
    default split agree."""
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise InputError(f"{folder} does not exist", "pass a folder of videos or frame folders")
    found = _discover(folder, recursive)
    if not found:
        raise InputError(f"no videos or frame folders in {folder}",
                         "put videos (.mp4, .avi, ...) or folders of frames (00000.png ...) in it")
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3 or min(fr) < 0 or abs(sum(fr) - 1.0) > 1e-6:
        raise UsageError(f"split fractions must be three non-negative numbers summing to 1, got {fractions!r}",
                         "e.g. 0.8,0.1,0.1 for train, val, test")
    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    for rec, rel in found:
        out[rec.split if rec.split in SPLITS else _split_of(rel, fr)].append(rel)
    return {k: sorted(v, key=natural_key) for k, v in out.items()}

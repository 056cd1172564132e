"""Readers for the folder layouts the video-prediction papers use, and their protocols.

Each ``scan_<layout>(root, split=...)`` walks a dataset as it is laid out after download (or
after the reference preprocessing) and returns :class:`ClipRecord` s: what to read (a video, an
ordered list of frame files, or one sequence of an ``.npz`` array), its sequence id and split,
and optional companions (label maps, flow). Nothing is decoded while scanning. When nothing
matches, an :class:`~vpcli.errors.InputError` names the structure that was expected.

Layouts (and where the conventions come from):

- **KTH** (Schuldt et al. 2004): ``<root>/[<action>/]person<NN>_<action>_d<K>_uncomp.avi`` or
  frame folders ``person<NN>_<action>_d<K>/`` (SVG/SRVP ``processed_64/<action>/...``). The split
  SVG, SRVP and SLAMP use is persons 1-20 train / 21-25 test (``edenton/svg`` ``data/kth.py``;
  ``kaanakan/slamp`` ``data/kth.py`` skips ``person > 20``); ``protocol="mcnet"`` gives the
  1-16 / 17-25 split of MCnet (Villegas et al. 2017). With the dataset's ``00sequences.txt``
  each video is cut into its annotated subsequences (as SVG's converter does).
- **Cityscapes** (Cordts et al. 2016): ``leftImg8bit_sequence/<split>/<city>/
  <city>_<seq>_<frame>_leftImg8bit.png`` grouped into 30-frame snippets (runs of consecutive
  frame numbers), with ``gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png``
  attached to the frame it annotates (the 20th of its snippet). :func:`cityscapes_to_train_ids`
  maps the 34 label ids to the 19 train ids (255 elsewhere).
- **KITTI raw** (Geiger et al. 2013): ``<date>/<date>_drive_<NNNN>_sync/image_02/data/
  <NNNNNNNNNN>.png``; splits by drive name from SLAMP (``kaanakan/slamp`` ``data/kitti.py``) or
  PredNet (Lotter et al. 2017, used by HVP).
- **BAIR robot pushing** as exported by SRVP's ``preprocessing/bair/convert.py`` (adapted from
  SVG's ``convert_bair.py``): ``processed_data/{train,test}/<tfrecord name>/<k:03d>/<i:03d>.png``,
  30 frames of 64x64 RGB per trajectory. (That export writes PNGs only; there is no NPZ form.)
- **Stochastic Moving MNIST**: SRVP's test file ``smmnist_test_<D>digits_<S>.npz`` (key
  ``sequences``, ``uint8 (T, N, H, W)``) and our :mod:`vpcli.data.moving_digits` outputs
  (``moving_digits_<split>_*.npz`` with ``(N, T, H, W)``, ``seq_00000/`` frame folders,
  ``seq_00000.mp4``).
- **synth-street** (:mod:`vpcli.data.synth_street`): one folder per sequence with ``frames/``,
  ``labels/`` (palette PNGs), ``flow_forward.npz``, ``meta.json``.
"""
from __future__ import annotations

import itertools
import json
import os
import re
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vpcli.errors import DataFormatError, InputError, UsageError
from vpcli.io.paths import natural_key

__all__ = [
    "CITYSCAPES_ID_TO_TRAIN_ID",
    "KITTI_SPLITS",
    "KTH_ACTIONS",
    "KTH_SPLITS",
    "LAYOUTS",
    "PROTOCOLS",
    "ClipRecord",
    "Protocol",
    "cityscapes_to_train_ids",
    "detect_layout",
    "npz_array_shape",
    "scan",
    "scan_bair",
    "scan_cityscapes",
    "scan_kitti",
    "scan_kth",
    "scan_moving_digits",
    "scan_synth_street",
]

_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".gif")


# --------------------------------------------------------------------------- records


@dataclass
class ClipRecord:
    """One clip of a dataset, located but not decoded.

    Exactly one of ``video`` (a video file or frame folder), ``frames`` (an ordered list of image
    files) or ``array`` (an ``.npz`` holding many sequences, with ``array_index`` and
    ``array_axes`` ``"NTHW"`` or ``"TNHW"``) says where the pixels are. ``start``/``end``
    restrict the clip to frames ``[start:end]`` of that source (KTH subsequences).

    ``companions`` may hold ``"labels"`` (a folder of label PNGs, a ``labels.npz``, or a dict
    ``{frame index: label image}`` for sparse annotations) with ``"labels_format"``
    (``"train_ids"`` or ``"cityscapes_label_ids"``), and ``"flow"`` (a ``flow_forward.npz`` or a
    folder of ``.flo``; ``flow[t]`` is t -> t+1).
    """

    sequence_id: str
    split: str
    layout: str
    video: Path | None = None
    frames: tuple[Path, ...] | None = None
    array: Path | None = None
    array_index: int | None = None
    array_axes: str = "NTHW"
    start: int = 0
    end: int | None = None
    companions: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    @property
    def path(self) -> Path:
        """The main file or folder of the clip (the first frame's folder for frame lists)."""
        if self.video is not None:
            return self.video
        if self.array is not None:
            return self.array
        assert self.frames, "a ClipRecord needs video, frames or array"
        return self.frames[0].parent

    @property
    def num_frames(self) -> int | None:
        """Frames in the clip when known without probing (frame lists, arrays, explicit ranges)."""
        if self.frames is not None:
            n = len(self.frames)
        elif self.array is not None:
            n = int(self.meta.get("length", 0)) or None
        else:
            n = None
        if self.end is not None:
            return self.end - self.start
        return None if n is None else n - self.start


@dataclass(frozen=True)
class Protocol:
    """How one paper trains and evaluates on one dataset."""

    dataset: str
    size: tuple[int, int]  # (H, W) fed to the model
    channels: int
    context: int
    future_train: int
    future_test: int
    frame_step: int = 1
    train_split: str = "train"
    test_split: str = "test"
    source: str = ""


# Paper protocols. Sources are the paper text (../shared/papers) and the authors' code where the
# paper is silent; "assumed" marks what neither states.
PROTOCOLS: dict[str, dict[str, Protocol]] = {
    "slamp": {
        "moving_mnist": Protocol("moving_mnist", (64, 64), 1, 5, 10, 20, source=(
            "SLAMP Sec. 4: condition on 5, predict 10 (train) / 20 (test); App. C: batch 32")),
        "kth": Protocol("kth", (64, 64), 1, 10, 10, 30, source=(
            "SLAMP Sec. 4: 10 -> 10 train, 10 -> 30 test; persons 1-20 train / 21-25 test "
            "(kaanakan/slamp data/kth.py, from SRVP/SVG)")),
        "bair": Protocol("bair", (64, 64), 3, 2, 10, 28, source="SLAMP Sec. 4: 2 -> 10 train, 2 -> 28 test"),
        "kitti": Protocol("kitti", (92, 310), 3, 10, 10, 20, source=(
            "SLAMP Sec. 4 and App. C: 92x310, 10 -> 10 train, 10 -> 20 test; drive lists and both "
            "cameras (image_02, image_03) in kaanakan/slamp data/kitti.py (which also skips static "
            "ranges listed in its static-ranges.txt; not reproduced here)")),
        "cityscapes": Protocol("cityscapes", (128, 256), 3, 10, 10, 20, source=(
            "SLAMP Sec. 4 and App. C: 128x256, 10 -> 10 train, 10 -> 20 test, consecutive frames")),
    },
    "svg": {
        "moving_mnist": Protocol("moving_mnist", (64, 64), 1, 5, 10, 20, source=(
            "SVG (Denton & Fergus 2018): SM-MNIST 5 -> 10 train, 5 -> 20 test (as SLAMP/SRVP)")),
        "kth": Protocol("kth", (64, 64), 1, 10, 10, 30, source=(
            "SVG: 10 -> 10 train, 10 -> 30 test; edenton/svg data/kth.py persons 1-20 / 21-25")),
        "bair": Protocol("bair", (64, 64), 3, 2, 10, 28, source="SVG: 2 -> 10 train, 2 -> 28 test"),
    },
    "srvp": {
        "moving_mnist": Protocol("moving_mnist", (64, 64), 1, 5, 10, 20, source=(
            "SRVP (Franceschi et al. 2020): 5 context frames, 5 -> 20 (and 5 -> 95) test on "
            "smmnist_test_2digits_64.npz (10,000 sequences x 100 frames, make_test_set.py); "
            "10 training targets assumed from the SVG setting, not checked in SRVP's code")),
        "kth": Protocol("kth", (64, 64), 1, 10, 10, 30, source=(
            "SRVP: 10 -> 10 train, 10 -> 30 and 10 -> 40 test (svg_test_set_40.npz)")),
        "bair": Protocol("bair", (64, 64), 3, 2, 10, 28, source="SRVP: 2 -> 10 train, 2 -> 28 test"),
    },
    "hvp": {
        "kitti": Protocol("kitti", (64, 64), 3, 5, 15, 50, frame_step=2, source=(
            "HVP Sec. 4.3 / App. B.2: 5 -> 15 train, 5 -> 50 short-term test (and long-term), "
            "64x64 (also 256x256); PredNet (Lotter et al. 2017) split; sequences sub-sampled by 2")),
        "cityscapes": Protocol("cityscapes", (128, 256), 3, 4, 6, 6, frame_step=3, test_split="val", source=(
            "HVP App. B.3: frames sub-sampled by 3; 4 contexts (frames 2, 5, 8, 11) -> 6 future "
            "(14 ... 29); evaluated at 128x256 (labels generated at 256x512 for training)")),
    },
    "sadm": {
        "cityscapes": Protocol("cityscapes", (128, 256), 3, 4, 6, 5, test_split="val", source=(
            "SADM Sec. 5: train split for training, val (500 snippets) for evaluation, 10-frame "
            "training clips, results at t+1 ... t+5. Context length and resolution are not in "
            "the text: 4 context frames at 128x256 assumed (Seg2vid/FVS setting)")),
        "kitti": Protocol("kitti", (128, 256), 3, 4, 6, 5, source=(
            "SADM Sec. 5: KITTI raw, 4 sequences for testing (following FVS), t+1/t+3/t+5; "
            "context length and resolution assumed as for Cityscapes")),
        "kitti_flow": Protocol("kitti_flow", (128, 256), 3, 4, 1, 1, source=(
            "SADM Sec. 5: KITTI Flow downsampled to 128x424 then centre-cropped to 128x256, "
            "next-frame prediction (following DPG); context length assumed")),
    },
    "lmvp": {
        "moving_mnist": Protocol("moving_mnist", (64, 64), 1, 10, 10, 10, source=(
            "LMVP Sec. 4: 20-frame Moving MNIST (deterministic), 10 given -> 10 predicted")),
    },
}


# --------------------------------------------------------------------------- helpers


def _root(root) -> Path:
    root = Path(root).expanduser()
    if not root.exists():
        raise InputError(f"{root} does not exist", "pass the dataset's top folder")
    if not root.is_dir():
        raise InputError(f"{root} is not a folder", "pass the dataset's top folder")
    return root


def _check_split(split: str, allowed: Iterable[str]) -> str:
    allowed = tuple(allowed)
    if split not in allowed:
        raise UsageError(f"split must be one of {', '.join(allowed)}; got {split!r}",
                         f"use split={allowed[0]!r}")
    return split


def _walk(root: Path, max_depth: int | None = None) -> Iterable[tuple[Path, list[str], list[str]]]:
    """``os.walk`` in sorted order, skipping hidden entries (our temporaries), depth-limited."""
    base = len(root.parts)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        d = Path(dirpath)
        dirnames[:] = sorted((n for n in dirnames if not n.startswith(".")), key=natural_key)
        if max_depth is not None and len(d.parts) - base >= max_depth:
            dirnames[:] = []
        yield d, dirnames, sorted((n for n in filenames if not n.startswith(".")), key=natural_key)


def _images(folder: Path) -> list[Path]:
    try:
        names = [e.name for e in os.scandir(folder)
                 if e.is_file() and not e.name.startswith(".") and os.path.splitext(e.name)[1].lower() in _IMAGE_EXTS]
    except OSError:
        return []
    return [folder / n for n in sorted(names, key=natural_key)]


def _nothing(layout: str, root: Path, expected: str, split: str | None = None) -> InputError:
    where = f" for split {split!r}" if split else ""
    return InputError(f"no {layout} data found under {root}{where}", f"expected {expected}")


# --------------------------------------------------------------------------- KTH

KTH_ACTIONS = ("boxing", "handclapping", "handwaving", "jogging", "running", "walking")
KTH_SPLITS: dict[str, dict[str, range]] = {
    # SVG / SRVP / SLAMP: the first 20 persons train, the last 5 test.
    "svg": {"train": range(1, 21), "test": range(21, 26)},
    # MCnet (Villegas et al. 2017) and many deterministic baselines.
    "mcnet": {"train": range(1, 17), "test": range(17, 26)},
}
_KTH_NAME = re.compile(r"^person(\d{2})_(" + "|".join(KTH_ACTIONS) + r")_d([1-4])(?:_uncomp)?$")
_KTH_EXPECTED = ("<root>/<action>/personNN_<action>_dK_uncomp.avi (e.g. boxing/person01_boxing_d1_uncomp.avi), "
                 "or frame folders personNN_<action>_dK/ as made by SVG's converter")


def _kth_subsequences(root: Path) -> dict[str, list[tuple[int, int]]]:
    """Parse KTH's ``00sequences.txt``: ``person01_boxing_d1  frames  1-95, 96-185, ...``.

    Ranges there are 1-based and inclusive; we return 0-based half-open ``(start, end)``.
    """
    out: dict[str, list[tuple[int, int]]] = {}
    for d, _, files in _walk(root, max_depth=2):
        if "00sequences.txt" not in files:
            continue
        for line in (d / "00sequences.txt").read_text(errors="replace").splitlines():
            m = re.match(r"^\s*(person\d{2}_\w+?_d\d)\s+frames\s+(.*)$", line)
            if not m:
                continue
            ranges = [(int(a) - 1, int(b)) for a, b in re.findall(r"(\d+)\s*-\s*(\d+)", m.group(2))]
            if ranges:
                out[m.group(1)] = ranges
    return out


def scan_kth(root, split: str = "train", *, protocol: str = "svg", subsequences: bool = True) -> list[ClipRecord]:
    """KTH videos (or SVG-style frame folders) of ``split`` (``train``, ``test`` or ``all``)."""
    root = _root(root)
    _check_split(split, ("train", "test", "all"))
    if protocol not in KTH_SPLITS:
        raise UsageError(f"unknown KTH protocol {protocol!r}", f"use one of {', '.join(KTH_SPLITS)}")
    persons = KTH_SPLITS[protocol]
    subs = _kth_subsequences(root) if subsequences else {}
    records = []
    for d, dirnames, files in _walk(root):
        found = []
        for name in files:
            stem, ext = os.path.splitext(name)
            if ext.lower() in _VIDEO_EXTS and (m := _KTH_NAME.match(stem)):
                found.append((d / name, m))
        for name in list(dirnames):
            if (m := _KTH_NAME.match(name)) and _images(d / name):
                found.append((d / name, m))
                dirnames.remove(name)  # a frame folder is a clip, not searched further
        for path, m in found:
            person, action, scenario = int(m.group(1)), m.group(2), int(m.group(3))
            which = next((s for s, r in persons.items() if person in r), None)
            if which is None or (split != "all" and which != split):
                continue
            key = f"person{person:02d}_{action}_d{scenario}"
            meta = {"person": person, "action": action, "scenario": scenario}
            frames = tuple(_images(path)) if path.is_dir() else None
            video = None if frames else path
            ranges = subs.get(key) or [(0, None)]
            for j, (start, end) in enumerate(ranges):
                sid = key if len(ranges) == 1 else f"{key}_s{j + 1}"
                records.append(ClipRecord(sid, which, "kth", video=video, frames=frames,
                                          start=start, end=end, meta=dict(meta)))
    if not records:
        raise _nothing("KTH", root, _KTH_EXPECTED, split)
    records.sort(key=lambda r: (r.meta["person"], KTH_ACTIONS.index(r.meta["action"]), r.meta["scenario"], r.start))
    return records


# --------------------------------------------------------------------------- Cityscapes

# Cityscapes label id -> train id (cityscapesScripts labels.py): the 19 evaluated classes, 255
# for everything else (unlabeled, ego vehicle, ..., parking, rail track, guard rail, bridge,
# tunnel, polegroup, caravan, trailer; license plate (-1) never appears in labelIds PNGs).
CITYSCAPES_ID_TO_TRAIN_ID: tuple[int, ...] = (
    255, 255, 255, 255, 255, 255, 255,  # 0-6: unlabeled, ego vehicle, rect. border, out of roi, static, dynamic, ground
    0, 1,                                # 7 road, 8 sidewalk
    255, 255,                            # 9 parking, 10 rail track
    2, 3, 4,                             # 11 building, 12 wall, 13 fence
    255, 255, 255,                       # 14 guard rail, 15 bridge, 16 tunnel
    5, 255,                              # 17 pole, 18 polegroup
    6, 7, 8, 9, 10, 11, 12, 13, 14, 15,  # 19 traffic light ... 28 bus
    255, 255,                            # 29 caravan, 30 trailer
    16, 17, 18,                          # 31 train, 32 motorcycle, 33 bicycle
)
assert len(CITYSCAPES_ID_TO_TRAIN_ID) == 34

_CS_LUT = np.full(256, 255, np.int64)
_CS_LUT[:34] = CITYSCAPES_ID_TO_TRAIN_ID
_CS_LUT.setflags(write=False)


def cityscapes_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Map Cityscapes ``*_gtFine_labelIds.png`` values to the 19 train ids (``int64``, 255 = ignore)."""
    ids = np.asarray(label_ids)
    if not np.issubdtype(ids.dtype, np.integer):
        raise DataFormatError(f"Cityscapes label ids must be integers, got {ids.dtype}", "read the labelIds PNG")
    out = np.full(ids.shape, 255, np.int64)
    ok = (ids >= 0) & (ids < 256)
    out[ok] = _CS_LUT[ids[ok]]
    return out


_CS_FRAME = re.compile(r"^([a-z_-]+?)_(\d{6})_(\d{6})_leftImg8bit\.(png|jpg|jpeg)$", re.IGNORECASE)
_CS_LABEL = re.compile(r"^([a-z_-]+?)_(\d{6})_(\d{6})_gtFine_labelIds\.png$", re.IGNORECASE)
_CS_EXPECTED = ("<root>/leftImg8bit_sequence/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png "
                "(and optionally <root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png)")


def _cs_dirs(root: Path, split: str) -> tuple[Path | None, Path | None]:
    if root.name == "leftImg8bit_sequence":
        seq, gt = root / split, root.parent / "gtFine" / split
    elif (root / "leftImg8bit_sequence").is_dir():
        seq, gt = root / "leftImg8bit_sequence" / split, root / "gtFine" / split
    else:
        seq, gt = root / split, root.parent / "gtFine" / split
    return (seq if seq.is_dir() else None), (gt if gt.is_dir() else None)


def scan_cityscapes(root, split: str = "train", *, snippet_length: int = 30,
                    labelled_frame: int = 19) -> list[ClipRecord]:
    """Cityscapes sequence snippets of ``split`` (``train``, ``val`` or ``test``).

    Frames of one ``<city>_<seq>`` are sorted by frame number, cut into runs of consecutive
    numbers and each run into ``snippet_length`` frames (the last, shorter piece is kept as is).
    A ``gtFine`` labelIds PNG is attached to the frame it names (normally index
    ``labelled_frame`` = 19, the 20th) as ``companions["labels"] = {index: path}``.
    """
    root = _root(root)
    _check_split(split, ("train", "val", "test"))
    if snippet_length < 1:
        raise UsageError(f"snippet_length must be >= 1, got {snippet_length}", "Cityscapes snippets have 30 frames")
    seq_dir, gt_dir = _cs_dirs(root, split)
    if seq_dir is None:
        raise _nothing("Cityscapes", root, _CS_EXPECTED, split)
    groups: dict[tuple[str, str], list[tuple[int, Path]]] = defaultdict(list)
    for d, _, files in _walk(seq_dir, max_depth=2):
        for name in files:
            if m := _CS_FRAME.match(name):
                groups[(m.group(1).lower(), m.group(2))].append((int(m.group(3)), d / name))
    labels: dict[tuple[str, str, int], Path] = {}
    if gt_dir is not None:
        for d, _, files in _walk(gt_dir, max_depth=2):
            for name in files:
                if m := _CS_LABEL.match(name):
                    labels[(m.group(1).lower(), m.group(2), int(m.group(3)))] = d / name
    records = []
    for (city, seq), items in sorted(groups.items()):
        items.sort()
        runs, run = [], [items[0]]
        for prev, cur in itertools.pairwise(items):
            if cur[0] == prev[0] + 1:
                run.append(cur)
            else:
                runs.append(run)
                run = [cur]
        runs.append(run)
        for run in runs:
            for k in range(0, len(run), snippet_length):
                piece = run[k:k + snippet_length]
                first = piece[0][0]
                lab = {i: labels[(city, seq, n)] for i, (n, _) in enumerate(piece) if (city, seq, n) in labels}
                comp = {"labels": lab, "labels_format": "cityscapes_label_ids"} if lab else {}
                records.append(ClipRecord(
                    f"{city}_{seq}_{first:06d}", split, "cityscapes", frames=tuple(p for _, p in piece),
                    companions=comp,
                    meta={"city": city, "sequence": seq, "first_frame": first,
                          "labelled_frame": labelled_frame, "complete": len(piece) == snippet_length}))
    if not records:
        raise _nothing("Cityscapes", root, _CS_EXPECTED, split)
    return records


# --------------------------------------------------------------------------- KITTI raw

KITTI_SPLITS: dict[str, dict[str, tuple[str, ...]]] = {
    # kaanakan/slamp data/kitti.py (drives not listed are used by neither split).
    "slamp": {
        "train": tuple(f"2011_09_26_drive_{n:04d}_sync" for n in (
            1, 5, 11, 14, 15, 17, 18, 19, 22, 28, 32, 35, 39, 51, 57, 61, 70, 79, 87, 91, 95, 104, 113))
        + ("2011_09_28_drive_0001_sync", "2011_09_29_drive_0004_sync", "2011_09_29_drive_0026_sync",
           "2011_09_30_drive_0020_sync", "2011_09_30_drive_0028_sync", "2011_09_30_drive_0033_sync",
           "2011_09_30_drive_0034_sync", "2011_10_03_drive_0034_sync", "2011_10_03_drive_0042_sync"),
        "test": tuple(f"2011_09_26_drive_{n:04d}_sync" for n in (
            2, 9, 13, 20, 23, 27, 29, 36, 46, 48, 52, 56, 59, 64, 84, 86, 93, 96, 101, 106, 117))
        + ("2011_09_28_drive_0002_sync", "2011_09_29_drive_0071_sync", "2011_09_30_drive_0016_sync",
           "2011_09_30_drive_0018_sync", "2011_09_30_drive_0027_sync", "2011_10_03_drive_0027_sync",
           "2011_10_03_drive_0047_sync"),
    },
    # PredNet (Lotter et al. 2017, process_kitti.py), followed by HVP: every other drive trains.
    "prednet": {
        "val": ("2011_09_26_drive_0005_sync",),
        "test": ("2011_09_26_drive_0104_sync", "2011_09_26_drive_0079_sync", "2011_09_26_drive_0070_sync"),
    },
}
_KITTI_DRIVE = re.compile(r"^(\d{4}_\d{2}_\d{2})_drive_(\d{4})_sync$")
_KITTI_EXPECTED = "<root>/<date>/<date>_drive_<NNNN>_sync/image_02/data/<NNNNNNNNNN>.png (KITTI raw, synced)"


def _kitti_split(drive: str, protocol: str) -> str | None:
    lists = KITTI_SPLITS[protocol]
    for name, drives in lists.items():
        if drive in drives:
            return name
    return "train" if protocol == "prednet" else None


def scan_kitti(root, split: str = "train", *, protocol: str = "slamp",
               cameras: tuple[str, ...] = ("image_02",)) -> list[ClipRecord]:
    """KITTI raw drives of ``split`` (``train``, ``val`` (PredNet only), ``test``, ``all``).

    ``protocol`` picks the drive lists (``"slamp"``: drives in neither list are skipped;
    ``"prednet"``: all drives not in val/test train). One record per drive and camera.
    """
    root = _root(root)
    _check_split(split, ("train", "val", "test", "all"))
    if protocol not in KITTI_SPLITS:
        raise UsageError(f"unknown KITTI protocol {protocol!r}", f"use one of {', '.join(KITTI_SPLITS)}")
    records = []
    for d, dirnames, _ in _walk(root, max_depth=3):
        m = _KITTI_DRIVE.match(d.name)
        if not m:
            continue
        dirnames[:] = []
        which = _kitti_split(d.name, protocol)
        if which is None and split != "all":
            continue
        if split != "all" and which != split:
            continue
        for cam in cameras:
            frames = _images(d / cam / "data")
            if frames:
                records.append(ClipRecord(f"{d.name}_{cam}", which or "unlisted", "kitti", frames=tuple(frames),
                                          meta={"date": m.group(1), "drive": int(m.group(2)), "camera": cam}))
    if not records:
        raise _nothing("KITTI raw", root, _KITTI_EXPECTED, split)
    return records


# --------------------------------------------------------------------------- BAIR

_BAIR_EXPECTED = ("<root>/processed_data/{train,test}/<tfrecord name>/<k:03d>/<i:03d>.png "
                  "(SRVP preprocessing/bair/convert.py output)")


def scan_bair(root, split: str = "train") -> list[ClipRecord]:
    """BAIR trajectories exported to PNG frames (SRVP/SVG layout) for ``split`` (train / test)."""
    root = _root(root)
    _check_split(split, ("train", "test"))
    if (root / "processed_data").is_dir():
        base = root / "processed_data" / split
    elif root.name == "processed_data" or (root / split).is_dir():
        base = root / split
    else:
        base = None
    records = []
    if base is not None and base.is_dir():
        for d, dirnames, _ in _walk(base, max_depth=2):
            frames = _images(d)
            if frames and d != base:
                rel = d.relative_to(base).as_posix()
                records.append(ClipRecord(rel, split, "bair", frames=tuple(frames)))
    if not records:
        raise _nothing("BAIR", root, _BAIR_EXPECTED, split)
    return records


# --------------------------------------------------------------------------- moving MNIST

_SRVP_NPZ = re.compile(r"^(s?)mmnist_(test|train)_(\d+)digits_(\d+)\.npz$")
_OUR_NPZ = re.compile(r"^moving_digits_(test|train)_(\d+)digits_(\d+)\.npz$")
_SEQ_NAME = re.compile(r"^seq_(\d+)(\.[A-Za-z0-9]+)?$")
_MD_EXPECTED = ("smmnist_test_<D>digits_<S>.npz (SRVP), moving_digits_<split>_<D>digits_<S>.npz, or seq_00000/ "
                "frame folders / seq_00000.mp4 written by vpcli.data.moving_digits")


def npz_array_shape(path, key: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of ``key`` inside an ``.npz`` without loading the array."""
    try:
        with zipfile.ZipFile(path) as zf, zf.open(f"{key}.npy") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    except KeyError:
        raise DataFormatError(f"{path} has no array {key!r}", "pass an .npz holding 'sequences'") from None
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise DataFormatError(f"{path} is not a readable .npz file: {e}", "regenerate the file") from None
    return tuple(shape), dtype


def _npz_keys(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as zf:
            return [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
    except (zipfile.BadZipFile, OSError):
        return []


def _read_meta(folder: Path) -> dict:
    try:
        return json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return {}


def scan_moving_digits(root, split: str = "test") -> list[ClipRecord]:
    """Moving-MNIST sequences: SRVP's npz, our npz / frame folders / mp4s (``root`` = folder or file).

    SRVP's file (``[s]mmnist_test_*.npz``, or any npz with SRVP's ``latents`` array) is read as
    ``(T, N, H, W)``; our npz as ``(N, T, H, W)``. Files named for another split are skipped;
    frame folders and videos take their split from the ``meta.json`` beside them when it has one.
    """
    root = Path(root).expanduser()
    _check_split(split, ("train", "test", "all"))
    files = [root] if root.is_file() else None
    root = _root(root.parent if files else root)
    meta = _read_meta(root)
    folder_split = meta.get("split", split)
    records = []
    entries = files or sorted(root.iterdir(), key=lambda p: natural_key(p.name))
    for p in entries:
        if p.name.startswith("."):
            continue
        if p.suffix == ".npz" and p.is_file():
            keys = _npz_keys(p)
            if "sequences" not in keys:
                continue
            m_srvp, m_ours = _SRVP_NPZ.match(p.name), _OUR_NPZ.match(p.name)
            file_split = (m_srvp.group(2) if m_srvp else m_ours.group(1) if m_ours else folder_split)
            if split != "all" and file_split != split:
                continue
            axes = "TNHW" if (m_srvp or "latents" in keys) else "NTHW"
            shape, _dtype = npz_array_shape(p, "sequences")
            if len(shape) != 4:
                raise DataFormatError(f"{p}: 'sequences' has shape {shape}, expected 4 axes ({axes})",
                                      "pass SRVP's smmnist_test_*.npz or a moving_digits npz")
            n, length = (shape[1], shape[0]) if axes == "TNHW" else (shape[0], shape[1])
            for i in range(n):
                records.append(ClipRecord(f"{p.stem}/{i:05d}", file_split, "moving_digits", array=p,
                                          array_index=i, array_axes=axes,
                                          meta={"length": length, "height": shape[2], "width": shape[3]}))
        elif _SEQ_NAME.match(p.name):
            if split != "all" and folder_split != split:
                continue
            if p.is_dir() and (frames := _images(p)):
                records.append(ClipRecord(p.name, folder_split, "moving_digits", frames=tuple(frames)))
            elif p.is_file() and p.suffix.lower() in _VIDEO_EXTS:
                records.append(ClipRecord(p.stem, folder_split, "moving_digits", video=p))
    if not records:
        raise _nothing("moving-MNIST", root, _MD_EXPECTED, split)
    return records


# --------------------------------------------------------------------------- synth-street

_SS_EXPECTED = "<root>/<sequence>/frames/*.png with labels/*.png, flow_forward.npz, meta.json (vpcli synth-street)"


def synth_street_companions(seq_dir: Path) -> dict:
    """Labels and forward flow stored inside a synth-street sequence folder, when present."""
    comp: dict = {}
    if _images(seq_dir / "labels"):
        comp["labels"] = seq_dir / "labels"
        comp["labels_format"] = "train_ids"
    elif (seq_dir / "labels.npz").is_file():
        comp["labels"] = seq_dir / "labels.npz"
        comp["labels_format"] = "train_ids"
    if (seq_dir / "flow_forward.npz").is_file():
        comp["flow"] = seq_dir / "flow_forward.npz"
    return comp


def is_synth_street_sequence(folder: Path) -> bool:
    return (folder / "frames").is_dir() and (
        (folder / "flow_forward.npz").is_file() or (folder / "labels").is_dir() or (folder / "meta.json").is_file())


def scan_synth_street(root, split: str = "all") -> list[ClipRecord]:
    """synth-street sequence folders under ``root`` (or ``root`` itself); the split comes from each
    ``meta.json`` when it names one, else the record's split is ``"all"`` and nothing is filtered."""
    root = _root(root)
    _check_split(split, ("train", "val", "test", "all"))
    cands = [root] if is_synth_street_sequence(root) else [d for d, _, _ in _walk(root, max_depth=3)
                                                               if is_synth_street_sequence(d)]
    records = []
    for d in cands:
        frames = _images(d / "frames")
        if not frames:
            continue
        seq_split = _read_meta(d).get("split", "all")
        if split != "all" and seq_split not in (split, "all"):
            continue
        sid = d.name if d == root else d.relative_to(root).as_posix()
        records.append(ClipRecord(sid, seq_split, "synth_street", frames=tuple(frames),
                                  companions=synth_street_companions(d)))
    if not records:
        raise _nothing("synth-street", root, _SS_EXPECTED, split)
    return records


# --------------------------------------------------------------------------- detection

LAYOUTS: dict[str, Callable[..., list[ClipRecord]]] = {
    "kth": scan_kth, "cityscapes": scan_cityscapes, "kitti": scan_kitti, "bair": scan_bair,
    "moving_digits": scan_moving_digits, "synth_street": scan_synth_street,
}


def detect_layout(root) -> str | None:
    """Guess which layout ``root`` holds (a key of :data:`LAYOUTS`), or ``None``.

    Looks at names only, at most three folder levels deep.
    """
    root = Path(root).expanduser()
    if root.is_file():
        return "moving_digits" if root.suffix == ".npz" and "sequences" in _npz_keys(root) else None
    if not root.is_dir():
        return None
    if root.name == "leftImg8bit_sequence" or (root / "leftImg8bit_sequence").is_dir():
        return "cityscapes"
    if root.name == "processed_data" or (root / "processed_data").is_dir():
        return "bair"
    if _read_meta(root).get("generator", "").endswith("moving_digits"):
        return "moving_digits"
    if is_synth_street_sequence(root):
        return "synth_street"
    for d, dirnames, files in _walk(root, max_depth=3):
        if _KITTI_DRIVE.match(d.name) and (d / "image_02").is_dir():
            return "kitti"
        if _CS_FRAME.match(files[0] if files else "") or any(_CS_FRAME.match(f) for f in files[:3]):
            return "cityscapes"
        if any(_KTH_NAME.match(os.path.splitext(f)[0]) for f in files[:50]) or any(
                _KTH_NAME.match(n) for n in dirnames[:50]):
            return "kth"
        if any(_SRVP_NPZ.match(f) or _OUR_NPZ.match(f) for f in files):
            return "moving_digits"
        if is_synth_street_sequence(d):
            return "synth_street"
    return None


def scan(root, layout: str | None = None, split: str = "train", **kwargs) -> list[ClipRecord]:
    """Scan ``root`` with the reader for ``layout`` (detected when ``None``)."""
    name = layout or detect_layout(root)
    if name is None:
        raise InputError(f"cannot tell which dataset layout {root} holds",
                         f"pass layout= one of {', '.join(LAYOUTS)}, or point at the dataset's top folder")
    if name not in LAYOUTS:
        raise UsageError(f"unknown layout {name!r}", f"use one of {', '.join(LAYOUTS)}")
    return LAYOUTS[name](root, split=split, **kwargs)

"""Folder mode: find clips in a prediction and a ground-truth folder, match them by name, score them.

Matching rule (also in ``vpcli eval --help``):

1. Both folders are searched recursively for clips of three kinds: RGB frames (video files,
   frame folders, ``.npz`` stacks with key ``frames`` -- uint8 or float in [0, 1], ``(T, H, W)``
   or ``(T, H, W, C)``), label maps (label-image folders, ``.npz`` with key ``labels``, int
   ``(T, H, W)`` class ids) and forward flow (``.flo`` folders, ``.npz`` with key ``flow``,
   float ``(T, 2, H, W)``). Label maps and flow also come from companions beside a clip ``X``
   (``X.labels/``, ``X.labels.npz``, ``X.flow/``, ``X.flow.npz``).
2. The folders vpcli writes are one clip each, named after the folder, whatever they hold
   inside: a synth-street sequence (``frames/``, ``labels/``, ``flow_forward.npz``), `vpcli data
   convert` (``video.mp4`` or ``frames/``), `vpcli segment` (``labels/``, ``labels.npz``), `vpcli
   flow` (``flow_forward.npz``, ``forward/*.flo``) -- anything else inside them (overlays, colour
   wheels) is not a clip. So ``converted/clip01/video.mp4`` is the clip ``clip01``.
3. Any other clip's name is its path relative to the folder without the extension
   (``city/clip01.mp4`` -> ``city/clip01``).
4. In the prediction folder, ``NAME/sample_K`` (a video, frame folder or ``.npz``, and its
   ``sample_K.labels/`` / ``sample_K.flow/``) is sample K of ``NAME`` -- the layout `vpcli predict
   --samples N` writes; other clips inside a folder that holds samples (``context.mp4``, grids)
   are ignored and listed in ``results.json``. Any other clip is the single sample of its name.
5. Every ground-truth name needs a prediction and every prediction a ground truth, for each kind
   the metrics need; otherwise the error lists the unmatched names.
6. Frames are compared one to one: ground-truth frame ``offset + t`` with prediction frame ``t``.
   The offset comes from the prediction's ``meta.json`` when `vpcli predict` wrote it: its first
   predicted frame, so the context is never scored -- unless the ground truth is not the clip
   predicted from (another frame count) and no longer than the horizon: then it holds only the
   predicted frames (offset 0, with a warning). Without a meta.json the offset is 0. ``gt_offset``
   sets it for every clip; one that would score a predicted frame against a context frame of the
   clip it was predicted from is a usage error.
   Predicted flow (``sample_K.flow/``) runs from the previous frame into each predicted frame, so
   it is compared with ground-truth flow ``offset - 1 + t``.
7. Sizes. A prediction that vpcli made (its folder has vpcli's ``meta.json``: predict, segment,
   flow) at another size than the ground truth is scored at its own size: the ground truth is
   resized to it (INTER_AREA when shrinking, bilinear when enlarging; nearest neighbour for
   labels; flow vectors scaled), when the aspect ratio is the same or `vpcli predict --resize`
   made exactly that change -- one warning says so. Other size differences are an error naming
   both files, unless ``align=True`` (predictions resized to the ground truth, with a warning).
8. Lengths. A `vpcli predict` output is scored over the frames both have: the ground truth
   usually goes on after the horizon, and frames predicted past the clip's end (said in one
   warning) have no truth. Other length differences are an error, unless ``align=True`` (both
   truncated to the shorter, with a warning).

Passing two single clips (files or folders) pairs them directly.

Clips are discovered with the data layer's conventions (:mod:`vpcli.io.sources` for sequence
folders, converted folders and companions, :mod:`vpcli.data.layouts` for a sequence folder's own
label maps); label and flow files are read by :mod:`vpcli.io.labels` and :mod:`vpcli.io.flow`.
"""
from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vpcli.engine.evaluate.aggregate import (
    Aggregator,
    FeatureSet,
    SequenceRef,
    select_best,
)
from vpcli.engine.evaluate.metrics import MetricRunner
from vpcli.engine.evaluate.outputs import _to_uint8
from vpcli.errors import DataFormatError, InputError, UsageError

if TYPE_CHECKING:
    from vpcli.engine.evaluate.options import Callback

_SAMPLE_RE = re.compile(r"^sample_\d+$", re.IGNORECASE)
_FRAME_KEYS = ("frames", "rgb", "video")
_LIST_MAX = 10
KINDS = ("rgb", "labels", "flow")
# What a metric kind (vpcli.metrics) scores in folder mode.
DATA_KIND = {"frame": "rgb", "video_set": "rgb", "label": "labels", "flow": "flow"}
_WHAT = {"rgb": "videos, frame folders or .npz frame stacks", "labels": ".npz label stacks or label folders",
         "flow": ".flo folders or .npz flow stacks"}
_NOUN = {"rgb": "clips", "labels": "label maps", "flow": "flows"}
MADE_BY = ("predict", "segment", "flow")  # vpcli commands whose meta.json eval reads


class EvalWarning(UserWarning):
    """Something the evaluation adapted (truncation, resizing) that the user should know about."""


@dataclass
class ClipSource:
    """One clip on disk: a video/frame folder, an .npz stack, a label folder or a .flo folder."""

    path: Path
    kind: str  # "rgb" | "labels" | "flow"


@dataclass(frozen=True)
class MadeBy:
    """What the ``meta.json`` of a prediction's folder says about how vpcli made it."""

    command: str                                # predict | segment | flow
    meta: Path
    context: tuple[int, int] | None = None      # [s, e): predict's context frames of its input
    horizon: int | None = None
    source_frames: int | None = None
    size: tuple[int, int] | None = None         # predict: the size the model ran at
    source_size: tuple[int, int] | None = None  # predict: the input's size
    resized: bool = False                       # predict --resize changed the size

    @property
    def first(self) -> int:
        """The input frame that prediction frame 0 shows (segment and flow start at frame 0)."""
        return self.context[1] if self.context else 0


def read_made_by(folder: Path) -> MadeBy | None:
    """:class:`MadeBy` of ``folder/meta.json`` when a vpcli predict/segment/flow wrote it, else None."""
    path = folder / "meta.json"
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        warnings.warn(f"{path} is not readable JSON ({e}): ignored, the clip is scored as plain files",
                      EvalWarning, stacklevel=2)
        return None
    if not isinstance(meta, dict) or meta.get("command") not in MADE_BY:
        return None

    def pair(v: Any) -> tuple[int, int] | None:
        return (int(v[0]), int(v[1])) if isinstance(v, (list, tuple)) and len(v) == 2 else None

    source = meta.get("source") if isinstance(meta.get("source"), dict) else {}
    frames = source.get("frames")
    made = MadeBy(meta["command"], path, source_frames=int(frames) if isinstance(frames, int) else None)
    if meta["command"] != "predict":
        return made
    ctx = meta.get("context") if isinstance(meta.get("context"), dict) else {}
    idx = ctx.get("indices") or []
    first = meta.get("first_predicted_frame", idx[-1] + 1 if idx else None)
    if first is None:
        return made
    start = int(ctx.get("start", idx[0] if idx else first))
    resized = any("resized" in str(c) for c in meta.get("conversions") or [])
    return MadeBy("predict", path, context=(start, int(first)), horizon=meta.get("horizon"),
                  source_frames=made.source_frames, size=pair(meta.get("size")),
                  source_size=pair(meta.get("source_size")), resized=resized)


def _npz_keys(path: Path) -> list[str]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return list(data.files)
    except (ValueError, OSError, EOFError) as e:
        raise DataFormatError(f"{path} is not a readable .npz file: {e}", "write stacks with numpy.savez") from None


def _npz_kind(path: Path) -> str:
    keys = _npz_keys(path)
    if "labels" in keys:
        return "labels"
    if "flow" in keys:
        return "flow"
    if any(k in keys for k in _FRAME_KEYS):
        return "rgb"
    raise DataFormatError(f"{path} holds neither 'frames', 'labels' nor 'flow' (keys: {', '.join(keys) or 'none'})",
                          "store RGB as frames=(T,H,W[,C]), class ids as labels=(T,H,W), flow as flow=(T,2,H,W)")


def folder_members(folder: Path) -> dict[str, ClipSource]:
    """The clip a folder written by vpcli holds, by kind (rule 2 of the module docstring); {} for
    any other folder. Recognised by ``meta.json`` or a synth-street ``frames/``."""
    from vpcli.data.layouts import synth_street_companions
    from vpcli.io.sources import converted_clip, is_sequence_folder
    sequence = is_sequence_folder(folder)
    if not sequence and not (folder / "meta.json").is_file():
        return {}
    members: dict[str, ClipSource] = {}
    video = None if sequence else converted_clip(folder)
    if sequence or video is not None:
        members["rgb"] = ClipSource(folder / "frames" if sequence else video, "rgb")
    comp = synth_street_companions(folder)  # labels/ (images) or labels.npz; flow_forward.npz
    if "labels" in comp:
        members["labels"] = ClipSource(Path(comp["labels"]), "labels")
    if "flow" in comp:
        members["flow"] = ClipSource(Path(comp["flow"]), "flow")
    elif (folder / "forward").is_dir() and any((folder / "forward").glob("*.flo")):  # vpcli flow
        members["flow"] = ClipSource(folder / "forward", "flow")
    return members


def scan_clips(root: Path) -> list[tuple[str, ClipSource]]:
    """Every clip under ``root`` with its name (rules 1-3 of the module docstring), natural order.

    What a clip is, and which files are a clip's companions, is the data layer's rule (the one
    ``vpcli train`` and ``vpcli predict`` read clips by); unlike a dataset, a label or flow
    companion here is a clip of its own, so label maps or flow without frames can be scored too.
    """
    from vpcli.io.paths import list_folder
    from vpcli.io.sources import companion_of
    from vpcli.io.video import is_frame_folder, is_video_file

    found: list[tuple[str, ClipSource]] = []

    def visit(folder: Path, rel: PurePosixPath, depth: int) -> None:
        for entry in list_folder(folder):
            companion = companion_of(entry)
            if companion is not None:  # X.labels/, X.labels.npz, X.flow/, X.flow.npz: of the clip X
                clip, kind = companion
                stack = entry.name.endswith(".npz")
                if entry.is_file() if stack else entry.is_dir():
                    found.append((str(rel / clip), ClipSource(entry, kind)))
            elif entry.is_dir():
                members = folder_members(entry)
                if members:
                    found.extend((str(rel / entry.name), src) for src in members.values())
                elif is_frame_folder(entry):
                    found.append((str(rel / entry.name), ClipSource(entry, "rgb")))
                elif depth < 32:
                    visit(entry, rel / entry.name, depth + 1)
            elif entry.is_file():
                if entry.name.lower().endswith(".npz"):
                    found.append((str(rel / entry.name[:-4]), ClipSource(entry, _npz_kind(entry))))
                elif is_video_file(entry):
                    found.append((str(rel / entry.stem), ClipSource(entry, "rgb")))

    visit(root, PurePosixPath(""), 0)
    return found


def _single_clip(path: Path) -> dict[str, ClipSource] | None:
    """``path`` itself as one clip (by kind), or None for a folder of clips."""
    from vpcli.io.sources import companion_of
    from vpcli.io.video import is_frame_folder, is_video_file
    if path.is_file():
        if path.suffix.lower() == ".npz":
            kind = _npz_kind(path)
            return {kind: ClipSource(path, kind)}
        if is_video_file(path):
            return {"rgb": ClipSource(path, "rgb")}
        raise InputError(f"{path} is not a video or .npz file", "pass a folder of clips, a video or an .npz stack")
    members = folder_members(path)
    if members:
        return members
    companion = companion_of(path)
    if companion is not None and path.is_dir():  # sample_000.labels/, X.flow/
        return {companion[1]: ClipSource(path, companion[1])}
    if is_frame_folder(path):
        return {"rgb": ClipSource(path, "rgb")}
    if path.is_dir() and any(path.glob("*.flo")):
        return {"flow": ClipSource(path, "flow")}
    return None


def _single_made_by(path: Path) -> MadeBy | None:
    """The meta.json that describes a single prediction clip: its own folder's, or, for a sample
    (``NAME/sample_K.*``), the prediction folder's."""
    from vpcli.io.sources import companion_of
    if path.is_dir() and folder_members(path):
        return read_made_by(path)
    stem = path.name[:-4] if path.name.lower().endswith(".npz") else path.stem if path.is_file() else path.name
    companion = companion_of(path)
    if companion is not None:
        stem = companion[0]
    return read_made_by(path.parent) if _SAMPLE_RE.match(stem) else None


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_LIST_MAX])
    return shown + (f" (+{len(names) - _LIST_MAX} more)" if len(names) > _LIST_MAX else "")


def _group(found: list[tuple[str, ClipSource]], where: Path, *, samples: bool
           ) -> tuple[dict[str, dict[str, list[tuple[str, ClipSource]]]], list[str]]:
    """name -> kind -> [(sample name, source)]; plus the ignored names. Duplicate names raise."""
    groups: dict[str, dict[str, list[tuple[str, ClipSource]]]] = {}
    sample_parents = set()
    if samples:
        for name, _ in found:
            p = PurePosixPath(name)
            if _SAMPLE_RE.match(p.name) and str(p.parent) != ".":
                sample_parents.add(str(p.parent))
    ignored: list[str] = []
    dupes: list[str] = []
    for name, src in found:
        p = PurePosixPath(name)
        if samples and _SAMPLE_RE.match(p.name) and str(p.parent) in sample_parents:
            clip, sample = str(p.parent), p.name
        elif samples and any(str(a) in sample_parents for a in p.parents if str(a) != "."):
            ignored.append(name)  # e.g. NAME/context.mp4 beside NAME/sample_000.mp4
            continue
        else:
            clip, sample = name, ""
        per_kind = groups.setdefault(clip, {}).setdefault(src.kind, [])
        if any(s == sample for s, _ in per_kind) or (sample == "" and per_kind) or (sample and any(s == "" for s, _ in per_kind)):
            dupes.append(f"{clip} ({', '.join(str(x.path) for _, x in per_kind)} and {src.path})")
            continue
        per_kind.append((sample, src))
    if dupes:
        raise InputError(f"{len(dupes)} name(s) in {where} have more than one clip: {_listing(dupes)}",
                         "keep one clip per name (a video, a frame folder or an .npz), or samples as NAME/sample_000.*")
    return groups, list(dict.fromkeys(ignored))


@dataclass
class FolderPlan:
    """Matched pairs: sequence name -> kind -> (gt source, [(sample name, pred source)]); the
    meta.json facts of predictions vpcli made; the ground-truth offset of every sequence."""

    pairs: dict[str, dict[str, tuple[ClipSource, list[tuple[str, ClipSource]]]]]
    ignored: list[str]
    made_by: dict[str, MadeBy] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)   # set by resolve_offsets
    offset_source: str = "0"                                 # "--gt-offset", "meta.json" or "0"


def match_folders(pred: Path, gt: Path, kinds: set[str]) -> FolderPlan:
    """Apply the matching rule (module docstring) and list every unmatched name in one error."""
    for role, path in (("--pred", pred), ("--gt", gt)):
        if not path.exists():
            raise InputError(f"{role} {path} does not exist", "check the path")
    single_pred, single_gt = _single_clip(pred), _single_clip(gt)
    if (single_pred is None) != (single_gt is None):
        raise UsageError(f"--pred {pred} and --gt {gt}: one is a single clip, the other a folder of clips",
                         "pass two folders of clips (matched by name) or two single clips")
    if single_pred is not None:
        name = gt.stem if gt.is_file() else (gt.name if gt.name != "frames" else gt.parent.name)
        common = [k for k in KINDS if k in kinds and k in single_pred and k in single_gt]
        if not common:
            have_p, have_g = "/".join(single_pred), "/".join(single_gt)
            raise DataFormatError(f"--pred {pred} holds {have_p} but --gt {gt} holds {have_g}"
                                  + ("" if set(single_pred) != set(single_gt) else
                                     f", and the metrics score {'/'.join(sorted(kinds))}"),
                                  "compare frames with frames, label maps with label maps and flow with flow")
        made = _single_made_by(pred)
        return FolderPlan({name: {k: (single_gt[k], [("", single_pred[k])]) for k in common}}, [],
                          {name: made} if made else {})
    pred_groups, ignored = _group(scan_clips(pred), pred, samples=True)
    gt_groups, _ = _group(scan_clips(gt), gt, samples=False)
    problems = []
    pairs: dict[str, dict[str, tuple[ClipSource, list[tuple[str, ClipSource]]]]] = {}
    for kind in [k for k in KINDS if k in kinds]:
        g_names = [n for n, k in gt_groups.items() if kind in k]
        p_names = [n for n, k in pred_groups.items() if kind in k]
        if not g_names and not p_names:
            raise InputError(f"no {_WHAT[kind]} in {gt} or {pred}",
                             "check the folders" + {"labels": " (mIoU needs label maps)",
                                                    "flow": " (EPE needs forward flow)"}.get(kind, ""))
        no_pred = [n for n in g_names if n not in pred_groups or kind not in pred_groups[n]]
        no_gt = [n for n in p_names if n not in gt_groups or kind not in gt_groups[n]]
        label = _NOUN[kind]
        if no_pred:
            problems.append(f"{len(no_pred)} ground-truth {label} without a prediction: {_listing(no_pred)}")
        if no_gt:
            problems.append(f"{len(no_gt)} predicted {label} without ground truth: {_listing(no_gt)}")
        for n in g_names:
            if n in pred_groups and kind in pred_groups[n]:
                (_, gsrc), = gt_groups[n][kind]
                samples = sorted(pred_groups[n][kind], key=lambda s: _sample_key(s[0]))
                pairs.setdefault(n, {})[kind] = (gsrc, samples)
    if problems:
        raise InputError("; ".join(problems),
                         "predictions match ground truth by relative path without extension (NAME.mp4, NAME/ "
                         "frames, NAME.npz, a vpcli output folder NAME/, or samples NAME/sample_000.*)")
    from vpcli.io.paths import natural_key
    ordered = {n: pairs[n] for n in sorted(pairs, key=natural_key)}
    made_by = {}
    for n in ordered:
        folder = pred / n
        made = read_made_by(folder) if folder.is_dir() else None
        if made is not None:
            made_by[n] = made
    return FolderPlan(ordered, ignored, made_by)


def clip_length(src: ClipSource) -> int | None:
    """Frames a clip covers, read from headers (a flow clip of T fields covers T + 1 frames); None
    when it cannot be told without decoding."""
    from vpcli.data.layouts import npz_array_shape
    from vpcli.io.labels import LABEL_IMAGE_EXTS
    path = src.path
    try:
        if path.is_file() and path.suffix.lower() == ".npz":
            key = {"labels": "labels", "flow": "flow"}.get(src.kind) or next(k for k in _FRAME_KEYS
                                                                              if k in _npz_keys(path))
            n = npz_array_shape(path, key)[0][0]
        elif src.kind == "rgb":
            from vpcli.io.video import probe
            n = probe(path).num_frames
        else:
            exts = LABEL_IMAGE_EXTS if src.kind == "labels" else {".flo"}
            n = sum(1 for f in path.iterdir() if f.suffix.lower() in exts and not f.name.startswith("."))
    except (OSError, StopIteration, IndexError, InputError):
        return None
    return int(n) + (1 if src.kind == "flow" else 0)


def resolve_offsets(plan: FolderPlan, gt_offset: int | None) -> FolderPlan:
    """Set every sequence's ground-truth offset (rule 6).

    Without ``gt_offset``: the first predicted frame from meta.json when the ground truth is the
    clip predicted from (as many frames as meta.json says it had); a ground truth of other length
    no longer than the horizon holds only the predicted frames (offset 0, with a warning); 0
    without a meta.json. With ``gt_offset``: that, for all; scoring a predicted frame against a
    context frame of the clip it was predicted from raises :class:`UsageError` (exit 2) naming
    them, and an offset that differs from meta.json otherwise is scored as asked, with a warning.
    """
    offsets: dict[str, int] = {}
    clashes: list[tuple[str, int]] = []  # (what, the clip's first predicted frame)
    differ: list[str] = []
    future_only: list[str] = []
    other_clip: list[str] = []
    for name, kinds in plan.pairs.items():
        made = plan.made_by.get(name)
        ctx = made.context if made is not None else None
        if ctx is None:
            offsets[name] = gt_offset if gt_offset is not None else 0
            continue
        s, e = ctx
        horizon = int(made.horizon or 1)
        n = next((clip_length(kinds[k][0]) for k in KINDS if k in kinds), None)
        same_clip = n is None or made.source_frames is None or n == made.source_frames
        if gt_offset is None:
            if same_clip or n > horizon:
                offsets[name] = e
                if not same_clip:
                    other_clip.append(f"'{name}' {n} frames, predicted from {made.source_frames}")
            else:
                offsets[name] = 0
                future_only.append(f"'{name}' {n} frames, predicted from {made.source_frames}")
            continue
        offsets[name] = gt_offset
        t0, t1 = max(0, s - gt_offset), min(horizon, e - gt_offset) - 1  # predicted frames landing in [s, e)
        if same_clip and t0 <= t1:
            what = (f"'{name}': predicted frames {_span(t0, t1)} against its context frames "
                    f"{_span(gt_offset + t0, gt_offset + t1)} (meta.json: context {_span(s, e - 1)}, "
                    f"first predicted frame {e})")
            clashes.append((what, e))
        elif same_clip and gt_offset != e:
            differ.append(f"'{name}' from frame {e}")
    if clashes:
        more = f" (and {len(clashes) - 1} more clip(s))" if len(clashes) > 1 else ""
        firsts = sorted({e for _, e in clashes})
        raise UsageError(f"--gt-offset {gt_offset} would score context frames, {clashes[0][0]}{more}",
                         "drop --gt-offset: the offset then comes from each prediction's meta.json"
                         + (f" (or pass --gt-offset {firsts[0]})" if len(firsts) == 1 else ""))
    if differ:
        warnings.warn(f"--gt-offset {gt_offset}: {len(differ)} prediction(s) start at another frame by their "
                      f"meta.json ({_listing(differ)}); scored against ground-truth frame {gt_offset} + t as asked",
                      EvalWarning, stacklevel=2)
    if future_only:
        warnings.warn(f"{len(future_only)} ground-truth clip(s) are not the clip their prediction was made from and "
                      f"no longer than its horizon ({_listing(future_only)}): taken as the predicted frames only "
                      f"(offset 0); pass --gt-offset N if they hold more", EvalWarning, stacklevel=2)
    if other_clip:
        warnings.warn(f"{len(other_clip)} ground-truth clip(s) differ in length from the clip their prediction was "
                      f"made from ({_listing(other_clip)}): scored from the first predicted frame of meta.json, "
                      f"which assumes the same frame numbers", EvalWarning, stacklevel=2)
    plan.offsets = offsets
    if gt_offset is not None:
        plan.offset_source = "--gt-offset"
    elif any(m.context for m in plan.made_by.values()):
        plan.offset_source = "meta.json"
    return plan


def _span(a: int, b: int) -> str:
    return str(a) if a == b else f"{a}..{b}"


def _sample_key(sample: str) -> int:
    digits = re.sub(r"\D", "", sample)
    return int(digits) if digits else -1


# ----------------------------------------------------------------------------- reading

def load_frames(src: ClipSource, *, start: int = 0) -> np.ndarray:
    """RGB clip -> ``float32 (T, C, H, W)`` in [0, 1] (C = 3, or 1 for grey .npz stacks), from frame ``start``."""
    path = src.path
    if path.suffix.lower() == ".npz" and path.is_file():
        with np.load(path, allow_pickle=False) as data:
            key = next(k for k in _FRAME_KEYS if k in data.files)
            arr = data[key]
        if arr.ndim == 3:
            arr = arr[..., None]
        if arr.ndim != 4 or arr.shape[-1] not in (1, 3):
            raise DataFormatError(f"{path}: '{key}' must be (T, H, W) or (T, H, W, C) with C 1 or 3, "
                                  f"got shape {arr.shape}", "store frames channels-last, like video frames")
        arr = arr[start:]
        if arr.dtype == np.uint8:
            x = arr.astype(np.float32) / 255.0
        elif np.issubdtype(arr.dtype, np.floating):
            x = arr.astype(np.float32)
            bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
            if bad.any():
                frames = np.nonzero(bad)[0] + start
                raise DataFormatError(f"{path} holds NaN or Inf in frame(s) {_listing([str(int(f)) for f in frames])} "
                                      f"({int(bad.sum())} of {len(arr) + start} frames)",
                                      "fix the model output or drop those frames; NaN cannot be scored")
        else:
            raise DataFormatError(f"{path}: '{key}' must be uint8 (0..255) or float in [0, 1], got {arr.dtype}",
                                  "convert with frames.astype(np.float32) / 255")
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # T,H,W,C -> T,C,H,W
    from vpcli.io.video import probe, read_video
    n = probe(path).num_frames
    if start >= n:
        return np.zeros((0, 3, 1, 1), np.float32)
    frames, _ = read_video(path, start=start)
    return np.divide(frames.transpose(0, 3, 1, 2), np.float32(255.0), dtype=np.float32)


def load_labels(src: ClipSource, *, start: int = 0) -> np.ndarray:
    """Label clip -> ``int64 (T, H, W)`` class ids, from frame ``start``."""
    from vpcli.io.labels import read_label_folder, read_labels_npz
    if src.path.is_dir():
        labels = read_label_folder(src.path)
    else:
        labels, _ = read_labels_npz(src.path)
    return labels[start:]


def load_flow(src: ClipSource, *, start: int = 0) -> np.ndarray:
    """Flow clip -> ``float32 (T, 2, H, W)`` (``[t]``: frame t -> t+1, or into predicted frame t), from ``start``."""
    from vpcli.io.flow import read_flo_folder, read_flow_npz
    flow = read_flo_folder(src.path) if src.path.is_dir() else read_flow_npz(src.path)
    return np.ascontiguousarray(flow[start:], dtype=np.float32)


_LOADERS = {"rgb": load_frames, "labels": load_labels, "flow": load_flow}


def _kind_start(kind: str, offset: int, made: MadeBy | None) -> int:
    """The ground-truth index that prediction step 0 is compared with (rule 6)."""
    if kind == "flow" and made is not None and made.command == "predict":
        return max(offset - 1, 0)  # predicted flow t: from frame offset + t - 1 into frame offset + t
    return offset


# ----------------------------------------------------------------------------- sizes and lengths

def _hw(x: np.ndarray, kind: str) -> tuple[int, int]:
    return (int(x.shape[1]), int(x.shape[2])) if kind == "labels" else (int(x.shape[2]), int(x.shape[3]))


def _shape_text(x: np.ndarray, kind: str) -> str:
    h, w = _hw(x, kind)
    extra = f", {x.shape[1]} channels" if kind == "rgb" and x.shape[1] != 3 else ""
    return f"{h}x{w} (HxW){extra}"


def _same_aspect(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """True when scaling ``a`` to ``b``'s height (or width) gives ``b``'s width (or height), to the pixel."""
    (H, W), (h, w) = a, b
    return round(W * h / H) == w or round(H * w / W) == h


def _may_resize_gt(made: MadeBy | None, gt_hw: tuple[int, int], pred_hw: tuple[int, int]) -> str | None:
    """Why the ground truth may be resized to a vpcli prediction's size (rule 7), or None."""
    if made is None:
        return None
    if made.resized and made.source_size == gt_hw and made.size == pred_hw:
        return "as vpcli predict --resize resized the context"
    if _same_aspect(gt_hw, pred_hw):
        return "same aspect ratio"
    return None


def _resize_to(x: np.ndarray, hw: tuple[int, int], kind: str) -> np.ndarray:
    """Resize a clip of ``kind`` to ``hw``: frames as vpcli.io.video does (INTER_AREA when
    shrinking, else bilinear), labels by nearest neighbour, flow bilinearly with scaled vectors."""
    import cv2

    from vpcli.data.clips import _resize_flow, _resize_labels
    if kind == "labels":
        return _resize_labels(x, hw)
    if kind == "flow":
        return _resize_flow(x, hw)
    h, w = hw
    interp = cv2.INTER_AREA if h <= x.shape[2] and w <= x.shape[3] else cv2.INTER_LINEAR
    out = np.stack([cv2.resize(np.ascontiguousarray(f.transpose(1, 2, 0)), (w, h), interpolation=interp)
                    .reshape(h, w, -1).transpose(2, 0, 1) for f in x])  # T,C,H,W
    return np.ascontiguousarray(out, dtype=np.float32)


def _resize_like(pred: np.ndarray, gt: np.ndarray, kind: str) -> np.ndarray:
    """``--align``: a prediction resized (and for RGB, channel-matched) to its ground truth."""
    out = _resize_to(pred, _hw(gt, kind), kind)
    if kind == "rgb" and out.shape[1] != gt.shape[1]:
        out = np.repeat(out, gt.shape[1], axis=1) if out.shape[1] == 1 else out.mean(axis=1, keepdims=True)
    return np.ascontiguousarray(out, dtype=np.int64 if kind == "labels" else np.float32)


@dataclass
class Adapted:
    """What folder mode adapted without being asked (rules 7 and 8), said in one warning each at the end."""

    resized: dict[str, tuple[tuple[int, int], tuple[int, int], str]] = field(default_factory=dict)
    past_end: dict[str, tuple[int, int]] = field(default_factory=dict)

    def warn(self) -> None:
        if self.resized:
            name, (g, p, why) = next(iter(self.resized.items()))
            warnings.warn(f"scored {len(self.resized)} prediction(s) made by vpcli at their own size: ground truth "
                          f"resized to it ({why}; meta.json), e.g. '{name}' {g[0]}x{g[1]} -> {p[0]}x{p[1]} (HxW)",
                          EvalWarning, stacklevel=2)
        if self.past_end:
            name, (p, g) = next(iter(self.past_end.items()))
            warnings.warn(f"{len(self.past_end)} prediction(s) run past the end of their ground truth: scored the "
                          f"frames that exist, e.g. '{name}' {g} of {p} predicted frames", EvalWarning, stacklevel=2)


def _reconcile(name: str, kind: str, pred: np.ndarray, gt: np.ndarray, pred_src: ClipSource, gt_src: ClipSource, *,
               align: bool, start: int, made: MadeBy | None, adapted: Adapted | None,
               resized_gt: dict[tuple[int, int], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """A prediction and its ground truth (from ``start``) made comparable by rules 7 and 8, or an
    error naming both files. ``resized_gt`` caches the ground truth per prediction size."""
    predicted = made is not None and made.command == "predict"
    if len(gt) == 0:
        if predicted and made.context:
            raise DataFormatError(f"ground truth {gt_src.path} for '{name}' has no frames from frame {start} on, the "
                                  f"first one {made.command} predicted ({made.meta})",
                                  "predict with --start S so that the predicted frames lie inside the clip "
                                  "(e.g. --start 0), or compare with a longer clip")
        after = f" after skipping {start} frame(s) (--gt-offset)" if start else ""
        raise DataFormatError(f"ground truth {gt_src.path} for '{name}' has no frames{after}",
                              "lower --gt-offset or check the clip")
    ph, gh = _hw(pred, kind), _hw(gt, kind)
    if ph != gh:
        why = _may_resize_gt(made, gh, ph)
        if why is not None:
            if ph not in resized_gt:
                resized_gt[ph] = _resize_to(gt, ph, kind)
            gt = resized_gt[ph]
            if adapted is not None:
                adapted.resized.setdefault(name, (gh, ph, why))
    if pred.shape[1:] != gt.shape[1:]:
        what = (f"size mismatch for '{name}': prediction {pred_src.path} is {_shape_text(pred, kind)} "
                f"but ground truth {gt_src.path} is {_shape_text(gt, kind)}")
        if not align:
            raise DataFormatError(what, "resize the predictions to the ground truth's size, or pass --align "
                                        "to resize them here (values then depend on the interpolation)")
        pred = _resize_like(pred, gt, kind)
        warnings.warn(f"{what}; resized the prediction (--align)", EvalWarning, stacklevel=2)
    if len(pred) != len(gt):
        t = min(len(pred), len(gt))
        if predicted:  # the clip goes on after the horizon, or the horizon after the clip
            if len(pred) > len(gt) and adapted is not None:
                adapted.past_end[name] = (len(pred), len(gt))
        else:
            after = f" after skipping {start} frame(s) (--gt-offset)" if start else ""
            what = (f"length mismatch for '{name}': prediction {pred_src.path} has {len(pred)} frames but ground "
                    f"truth {gt_src.path} has {len(gt)}{after}")
            if not align:
                raise DataFormatError(what, "pass --align to truncate both to the shorter length, or --gt-offset N "
                                            "to skip N context frames of the ground truth")
            warnings.warn(f"{what}; compared the first {t} frames (--align)", EvalWarning, stacklevel=2)
        pred, gt = pred[:t], gt[:t]
    return pred, gt


# ----------------------------------------------------------------------------- scoring

def _evaluate_folders(plan: FolderPlan, metrics: list[MetricRunner], agg: Aggregator, fvd: FeatureSet | None, *,
                      align: bool, device: str, callback: Callback) -> None:
    by_kind = {k: [m for m in metrics if m.kind != "video_set" and DATA_KIND[m.kind] == k] for k in KINDS}
    primary = DATA_KIND[agg.primary.kind] if agg.primary is not None else "rgb"
    adapted = Adapted()
    total = len(plan.pairs)
    for i, (name, kinds) in enumerate(plan.pairs.items()):
        values: dict[str, np.ndarray] = {}
        capped: dict[str, np.ndarray | None] = {}
        ref: dict[str, Any] = {}
        made = plan.made_by.get(name)
        for kind in sorted(kinds, key=lambda k: (k != primary, KINDS.index(k))):  # the primary's kind first
            ms = by_kind[kind]
            if not ms and not (kind == "rgb" and fvd is not None):
                continue
            gsrc, samples = kinds[kind]
            start = _kind_start(kind, plan.offsets.get(name, 0), made)
            gt = _LOADERS[kind](gsrc, start=start)
            resized_gt: dict[tuple[int, int], np.ndarray] = {}
            for m in ms:
                values[m.name] = np.full((len(samples), max(len(gt), 1)), np.nan)
                capped[m.name] = np.zeros(values[m.name].shape, bool) if m.name == "psnr" else None
            deltas: dict[str, list[torch.Tensor]] = {m.name: [] for m in ms if m.kind == "label"}
            longest = 0
            for k, (_, psrc) in enumerate(samples):
                pred, g = _reconcile(name, kind, _LOADERS[kind](psrc), gt, psrc, gsrc, align=align, start=start,
                                     made=made, adapted=adapted, resized_gt=resized_gt)
                on = device if kind != "labels" else "cpu"  # the mIoU confusion matrix lives on the CPU
                p_t, g_t = torch.from_numpy(pred)[None].to(on), torch.from_numpy(g)[None].to(on)  # 1,T,...
                for m in ms:
                    before = m.impl.confusion.clone() if m.name in deltas else None
                    v, c = _scored(m, name, psrc.path, p_t, g_t)
                    if before is not None:  # the dataset-level confusion counts the kept sample only (below)
                        deltas[m.name].append(m.impl.confusion - before)
                        m.impl.confusion = before
                    values[m.name][k, :v.shape[1]] = v[0].numpy()
                    if c is not None:
                        capped[m.name][k, :c.shape[1]] = c[0].numpy()
                if kind == "rgb" and fvd is not None and k == 0:
                    fvd.add(p_t, g_t)
                longest = max(longest, len(g))
            for m in ms:  # truncated samples: no empty trailing steps
                values[m.name] = values[m.name][:, :longest]
                if capped[m.name] is not None:
                    capped[m.name] = capped[m.name][:, :longest]
                if m.name in deltas:
                    best, _, _ = select_best(values[m.name], m.higher_is_better)
                    m.impl.confusion += deltas[m.name][best]
            if "gt" not in ref:
                ref.update(gt=gsrc, samples=[s for _, s in samples], kind=kind, start=start, made=made,
                           name=name)
        record = agg.add(name, values, capped, ref)
        callback("sequence", {"index": i, "total": total, **record})
    adapted.warn()


def _scored(m: MetricRunner, name: str, path: Path, pred: torch.Tensor, gt: torch.Tensor):
    try:
        return m.per_frame(pred, gt)
    except DataFormatError as e:
        raise type(e)(f"{m.name} of '{name}' ({path}): {e.message}", e.hint) from None


def _folder_comparison(ref: SequenceRef, align: bool):
    """(context, ground truth, best sample) as uint8 ``(T, H, W, 3)`` frames for best.mp4 / worst.mp4."""
    kind, src, made, start = ref.data["kind"], ref.data["gt"], ref.data["made"], ref.data["start"]
    psrc: ClipSource = ref.data["samples"][ref.sample]
    load = _LOADERS[kind]
    gt_all = load(src)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EvalWarning)  # said once already, while scoring
        pred, gt = _reconcile(ref.data["name"], kind, load(psrc), gt_all[start:], psrc, src, align=align,
                              start=start, made=made, adapted=None, resized_gt={})
    s, e = made.context if made is not None and made.context else (0, start)
    ctx = gt_all[s:e] if kind != "flow" else gt_all[:0]
    if len(ctx) and _hw(ctx, kind) != _hw(gt, kind):
        ctx = _resize_to(ctx, _hw(gt, kind), kind)
    if kind == "labels":
        from vpcli.io.labels import colorize
        return (colorize(ctx) if len(ctx) else None), colorize(gt), colorize(pred)
    if kind == "flow":
        from vpcli.io.flow import flow_to_color, max_magnitude
        top = max(max_magnitude(gt), 1e-6)
        return None, np.stack([flow_to_color(f, top) for f in gt]), np.stack([flow_to_color(f, top) for f in pred])
    return (_to_uint8(ctx) if len(ctx) else None), _to_uint8(gt), _to_uint8(pred)

"""Folder mode: find clips in a prediction and a ground-truth folder, match them by name, score them.

Matching rule (also in ``vpcli eval --help``):

1. Both folders are searched recursively for clips: video files, frame folders, sequence
   folders (``frames/`` inside) and ``.npz`` stacks (key ``frames`` -- uint8 or float in [0, 1],
   ``(T, H, W)`` or ``(T, H, W, C)`` -- or key ``labels``, int ``(T, H, W)`` class ids).
   Label maps also come from ``X.labels.npz`` / ``X.labels/`` beside a clip ``X`` and from a
   sequence folder's ``labels/``.
2. A clip's name is its path relative to the folder without the extension
   (``city/clip01.mp4`` -> ``city/clip01``; ``seq_0001/frames`` -> ``seq_0001``).
3. In the prediction folder, ``NAME/sample_K`` (a video, frame folder or ``.npz``) is sample K of
   ``NAME`` -- the layout ``vpcli predict --samples N`` writes; other clips inside a folder that
   holds samples (composites, context videos) are ignored and listed in ``results.json``. Any
   other clip is the single sample of its name.
4. Every ground-truth name needs a prediction and every prediction a ground truth, for each kind
   the metrics need (RGB frames, label maps); otherwise the error lists the unmatched names.
5. Frames are compared one to one: ground-truth frame ``gt_offset + t`` with prediction frame
   ``t`` (``gt_offset`` skips context frames kept in the ground-truth clips). Different lengths
   or sizes are an error naming both files, unless ``align=True``: both are truncated to the
   shorter length and predictions resized to the ground truth's size, with a warning.

Passing two single clips (files or frame folders) pairs them directly.

Clips are discovered with the data layer's conventions (:mod:`vpcli.io.sources` for sequence
folders and companions, :mod:`vpcli.data.layouts` for a sequence folder's own label maps); label
files are read by :mod:`vpcli.io.labels`.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vpcli.engine.evaluate.aggregate import Aggregator, FeatureSet, SequenceRef, select_best
from vpcli.engine.evaluate.metrics import MetricRunner
from vpcli.engine.evaluate.outputs import _to_uint8
from vpcli.errors import DataFormatError, InputError, UsageError

if TYPE_CHECKING:
    from vpcli.engine.evaluate.options import Callback

_SAMPLE_RE = re.compile(r"^sample_\d+$", re.IGNORECASE)
_FRAME_KEYS = ("frames", "rgb", "video")
_LIST_MAX = 10


class EvalWarning(UserWarning):
    """Something the evaluation adapted (truncation, resizing) that the user should know about."""


@dataclass
class ClipSource:
    """One clip on disk: a video/frame folder, an .npz stack, or a label folder."""

    path: Path
    kind: str  # "rgb" | "labels"


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
    if any(k in keys for k in _FRAME_KEYS):
        return "rgb"
    raise DataFormatError(f"{path} holds neither 'frames' nor 'labels' (keys: {', '.join(keys) or 'none'})",
                          "store RGB as frames=(T,H,W[,C]) or class ids as labels=(T,H,W)")


def scan_clips(root: Path) -> list[tuple[str, ClipSource]]:
    """Every clip under ``root`` with its name (relative path without extension), natural order.

    What a clip is, and which files are a clip's companions, is the data layer's rule (the one
    ``vpcli train`` and ``vpcli predict`` read clips by); unlike a dataset, a label companion
    here is a clip of its own, so label maps without frames can be scored too.
    """
    from vpcli.data.layouts import synth_street_companions
    from vpcli.io.paths import list_folder
    from vpcli.io.sources import companion_of, is_sequence_folder
    from vpcli.io.video import is_frame_folder, is_video_file

    found: list[tuple[str, ClipSource]] = []

    def visit(folder: Path, rel: PurePosixPath, depth: int) -> None:
        for entry in list_folder(folder):
            companion = companion_of(entry)
            if companion is not None:  # X.labels/ or X.labels.npz: the label maps of X; flow is not scored
                clip, kind = companion
                stack = entry.name.endswith(".npz")
                if kind == "labels" and (entry.is_file() if stack else entry.is_dir()):
                    found.append((str(rel / clip), ClipSource(entry, "labels")))
            elif entry.is_dir():
                if is_sequence_folder(entry):
                    found.append((str(rel / entry.name), ClipSource(entry / "frames", "rgb")))
                    labels = synth_street_companions(entry).get("labels")
                    if labels is not None:
                        found.append((str(rel / entry.name), ClipSource(labels, "labels")))
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


def _single_clip(path: Path) -> ClipSource | None:
    """``path`` itself as one clip (video, frame folder, sequence folder, .npz), or None for a folder of clips."""
    from vpcli.io.sources import is_sequence_folder
    from vpcli.io.video import is_frame_folder, is_video_file
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return ClipSource(path, _npz_kind(path))
        if is_video_file(path):
            return ClipSource(path, "rgb")
        raise InputError(f"{path} is not a video or .npz file", "pass a folder of clips, a video or an .npz stack")
    if is_sequence_folder(path):
        return ClipSource(path / "frames", "rgb")
    if is_frame_folder(path):
        return ClipSource(path, "rgb")
    return None


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
            ignored.append(name)  # e.g. NAME/composite.mp4 beside NAME/sample_000.mp4
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
    return groups, ignored


@dataclass
class FolderPlan:
    """Matched pairs: sequence name -> kind -> (gt source, [(sample name, pred source)])."""

    pairs: dict[str, dict[str, tuple[ClipSource, list[tuple[str, ClipSource]]]]]
    ignored: list[str]


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
        if single_pred.kind != single_gt.kind:
            raise DataFormatError(f"--pred {pred} holds {single_pred.kind} but --gt {gt} holds {single_gt.kind}",
                                  "compare frames with frames and label maps with label maps")
        return FolderPlan({name: {single_gt.kind: (single_gt, [("", single_pred)])}}, [])
    pred_groups, ignored = _group(scan_clips(pred), pred, samples=True)
    gt_groups, _ = _group(scan_clips(gt), gt, samples=False)
    problems = []
    pairs: dict[str, dict[str, tuple[ClipSource, list[tuple[str, ClipSource]]]]] = {}
    what = {"rgb": "videos, frame folders or .npz frame stacks", "labels": ".npz label stacks or label folders"}
    for kind in sorted(kinds):
        g_names = [n for n, k in gt_groups.items() if kind in k]
        p_names = [n for n, k in pred_groups.items() if kind in k]
        if not g_names and not p_names:
            raise InputError(f"no {what[kind]} in {gt} or {pred}",
                             "check the folders" + (" (mIoU needs label maps)" if kind == "labels" else ""))
        no_pred = [n for n in g_names if n not in pred_groups or kind not in pred_groups[n]]
        no_gt = [n for n in p_names if n not in gt_groups or kind not in gt_groups[n]]
        label = "label maps" if kind == "labels" else "clips"
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
                         "predictions match ground truth by relative path without extension "
                         "(NAME.mp4, NAME/ frames, NAME.npz, or samples NAME/sample_000.*)")
    from vpcli.io.paths import natural_key
    ordered = {n: pairs[n] for n in sorted(pairs, key=natural_key)}
    return FolderPlan(ordered, ignored)


def _sample_key(sample: str) -> int:
    digits = re.sub(r"\D", "", sample)
    return int(digits) if digits else -1


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


def _shape_text(x: np.ndarray, labels: bool) -> str:
    if labels:
        return f"{x.shape[1]}x{x.shape[2]} (HxW)"
    return f"{x.shape[2]}x{x.shape[3]} (HxW)" + ("" if x.shape[1] == 3 else f", {x.shape[1]} channels")


def _align_pair(name: str, pred: np.ndarray, gt: np.ndarray, pred_src: ClipSource, gt_src: ClipSource, *,
                align: bool, gt_offset: int, labels: bool) -> tuple[np.ndarray, np.ndarray]:
    """Check (or, with align, fix) that a prediction and its ground truth have the same length and size."""
    after = f" after skipping {gt_offset} frame(s) (--gt-offset)" if gt_offset else ""
    if len(gt) == 0:
        raise DataFormatError(f"ground truth {gt_src.path} for '{name}' has no frames{after}",
                              "lower --gt-offset or check the clip")
    ps, gs = pred.shape[1:], gt.shape[1:]
    if ps != gs:
        what = (f"size mismatch for '{name}': prediction {pred_src.path} is {_shape_text(pred, labels)} "
                f"but ground truth {gt_src.path} is {_shape_text(gt, labels)}")
        if not align:
            raise DataFormatError(what, "resize the predictions to the ground truth's size, or pass --align "
                                        "to resize them here (values then depend on the interpolation)")
        pred = _resize_like(pred, gt, labels)
        warnings.warn(f"{what}; resized the prediction (--align)", EvalWarning, stacklevel=2)
    if len(pred) != len(gt):
        what = (f"length mismatch for '{name}': prediction {pred_src.path} has {len(pred)} frames but ground "
                f"truth {gt_src.path} has {len(gt)}{after}")
        if not align:
            raise DataFormatError(what, "pass --align to truncate both to the shorter length, or --gt-offset N "
                                        "to skip N context frames of the ground truth")
        t = min(len(pred), len(gt))
        warnings.warn(f"{what}; compared the first {t} frames (--align)", EvalWarning, stacklevel=2)
        pred, gt = pred[:t], gt[:t]
    return pred, gt


def _resize_like(pred: np.ndarray, gt: np.ndarray, labels: bool) -> np.ndarray:
    import cv2
    if labels:
        h, w = gt.shape[1:]
        return np.stack([cv2.resize(p.astype(np.uint8) if p.max() < 256 else p.astype(np.float32), (w, h),
                                    interpolation=cv2.INTER_NEAREST).astype(np.int64) for p in pred])
    c, h, w = gt.shape[1:]
    out = np.stack([cv2.resize(np.ascontiguousarray(p.transpose(1, 2, 0)), (w, h), interpolation=cv2.INTER_AREA)
                    .reshape(h, w, -1).transpose(2, 0, 1) for p in pred])  # T,C,H,W
    if out.shape[1] != c:
        out = np.repeat(out, c, axis=1) if out.shape[1] == 1 else out.mean(axis=1, keepdims=True)
    return np.ascontiguousarray(out, dtype=np.float32)


def _evaluate_folders(plan: FolderPlan, metrics: list[MetricRunner], agg: Aggregator, fvd: FeatureSet | None, *,
                      gt_offset: int, align: bool, device: str, callback: Callback) -> None:
    frame_metrics = [m for m in metrics if m.kind == "frame"]
    label_metrics = [m for m in metrics if m.kind == "label"]
    total = len(plan.pairs)
    for i, (name, kinds) in enumerate(plan.pairs.items()):
        values: dict[str, np.ndarray] = {}
        capped: dict[str, np.ndarray | None] = {}
        ref: dict[str, Any] = {}
        if "rgb" in kinds and (frame_metrics or fvd is not None):
            gsrc, samples = kinds["rgb"]
            gt = load_frames(gsrc, start=gt_offset)
            gt_t = torch.from_numpy(gt)[None].to(device)  # 1,T,C,H,W
            for m in frame_metrics:
                values[m.name] = np.full((len(samples), len(gt)), np.nan)
                capped[m.name] = np.zeros((len(samples), len(gt)), bool) if m.name == "psnr" else None
            longest = 0
            for k, (_, psrc) in enumerate(samples):
                pred, g = _align_pair(name, load_frames(psrc), gt, psrc, gsrc, align=align, gt_offset=gt_offset,
                                      labels=False)
                p_t = torch.from_numpy(pred)[None].to(device)
                g_t = gt_t[:, :len(g)]
                for m in frame_metrics:
                    v, c = _scored(m, name, psrc.path, p_t, g_t)
                    values[m.name][k, :v.shape[1]] = v[0].numpy()
                    if c is not None:
                        capped[m.name][k, :c.shape[1]] = c[0].numpy()
                if fvd is not None and k == 0:
                    fvd.add(p_t, gt_t)
                longest = max(longest, len(g))
            for m in frame_metrics:  # --align may have truncated every sample: no empty trailing steps
                values[m.name] = values[m.name][:, :longest]
                if capped[m.name] is not None:
                    capped[m.name] = capped[m.name][:, :longest]
            ref.update(gt=gsrc, samples=[s for _, s in samples], kind="rgb")
        if "labels" in kinds and label_metrics:
            gsrc, samples = kinds["labels"]
            gt = load_labels(gsrc, start=gt_offset)
            gt_t = torch.from_numpy(gt)[None]
            for m in label_metrics:
                values[m.name] = np.full((len(samples), len(gt)), np.nan)
                capped[m.name] = None
            deltas = {m.name: [] for m in label_metrics}
            longest = 0
            for k, (_, psrc) in enumerate(samples):
                pred, g = _align_pair(name, load_labels(psrc), gt, psrc, gsrc, align=align, gt_offset=gt_offset,
                                      labels=True)
                longest = max(longest, len(g))
                for m in label_metrics:
                    before = m.impl.confusion.clone()
                    v, _ = _scored(m, name, psrc.path, torch.from_numpy(pred)[None], gt_t[:, :len(g)])
                    deltas[m.name].append(m.impl.confusion - before)
                    m.impl.confusion = before
                    values[m.name][k, :v.shape[1]] = v[0].numpy()
            for m in label_metrics:  # the dataset-level confusion counts the kept (best) sample only
                values[m.name] = values[m.name][:, :longest]
                k, _, _ = select_best(values[m.name], m.higher_is_better)
                m.impl.confusion += deltas[m.name][k]
            if "gt" not in ref:
                ref.update(gt=gsrc, samples=[s for _, s in samples], kind="labels")
        record = agg.add(name, values, capped, ref)
        callback("sequence", {"index": i, "total": total, **record})


def _scored(m: MetricRunner, name: str, path: Path, pred: torch.Tensor, gt: torch.Tensor):
    try:
        return m.per_frame(pred, gt)
    except DataFormatError as e:
        raise type(e)(f"{m.name} of '{name}' ({path}): {e.message}", e.hint) from None



def _folder_comparison(ref: SequenceRef, gt_offset: int, align: bool):
    src: ClipSource = ref.data["gt"]
    psrc: ClipSource = ref.data["samples"][ref.sample]
    if ref.data["kind"] == "labels":
        from vpcli.io.labels import colorize
        gt_all = load_labels(src)
        pred = load_labels(psrc)
        gt = gt_all[gt_offset:]
        if align and pred.shape[1:] != gt.shape[1:]:
            pred = _resize_like(pred, gt, True)
        t = min(len(pred), len(gt))
        return colorize(gt_all[:gt_offset]) if gt_offset else None, colorize(gt[:t]), colorize(pred[:t])
    gt_all = load_frames(src)
    pred = load_frames(psrc)
    gt = gt_all[gt_offset:]
    if pred.shape[1:] != gt.shape[1:]:
        pred = _resize_like(pred, gt, False)
    t = min(len(pred), len(gt))
    ctx = _to_uint8(gt_all[:gt_offset]) if gt_offset else None
    return ctx, _to_uint8(gt[:t]), _to_uint8(pred[:t])

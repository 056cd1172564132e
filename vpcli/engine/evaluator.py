"""The evaluation engine behind `vpcli eval`: per-frame metrics, best-of-N, confidence intervals.

Two ways in, one aggregation:

* **folders** (``pred=``, ``gt=``): predictions and ground truth written to disk, matched by name
  (rule below). A clip with several prediction samples is scored like a stochastic model's
  samples (best of N).
* **a predictor** (``method=``, ``weights=``, ``data=``): the papers' protocol (SVG, SLAMP, HVP):
  for every test sequence the context is encoded once and ``samples`` futures are drawn as one
  batch through ``Predictor.predict``; per-frame metrics are computed for every sample as the
  steps are yielded.

Best of N, per sequence and per metric: each sample's score is the mean of its per-frame values
over the horizon; the sample with the best score (highest when the metric's
``higher_is_better``, e.g. PSNR/SSIM, lowest otherwise, e.g. LPIPS/MSE) is kept, so different
metrics may keep different samples, as in the SVG/SLAMP evaluation code. Reported per metric:
the mean over sequences of the kept sample's score, a 95% confidence interval of that mean
(Student's t with n-1 degrees of freedom: ``t_0.975 * s / sqrt(n)``), and the per-time-step
mean curve (with its own 95% CI) of the kept samples. Video-set metrics (FVD) use one sample per
sequence (the first: an unbiased draw), context frames included, against the real clips.

Streaming: nothing holds all samples of all sequences. Per batch of sequences only the per-frame
values ``(B, S, T)`` live; across sequences only running sums (Welford means and variances, per
sequence and per step), the FVD embeddings (400 numbers per video) and the identity of the
current best and worst sequence are kept. ``results.csv`` is written row by row. The frames of
the best and worst sequences are re-created at the end (re-read from disk, or re-predicted from
the same seed) for the comparison videos.

Folder matching rule (also in ``vpcli eval --help``):

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

Errors are raised before any output is published: the output folder is written under a
temporary name and renamed when complete (``overwrite`` replaces an existing one).
"""
from __future__ import annotations

import csv
import hashlib
import itertools
import math
import re
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from vpcli.errors import DataFormatError, InputError, UsageError, VpcliError

Callback = Callable[[str, dict[str, Any]], None]

_SAMPLE_RE = re.compile(r"^sample_\d+$", re.IGNORECASE)
_FRAME_KEYS = ("frames", "rgb", "video")
_LIST_MAX = 10
DEFAULT_NUM_SEQUENCES = 100  # synthetic sources: test sequences when num_sequences is not given
CHUNK_VALUES = 2**19           # numbers per metric call on CPU (~42 frames at 64x64x3, 5 at 128x256x3)
CHUNK_VALUES_ACCEL = 2**26     # on GPUs large batches are what is fast


class EvalWarning(UserWarning):
    """Something the evaluation adapted (truncation, resizing) that the user should know about."""


# ============================================================================ metrics

@dataclass
class MetricRunner:
    """One metric as the evaluator uses it: per-frame values ``(B, T)`` (+ PSNR's capped mask)."""

    name: str
    kind: str                   # "frame" | "label" | "video_set"
    higher_is_better: bool
    unit: str
    impl: Any
    settings: dict[str, Any] = field(default_factory=dict)

    def per_frame(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Values ``(B, T)`` of ``B,T,...`` inputs (and PSNR's capped mask), computed a few frames at a time.

        Every value depends on one frame pair only, so the ``B*T`` frames are scored in chunks of
        about :data:`CHUNK_VALUES` numbers on CPU: small working sets stay in cache, measured
        2-4x faster than one call over hundreds of frames (PSNR/SSIM at 64x64 and 128x256).
        """
        b, t = pred.shape[:2]
        flat_p = pred.reshape(b * t, 1, *pred.shape[2:])  # (B*T),1,...: one frame per "video"
        flat_t = target.reshape(b * t, 1, *target.shape[2:])
        per_frame_values = max(1, math.prod(pred.shape[2:]))
        step = max(1, (CHUNK_VALUES if pred.device.type == "cpu" else CHUNK_VALUES_ACCEL) // per_frame_values)
        values, capped = [], []
        for i in range(0, b * t, step):
            p, g = flat_p[i:i + step], flat_t[i:i + step]
            if self.name == "psnr":
                v, c = self.impl.with_capped(p, g)
                capped.append(c.reshape(-1).cpu())
            else:
                v = self.impl(p, g)
            values.append(v.reshape(-1).float().cpu())
        out = torch.cat(values).view(b, t)
        return out, (torch.cat(capped).view(b, t) if capped else None)


def parse_metric_names(text: str | list[str]) -> list[str]:
    """``"psnr,SSIM,ms_ssim"`` -> canonical names; an unknown name raises UsageError (exit 2) listing valid ones."""
    from vpcli.metrics import get_metric
    parts = text if isinstance(text, (list, tuple)) else str(text).split(",")
    names: list[str] = []
    for part in parts:
        part = str(part).strip()
        if not part:
            continue
        name = get_metric(part).name
        if name not in names:
            names.append(name)
    if not names:
        raise UsageError("no metric given", "pass --metric psnr,ssim (valid: see `vpcli eval --help`)")
    return names


def parse_metric_weights(items: list[str] | dict[str, str] | None) -> dict[str, str]:
    """``["lpips=path.safetensors", "fvd=i3d-kinetics400"]`` -> ``{"lpips": ..., "fvd": ...}``."""
    from vpcli.metrics import get_metric
    if not items:
        return {}
    if isinstance(items, dict):
        pairs = list(items.items())
    else:
        pairs = []
        for item in items:
            key, sep, value = str(item).partition("=")
            if not sep or not key.strip() or not value.strip():
                raise UsageError(f"--metric-weights expects METRIC=WEIGHTS, got {item!r}",
                                 "e.g. --metric-weights lpips=lpips-alex.safetensors")
            pairs.append((key, value))
    out = {}
    for key, value in pairs:
        name = get_metric(key.strip()).name
        if name not in ("lpips", "csim", "fvd"):
            raise UsageError(f"metric {name!r} takes no weights", "only lpips, csim and fvd use pretrained networks")
        out[name] = str(value).strip()
    return out


def build_metrics(names: list[str], *, device: str = "cpu", metric_weights: dict[str, str] | None = None,
                  untrained_metrics: bool = False, lpips_net: str = "alex", num_classes: int = 19,
                  miou_classes: str | None = None, seed: int = 0) -> list[MetricRunner]:
    """Instantiate the metrics (resolving pretrained weights for LPIPS, CSIM and FVD)."""
    from vpcli.errors import ChecksumError, WeightsError
    runners = []
    for name in names:
        try:
            runners.append(_build_metric(name, device=device, weights=metric_weights or {},
                                         untrained_metrics=untrained_metrics, lpips_net=lpips_net,
                                         num_classes=num_classes, miou_classes=miou_classes, seed=seed))
        except ChecksumError:
            raise  # says what to do already
        except WeightsError as e:
            raise WeightsError(e.message, f"for vpcli eval: --metric-weights {name}=FILE_OR_NAME, or "
                                          f"--untrained-metrics for a smoke test; {e.hint}") from None
    return runners


def _build_metric(name: str, *, device: str, weights: dict[str, str], untrained_metrics: bool, lpips_net: str,
                  num_classes: int, miou_classes: str | None, seed: int) -> MetricRunner:
    from vpcli.metrics import get_metric
    from vpcli.metrics.segmentation import HVP_MOVING_CLASSES
    cls = get_metric(name)
    settings: dict[str, Any] = {}
    if name == "lpips":
        kw = {"pretrained": not untrained_metrics}
        if name in weights:
            kw["weights"] = weights[name]
        torch.manual_seed(seed)  # random heads (untrained) are reproducible
        impl = cls(lpips_net, **kw).to(device)
        settings = {"net": impl.net_name, "weights": weights.get(name, "default")}
    elif name == "csim":
        kw = {"pretrained": not untrained_metrics}
        if name in weights:
            kw["weights"] = weights[name]
        torch.manual_seed(seed)
        impl = cls(**kw).to(device)
        settings = {"weights": weights.get(name, "vgg16-imagenet")}
    elif name == "fvd":
        from vpcli.metrics.i3d import InceptionI3d
        if untrained_metrics:
            torch.manual_seed(seed)
            impl = cls(model=InceptionI3d(), device=device)
        else:
            impl = cls(weights.get(name, "i3d-kinetics400"), device=device)
        settings = {"weights": weights.get(name, "i3d-kinetics400"), "resize": impl.resize}
    elif name == "miou":
        classes: Any = None
        if miou_classes not in (None, "", "all"):
            if miou_classes == "hvp-moving":
                classes = HVP_MOVING_CLASSES
            else:
                try:
                    classes = [int(c) for c in str(miou_classes).split(",")]
                except ValueError:
                    raise UsageError(f"--miou-classes expects all, hvp-moving or ids like 11,12,13; "
                                     f"got {miou_classes!r}") from None
        try:
            impl = cls(num_classes, classes=classes, accumulate=True)
        except ValueError as e:
            raise UsageError(f"miou: {e}") from None
        settings = {"num_classes": num_classes, "classes": list(classes) if classes else "all present"}
    else:
        impl = cls()
    if untrained_metrics and name in ("lpips", "csim", "fvd"):
        settings["weights"] = "untrained (random init): values are NOT comparable with published numbers"
    return MetricRunner(name, cls.kind, bool(cls.higher_is_better), getattr(cls, "unit", ""), impl, settings)


# ============================================================================ aggregation

def _ci95(n: int, m2: float) -> float | None:
    """Half-width of the 95% confidence interval of a mean (Student's t, n-1 dof)."""
    if n < 2:
        return None
    from scipy.stats import t as student_t
    return float(student_t.ppf(0.975, n - 1) * math.sqrt(m2 / (n - 1)) / math.sqrt(n))


def _clean(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


class RunningCurve:
    """Welford mean/variance of one number per sequence and of a curve per time step.

    Curves may differ in length (the per-step count says how many sequences reached a step) and
    hold NaN where a value is undefined (skipped).
    """

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, 0.0, 0.0
        self.step_n = np.zeros(0, np.int64)
        self.step_mean = np.zeros(0, np.float64)
        self.step_m2 = np.zeros(0, np.float64)

    def add(self, value: float, curve: np.ndarray) -> None:
        if math.isfinite(value):
            self.n += 1
            d = value - self.mean
            self.mean += d / self.n
            self.m2 += d * (value - self.mean)
        curve = np.asarray(curve, np.float64)
        t = len(curve)
        if t > len(self.step_n):
            grow = t - len(self.step_n)
            self.step_n = np.concatenate([self.step_n, np.zeros(grow, np.int64)])
            self.step_mean = np.concatenate([self.step_mean, np.zeros(grow)])
            self.step_m2 = np.concatenate([self.step_m2, np.zeros(grow)])
        ok = np.isfinite(curve)
        idx = np.nonzero(ok)[0]
        if len(idx):
            self.step_n[idx] += 1
            d = curve[idx] - self.step_mean[idx]
            self.step_mean[idx] += d / self.step_n[idx]
            self.step_m2[idx] += d * (curve[idx] - self.step_mean[idx])

    def summary(self) -> dict[str, Any]:
        std = math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else None
        return {
            "mean": _clean(self.mean) if self.n else None,
            "ci95": _clean(_ci95(self.n, self.m2)),
            "std": _clean(std),
            "n": self.n,
            "curve": {
                "mean": [_clean(float(m)) if n else None for m, n in zip(self.step_mean, self.step_n)],
                "ci95": [_clean(_ci95(int(n), float(m2))) for n, m2 in zip(self.step_n, self.step_m2)],
                "n": [int(n) for n in self.step_n],
            },
        }


def _nan_mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows give NaN, which is what we want
        return np.nanmean(x, axis=axis)


def select_best(values: np.ndarray, higher_is_better: bool) -> tuple[int, float, np.ndarray]:
    """Best of N: ``values (S, T)`` per-frame values of S samples -> (sample index, its mean, its curve).

    A sample's score is its mean over the frames (NaN frames skipped); samples without any
    defined value are never chosen unless all are undefined.
    """
    scores = _nan_mean(values, axis=1)  # S
    if np.all(np.isnan(scores)):
        return 0, float("nan"), values[0]
    fill = -np.inf if higher_is_better else np.inf
    scores = np.where(np.isnan(scores), fill, scores)
    k = int(np.argmax(scores) if higher_is_better else np.argmin(scores))
    return k, float(scores[k]), values[k]


@dataclass
class SequenceRef:
    """Enough to re-create one sequence's frames for the comparison video."""

    name: str
    value: float
    sample: int
    data: dict[str, Any]


class Aggregator:
    """Running statistics for every metric; rows of results.csv; the best and worst sequences."""

    def __init__(self, metrics: list[MetricRunner], csv_path: Path | None, first_step: int):
        self.metrics = [m for m in metrics if m.kind != "video_set"]
        self.curves = {m.name: RunningCurve() for m in self.metrics}
        self.capped = {m.name: 0 for m in self.metrics}
        self.frames = {m.name: 0 for m in self.metrics}
        self.first_step = first_step
        self.sequences = 0
        self.primary = self.metrics[0] if self.metrics else None
        self.best: SequenceRef | None = None
        self.worst: SequenceRef | None = None
        # Open for the whole run: rows are appended as sequences finish (closed by close()).
        self._file = open(csv_path, "w", newline="", encoding="utf-8") if csv_path is not None else None  # noqa: SIM115
        self._csv = csv.writer(self._file) if self._file else None
        if self._csv:
            self._csv.writerow(["sequence", "metric", "value", "best_sample", "samples", "frames", "mean_over_samples"])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def add(self, name: str, values: dict[str, np.ndarray], capped: dict[str, np.ndarray | None],
            ref: dict[str, Any]) -> dict[str, Any]:
        """One sequence: ``values[metric]`` is ``(S, T)``. Returns the per-sequence record."""
        record: dict[str, Any] = {"sequence": name, "metrics": {}, "best_sample": {}}
        for m in self.metrics:
            if m.name not in values:
                continue  # e.g. a clip with frames but no label maps, when mIoU is asked too
            v = values[m.name]
            k, score, curve = select_best(v, m.higher_is_better)
            self.curves[m.name].add(score, curve)
            self.frames[m.name] += int(np.isfinite(curve).sum())
            if capped.get(m.name) is not None:
                self.capped[m.name] += int(capped[m.name][k].sum())
            sample_mean = float(_nan_mean(_nan_mean(v, axis=1), axis=0))  # mean over samples of their scores
            if self._csv:
                self._csv.writerow([name, m.name, _fmt(score), k, v.shape[0], int(np.isfinite(curve).sum()),
                                    _fmt(sample_mean)])
            record["metrics"][m.name] = _clean(score)
            record["best_sample"][m.name] = k
            if m is self.primary and math.isfinite(score):
                seq = SequenceRef(name, score, k, ref)
                better = (lambda a, b: a > b) if m.higher_is_better else (lambda a, b: a < b)
                if self.best is None or better(score, self.best.value):
                    self.best = seq
                if self.worst is None or better(self.worst.value, score):
                    self.worst = seq
        self.sequences += 1
        return record

    def summary(self) -> dict[str, dict[str, Any]]:
        out = {}
        for m in self.metrics:
            s = self.curves[m.name].summary()
            s["curve"]["t"] = [self.first_step + i for i in range(len(s["curve"]["mean"]))]
            entry = {"kind": m.kind, "higher_is_better": m.higher_is_better, "unit": m.unit,
                     **s, "frames": self.frames[m.name]}
            if m.name == "psnr":
                from vpcli.metrics import PSNR_CAP_DB
                k = self.capped[m.name]
                entry.update(capped=k > 0, capped_frames=k, cap_db=PSNR_CAP_DB,
                             note=(f"{k} of {self.frames[m.name]} frames were identical to the ground truth "
                                   f"(MSE <= 1e-10) and counted as {PSNR_CAP_DB:g} dB" if k else
                                   "no frame reached the cap"))
            if m.name == "miou":
                conf = m.impl.compute()
                entry["dataset_miou"] = _clean(conf["miou"])
                entry["per_class_iou"] = [_clean(float(x)) for x in conf["per_class"]]
            if m.settings:
                entry["settings"] = m.settings
            out[m.name] = entry
        return out


def _fmt(x: float) -> str:
    return "" if not math.isfinite(x) else f"{x:.6g}"


class FeatureSet:
    """FVD: I3D embeddings of predicted and real videos, computed as the videos stream past."""

    def __init__(self, metric: MetricRunner):
        self.metric = metric
        self.pred: list[np.ndarray] = []
        self.real: list[np.ndarray] = []

    def add(self, pred: torch.Tensor | None, real: torch.Tensor | None) -> None:
        if pred is not None:
            self.pred.append(self.metric.impl.features(pred).numpy())
        if real is not None:
            self.real.append(self.metric.impl.features(real).numpy())

    def compute(self) -> dict[str, Any]:
        from vpcli.metrics.fvd import fvd_from_features
        pred = np.concatenate(self.pred) if self.pred else np.zeros((0, 400))
        real = np.concatenate(self.real) if self.real else np.zeros((0, 400))
        value = fvd_from_features(pred, real, method=self.metric.impl.method)
        return {"kind": "video_set", "higher_is_better": False, "unit": "", "value": _clean(value),
                "mean": _clean(value), "ci95": None, "n": len(pred), "n_real": len(real),
                "settings": self.metric.settings}


def check_fvd_count(n_pred: int, n_real: int) -> None:
    """Fail early, with the FVD module's own message, when a set is too small for a covariance."""
    from vpcli.metrics.fvd import FVD_MIN_VIDEOS, fvd_from_features
    if min(n_pred, n_real) < FVD_MIN_VIDEOS:
        # fvd_from_features checks the set sizes before touching the (here empty) features.
        fvd_from_features(np.zeros((n_pred, 1)), np.zeros((n_real, 1)))


# ============================================================================ folder inputs

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
    """Every clip under ``root`` with its name (relative path without extension), natural order."""
    from vpcli.io.paths import natural_key
    from vpcli.io.sources import is_sequence_folder
    from vpcli.io.video import is_frame_folder, is_video_file

    found: list[tuple[str, ClipSource]] = []

    def add_sequence(entry: Path, name: str) -> None:
        found.append((name, ClipSource(entry / "frames", "rgb")))
        if (entry / "labels").is_dir():
            found.append((name, ClipSource(entry / "labels", "labels")))
        elif (entry / "labels.npz").is_file():
            found.append((name, ClipSource(entry / "labels.npz", "labels")))

    def visit(folder: Path, rel: PurePosixPath, depth: int) -> None:
        try:
            entries = sorted(folder.iterdir(), key=lambda e: natural_key(e.name))
        except OSError as e:
            raise InputError(f"cannot list folder {folder}: {e.strerror}", "check the path and its permissions") from None
        for entry in entries:
            if entry.name.startswith("."):
                continue  # hidden files, including atomic-write temporaries
            if entry.is_dir():
                if entry.name.endswith(".labels"):
                    found.append((str(rel / entry.name[:-len(".labels")]), ClipSource(entry, "labels")))
                elif entry.name.endswith(".flow"):
                    continue
                elif is_sequence_folder(entry):
                    add_sequence(entry, str(rel / entry.name))
                elif is_frame_folder(entry):
                    found.append((str(rel / entry.name), ClipSource(entry, "rgb")))
                elif depth < 32:
                    visit(entry, rel / entry.name, depth + 1)
            elif entry.is_file():
                low = entry.name.lower()
                if low.endswith(".npz"):
                    stem = entry.name[:-4]
                    if stem.endswith(".flow"):
                        continue
                    if stem.endswith(".labels"):
                        found.append((str(rel / stem[:-len(".labels")]), ClipSource(entry, "labels")))
                    else:
                        found.append((str(rel / stem), ClipSource(entry, _npz_kind(entry))))
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
        return f"{x.shape[2]}x{x.shape[1]}"
    return f"{x.shape[3]}x{x.shape[2]}" + ("" if x.shape[1] == 3 else f"x{x.shape[1]}")


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


# ============================================================================ predictor protocol

@dataclass
class LoadedModel:
    model: Any
    config: Any            # RunConfig
    weights: dict[str, Any]
    size_from_config: bool


def load_predictor(method: str | None, weights: str | None, overrides: list[str], device: str) -> LoadedModel:
    """Build the predictor and its RunConfig from a run folder, a checkpoint, a manifest name, or
    nothing (see :func:`vpcli.engine.loading.load_predictor`, shared with `vpcli predict`)."""
    from vpcli.engine.loading import load_predictor as load
    model, cfg, info = load(method, weights, device=device, overrides=overrides)
    return LoadedModel(model, cfg, info, info["kind"] is not None)


def _seed_for(seed: int, start: int) -> int:
    digest = hashlib.sha256(f"vpcli-eval:{seed}:{start}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2**63)


def _take(batch_items: list[dict], key: str) -> torch.Tensor:
    return torch.stack([it[key] for it in batch_items])


def _context_batch(items: list[dict], context: int, needs: frozenset[str], device: str) -> dict[str, torch.Tensor]:
    out = {"rgb": _take(items, "rgb")[:, :context].to(device)}  # B,C_t,C,H,W
    if "labels" in needs and "labels" in items[0]:
        out["labels"] = _take(items, "labels")[:, :context].to(device)
    if "flow" in needs and "flow" in items[0]:
        out["flow"] = _take(items, "flow")[:, :max(context - 1, 0)].to(device)
    return out


def _sequence_name(item: dict) -> str:
    meta = item.get("meta", {})
    sid = str(meta.get("sequence_id", meta.get("index", "")))
    start = int(meta.get("start", 0))
    return sid if start == 0 else f"{sid}@{start}"


# --head: which of a flow/mask predictor's outputs is scored (SLAMP App. D, Table 7). The rollout is
# the model's own (the fused frame is fed back); only what is scored changes.
HEADS = {"fused": "the final prediction (Eq. 1)", "static": "the appearance (pixel decoder) head x^p",
         "dynamic": "the motion head x^f (previous frame warped by the predicted flow)",
         "average": "(x^p + x^f) / 2, without the mask"}


def check_head(model, method: str, head: str) -> None:
    """A head other than ``fused`` needs a predictor that reports its components."""
    from vpcli.predictors.base import has_components
    if head != "fused" and not has_components(model):
        raise UsageError(f"{method} has no static/dynamic heads to score", "use --head fused (the default)")


def _predict_steps(model, ctx: dict, horizon: int, samples: int, seed: int, device: str,
                   head: str = "fused") -> Iterator[torch.Tensor]:
    """The predictor's steps for one batch, drawn from a generator seeded by (seed, batch start):
    the same seed and batch size give the same samples, so a batch can be re-predicted exactly.
    ``head`` other than ``fused`` yields that head's frames from the same rollout."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    if head == "fused":
        return iter(model.predict(ctx, horizon, samples, gen))
    parts: dict[str, torch.Tensor] = {}

    def heads() -> Iterator[torch.Tensor]:
        for _ in model.predict(ctx, horizon, samples, gen, components=parts):
            if head == "static":
                yield parts["app"].clamp(0, 1)
            elif head == "dynamic":
                yield parts["motion"].clamp(0, 1)
            else:
                yield ((parts["app"] + parts["motion"]) / 2).clamp(0, 1)
    return heads()


def _evaluate_model(loaded: LoadedModel, dataset, indices: list[int], metrics: list[MetricRunner], agg: Aggregator,
                    fvd: FeatureSet | None, *, context: int, horizon: int, samples: int, batch_size: int,
                    seed: int, device: str, callback: Callback, head: str = "fused") -> None:
    with torch.inference_mode():
        _evaluate_model_batches(loaded, dataset, indices, metrics, agg, fvd, context=context, horizon=horizon,
                                samples=samples, batch_size=batch_size, seed=seed, device=device, callback=callback,
                                head=head)


def _evaluate_model_batches(loaded: LoadedModel, dataset, indices: list[int], metrics: list[MetricRunner],
                            agg: Aggregator, fvd: FeatureSet | None, *, context: int, horizon: int, samples: int,
                            batch_size: int, seed: int, device: str, callback: Callback, head: str = "fused") -> None:
    frame_metrics = [m for m in metrics if m.kind == "frame"]
    model = loaded.model
    needs = getattr(model, "inputs", frozenset({"rgb"}))
    total, done = len(indices), 0
    for b0 in range(0, total, batch_size):
        batch_idx = indices[b0:b0 + batch_size]
        items = [dataset[i] for i in batch_idx]
        rgb = _take(items, "rgb")  # B,T,C,H,W
        ctx = _context_batch(items, context, needs, device)
        future = rgb[:, context:context + horizon].to(device)
        n_b, c, h, w = future.shape[0], *future.shape[2:]
        vals = {m.name: torch.full((n_b, samples, horizon), float("nan")) for m in frame_metrics}
        caps = {m.name: torch.zeros((n_b, samples, horizon), dtype=torch.bool) for m in frame_metrics
                if m.name == "psnr"}
        first_sample = [] if fvd is not None else None
        steps = 0
        for t, frames in enumerate(_predict_steps(model, ctx, horizon, samples, _seed_for(seed, b0), device, head)):
            if t >= horizon:
                break
            if frames.shape != (n_b, samples, c, h, w):
                raise VpcliError(f"{loaded.config.method}.predict yielded shape {tuple(frames.shape)} at step {t}; "
                                 f"expected {(n_b, samples, c, h, w)} (B, S, C, H, W)",
                                 "the predictor breaks the Predictor contract")
            pred = frames.reshape(n_b * samples, 1, c, h, w)  # (B*S),1,C,H,W
            gt = future[:, t][:, None].expand(n_b, samples, c, h, w).reshape(n_b * samples, 1, c, h, w)
            for m in frame_metrics:
                try:
                    v, cap = m.per_frame(pred, gt)
                except DataFormatError as e:
                    names = ", ".join(_sequence_name(it) for it in items)
                    raise type(e)(f"{m.name} at future step {t + 1} of sequence(s) {names}: {e.message}",
                                  e.hint) from None
                vals[m.name][:, :, t] = v.view(n_b, samples)
                if cap is not None:
                    caps[m.name][:, :, t] = cap.view(n_b, samples)
            if first_sample is not None:
                first_sample.append(frames[:, 0].to("cpu"))
            steps += 1
        if steps < horizon:
            raise VpcliError(f"{loaded.config.method}.predict yielded {steps} steps for a horizon of {horizon}",
                             "the predictor breaks the Predictor contract")
        if fvd is not None:
            fake = torch.cat([rgb[:, :context], torch.stack(first_sample, dim=1)], dim=1)  # B,C_t+H,C,H,W
            fvd.add(fake, rgb[:, :context + horizon])
        for j, item in enumerate(items):
            name = _sequence_name(item)
            values = {m: v[j].numpy().astype(np.float64) for m, v in vals.items()}
            capped = {m.name: (caps[m.name][j].numpy() if m.name in caps else None) for m in frame_metrics}
            ref = {"batch": batch_idx, "pos": j, "seed": _seed_for(seed, b0), "index": batch_idx[j], "head": head}
            record = agg.add(name, values, capped, ref)
            callback("sequence", {"index": done, "total": total, **record})
            done += 1


def _make_test_set(cfg, *, data: str | None, split: str, num_sequences: int | None, size, size_given: bool,
                   from_config: bool):
    from vpcli.data.clips import make_dataset
    d = cfg.data
    source = data or d.source
    synthetic = source.startswith("synthetic:")
    kwargs: dict[str, Any] = {"context": d.context, "future": d.future, "frame_step": d.frame_step}
    if size_given or from_config:
        kwargs["size"] = tuple(size if size_given else d.size)
    if from_config or synthetic:
        kwargs["channels"] = d.channels
    if synthetic:
        kwargs["num_clips"] = num_sequences or DEFAULT_NUM_SEQUENCES
        kwargs["split"] = "test" if split == "all" else split
    else:
        kwargs["split"] = None if split == "all" else split
    # The test set does not depend on --seed (which drives the sampling only): seed 0.
    try:
        dataset = make_dataset(source, seed=0, **kwargs)
    except InputError as e:
        if synthetic or split == "all":
            raise
        raise InputError(f"{source}, {split} split: {e.message}",
                         f"a small folder's hash split may put no clip in '{split}': pass --split all to use every "
                         f"clip; {e.hint}") from None
    n = len(dataset) if num_sequences is None else min(num_sequences, len(dataset))
    if n == 0:
        raise InputError(f"{source} has no {split} sequences of {d.context + d.future} frames",
                         "use --split all, a shorter --context/--horizon, or longer clips")
    return source, dataset, list(range(n))


def _recreate_model_sample(loaded: LoadedModel, dataset, ref: SequenceRef, *, context: int, horizon: int,
                           samples: int, device: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Re-predict the batch of one sequence with its seed and keep only the chosen sample's frames."""
    items = [dataset[i] for i in ref.data["batch"]]
    ctx = _context_batch(items, context, getattr(loaded.model, "inputs", frozenset({"rgb"})), device)
    pos, k = ref.data["pos"], ref.sample
    with torch.inference_mode():
        steps = _predict_steps(loaded.model, ctx, horizon, samples, ref.data["seed"], device,
                               ref.data.get("head", "fused"))
        frames = [f[pos, k].cpu() for _, f in zip(range(horizon), steps)]
    rgb = items[pos]["rgb"]
    return _to_uint8(rgb[:context]), _to_uint8(rgb[context:context + horizon]), _to_uint8(torch.stack(frames))


# ============================================================================ outputs

def _to_uint8(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """``(T, C, H, W)`` float in [0, 1] -> ``uint8 (T, H, W, 3)``."""
    a = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    a = np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    return np.repeat(a, 3, axis=3) if a.shape[3] == 1 else a


def _write_comparison(path: Path, context: np.ndarray | None, gt: np.ndarray, pred: np.ndarray,
                      sample: int) -> None:
    from vpcli.io.composite import composite_frames, write_composite
    from vpcli.io.video import VideoWriter
    scale = max(1, 128 // max(1, gt.shape[1]))
    caption = f"best sample ({sample})"
    if context is not None and len(context):
        write_composite(path, context, gt, {caption: pred}, fps=10, scale=scale)
        return
    # No context frames (folder mode without --gt-offset): show the first true frame in its place.
    frames = composite_frames(gt[:1], [gt, pred], captions=["first frame", "ground truth", caption], scale=scale)
    with VideoWriter(path, fps=10) as writer:
        for f in frames:
            writer.write(f)


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


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    span = hi - lo
    if not span > 0:
        return [lo]
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def plot_curve(path: Path, steps: list[int], mean: list[float | None], ci: list[float | None], *,
               title: str, ylabel: str, xlabel: str = "frame") -> None:
    """A per-time-step curve (mean with its 95% CI band) as a PNG, drawn with OpenCV (no plotting library)."""
    import cv2
    width, height = 720, 440
    left, right, top, bottom = 80, 24, 48, 60
    img = np.full((height, width, 3), 255, np.uint8)
    pts = [(t, m, c or 0.0) for t, m, c in zip(steps, mean, ci) if m is not None]
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(img, title, (left, 30), font, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    x0, x1, y0, y1 = left, width - right, top, height - bottom
    if pts:
        lo = min(m - c for _, m, c in pts)
        hi = max(m + c for _, m, c in pts)
        if hi - lo < 1e-9:
            lo, hi = lo - 0.5 * max(abs(lo), 1e-3), hi + 0.5 * max(abs(hi), 1e-3)
        pad = 0.05 * (hi - lo)
        lo, hi = lo - pad, hi + pad
        t_lo, t_hi = min(steps), max(steps)
        if t_hi == t_lo:
            t_lo, t_hi = t_lo - 1, t_hi + 1

        def xy(t: float, v: float) -> tuple[int, int]:
            return (round(x0 + (t - t_lo) / (t_hi - t_lo) * (x1 - x0)),
                    round(y1 - (v - lo) / (hi - lo) * (y1 - y0)))

        for v in _nice_ticks(lo, hi):  # horizontal grid + y labels
            _, y = xy(t_lo, v)
            cv2.line(img, (x0, y), (x1, y), (230, 230, 230), 1)
            cv2.putText(img, f"{v:.4g}", (8, y + 4), font, 0.4, (60, 60, 60), 1, cv2.LINE_AA)
        for t in _nice_ticks(t_lo, t_hi, n=min(10, t_hi - t_lo)):
            if float(t).is_integer():
                x, _ = xy(t, lo)
                cv2.line(img, (x, y1), (x, y1 + 4), (0, 0, 0), 1)
                cv2.putText(img, str(int(t)), (x - 6, y1 + 18), font, 0.4, (60, 60, 60), 1, cv2.LINE_AA)
        band = [xy(t, m + c) for t, m, c in pts] + [xy(t, m - c) for t, m, c in reversed(pts)]
        if len(pts) > 1:
            overlay = img.copy()
            cv2.fillPoly(overlay, [np.array(band, np.int32)], (250, 200, 160))  # BGR light blue
            img = cv2.addWeighted(overlay, 0.6, img, 0.4, 0)
        line = [xy(t, m) for t, m, _ in pts]
        for a, b in itertools.pairwise(line):
            cv2.line(img, a, b, (180, 80, 20), 2, cv2.LINE_AA)
        for p in line:
            cv2.circle(img, p, 3, (180, 80, 20), -1, cv2.LINE_AA)
    cv2.rectangle(img, (x0, y0), (x1, y1), (0, 0, 0), 1)
    cv2.putText(img, xlabel, ((x0 + x1) // 2 - 20, height - 16), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, ylabel, (8, top - 8), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    ok, buf = cv2.imencode(".png", img)
    if not ok:  # pragma: no cover - encoding a plain uint8 image does not fail
        raise VpcliError(f"cannot encode plot {path}")
    Path(path).write_bytes(buf.tobytes())


def _versions() -> dict[str, str]:
    import platform

    from vpcli import __version__
    return {"vpcli": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__}


def _protocol_text(mode: str, *, samples: int | None = None, context: int | None = None,
                   horizon: int | None = None, n: int = 0, fvd: bool = False, gt_offset: int = 0) -> str:
    best = ("per sequence and metric the sample with the best mean over the frames is kept (highest for "
            "metrics where higher is better, e.g. PSNR/SSIM; lowest otherwise, e.g. LPIPS/MSE); reported: the mean "
            "over sequences of the kept samples' scores with a 95% confidence interval (Student t over sequences) "
            "and the per-time-step mean curve of the kept samples")
    if mode == "model":
        text = (f"best of {samples}: for each of {n} test sequences the {context} context frames are encoded once "
                f"and {samples} samples of {horizon} future frames are drawn as one batch; per-frame metrics are "
                f"computed for every sample; " + best)
        if fvd:
            text += ("; FVD compares one sample per sequence (the first), context frames included, with the real "
                     "clips")
    else:
        text = (f"folders: predictions matched to ground truth by relative name, frame t of a prediction against "
                f"frame {gt_offset} + t of its ground truth; clips with several samples (NAME/sample_K): " + best)
        if fvd:
            text += "; FVD compares the first sample of every clip with the ground-truth clips"
    return text


# ============================================================================ entry point

def evaluate(*, pred: Path | str | None = None, gt: Path | str | None = None, metric: str | list[str] = "psnr,ssim",
             method: str | None = None, weights: str | None = None, data: str | None = None, samples: int = 100,
             context: int | None = None, horizon: int | None = None, num_sequences: int | None = None,
             split: str = "test", size: str | None = None, gt_offset: int = 0, align: bool = False,
             metric_weights: list[str] | dict[str, str] | None = None, untrained_metrics: bool = False,
             lpips_net: str = "alex", num_classes: int = 19, miou_classes: str | None = None,
             out: Path | str = Path("eval"), batch_size: int = 8, device: str = "cpu", seed: int = 0,
             overwrite: bool = False, plots: bool = True, videos: bool = True, head: str = "fused",
             callback: Callback | None = None, **_: Any) -> dict[str, Any]:
    """Evaluate predictions on disk (``pred``/``gt``) or a predictor (``method``/``weights``/``data``).

    Writes ``out/results.json``, ``results.csv``, ``plot_<metric>.png`` per per-frame metric and
    ``best.mp4``/``worst.mp4`` comparison videos; returns the results.json content plus ``out``.
    ``callback(event, record)`` receives ``start``, one ``sequence`` per sequence, and ``end``.
    Warnings (``--align`` adjustments, small FVD sets) are listed in results.json and re-issued
    once each when the evaluation ends, also when it fails.
    """
    from vpcli.api import parse_size
    from vpcli.io.atomic import check_overwrite

    callback = callback or (lambda event, record: None)
    names = parse_metric_names(metric)  # unknown names: exit 2 before anything else
    mweights = parse_metric_weights(metric_weights)
    folder_mode = pred is not None or gt is not None
    if folder_mode and (method is not None or weights is not None or data is not None):
        raise UsageError("--pred/--gt and --method/--weights/--data are two different modes", "pass one or the other")
    if folder_mode and (pred is None or gt is None):
        raise UsageError("--pred and --gt go together", "pass both folders, e.g. --pred preds/ --gt clips/")
    if not folder_mode and method is None and weights is None:
        raise UsageError("nothing to evaluate", "pass --pred DIR --gt DIR, or --method M [--weights W] --data SRC")
    if split not in ("train", "val", "test", "all"):
        raise UsageError(f"--split must be train, val, test or all, got {split!r}")
    if head not in HEADS:
        raise UsageError(f"--head must be one of {', '.join(HEADS)}, got {head!r}")
    if folder_mode and head != "fused":
        raise UsageError("--head scores a predictor's heads; predictions on disk have none", "drop --head")
    for opt, v, lo in (("--samples", samples, 1), ("--batch-size", batch_size, 1), ("--gt-offset", gt_offset, 0),
                       ("--context", context, 1), ("--horizon", horizon, 1), ("--num-sequences", num_sequences, 1),
                       ("--num-classes", num_classes, 1)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < lo):
            raise UsageError(f"{opt} must be an integer >= {lo}, got {v!r}")
    hw = parse_size(size)
    check_overwrite(Path(out), overwrite)  # refuse before any work
    recorded: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                results = _run(
                    caught, names=names, mweights=mweights, folder_mode=folder_mode, pred=pred, gt=gt,
                    method=method, weights=weights, data=data, samples=samples, context=context, horizon=horizon,
                    num_sequences=num_sequences, split=split, hw=hw, gt_offset=gt_offset, align=align,
                    untrained_metrics=untrained_metrics, lpips_net=lpips_net, num_classes=num_classes,
                    miou_classes=miou_classes, out=Path(out), batch_size=batch_size, device=device, seed=seed,
                    overwrite=overwrite, plots=plots, videos=videos, head=head, callback=callback)
            finally:
                recorded = list(caught)
    finally:
        for category, message in _unique_warnings(recorded):  # outside the recording block: the CLI prints them
            warnings.warn(message, category, stacklevel=2)
    callback("end", results)
    return results


def _run(caught: list, *, names, mweights, folder_mode, pred, gt, method, weights, data, samples, context, horizon,
         num_sequences, split, hw, gt_offset, align, untrained_metrics, lpips_net, num_classes, miou_classes, out,
         batch_size, device, seed, overwrite, plots, videos, callback, head="fused") -> dict[str, Any]:
    import json

    from vpcli.api import run_meta
    from vpcli.io.atomic import atomic_dir
    from vpcli.metrics import get_metric

    t0 = time.perf_counter()
    metric_kw = {"device": device, "metric_weights": mweights, "untrained_metrics": untrained_metrics,
                 "lpips_net": lpips_net, "num_classes": num_classes, "miou_classes": miou_classes, "seed": seed}
    loaded = dataset = plan = None
    if folder_mode:
        kinds = {"labels" if get_metric(n).kind == "label" else "rgb" for n in names}
        plan = match_folders(Path(pred), Path(gt), kinds)
        n_seq = len(plan.pairs)
        if "fvd" in names:
            n_rgb = sum(1 for k in plan.pairs.values() if "rgb" in k)
            check_fvd_count(n_rgb, n_rgb)
        metrics = build_metrics(names, **metric_kw)
        first_step = gt_offset + 1
        samples_per = sorted({len(s) for k in plan.pairs.values() for _, s in k.values()})
        inputs = {"mode": "folders", "pred": str(pred), "gt": str(gt), "gt_offset": gt_offset, "align": align,
                  "sequences": n_seq, "samples_per_sequence": samples_per, "ignored": plan.ignored,
                  "device": device}
        protocol = _protocol_text("folders", n=n_seq, fvd="fvd" in names, gt_offset=gt_offset)
        ctx_len = hor = 0
    else:
        if "miou" in names:
            raise UsageError("miou needs predicted label maps; predictors here yield RGB frames",
                             "evaluate label maps on disk with --pred DIR --gt DIR --metric miou")
        overrides = []
        if context is not None:
            overrides.append(f"data.context={context}")
        if horizon is not None:
            overrides.append(f"data.future={horizon}")
        if hw is not None:
            overrides.append(f"data.size=[{hw[0]}, {hw[1]}]")
        loaded = load_predictor(method, weights, overrides, device)
        cfg = loaded.config
        check_head(loaded.model, cfg.method, head)
        source, dataset, indices = _make_test_set(cfg, data=data, split=split, num_sequences=num_sequences, size=hw,
                                                  size_given=hw is not None, from_config=loaded.size_from_config)
        ctx_len, hor = cfg.data.context, cfg.data.future
        n_seq = len(indices)
        if "fvd" in names:
            check_fvd_count(n_seq, n_seq)
        metrics = build_metrics(names, **metric_kw)
        first_step = ctx_len + 1
        first = dataset[indices[0]]["rgb"]
        inputs = {"mode": "predictor", "method": cfg.method, "weights": loaded.weights, "data": source,
                  "split": split, "sequences": n_seq, "context": ctx_len, "horizon": hor, "samples": samples,
                  "frame_step": cfg.data.frame_step, "size": list(first.shape[-2:]), "channels": int(first.shape[1]),
                  "seed": seed, "batch_size": batch_size, "device": device, "head": head,
                  "dataset": _plain(dataset.summary()) if hasattr(dataset, "summary") else None}
        protocol = _protocol_text("model", samples=samples, context=ctx_len, horizon=hor, n=n_seq, fvd="fvd" in names)

    callback("start", {"mode": inputs["mode"], "sequences": n_seq, "metrics": names, "out": str(out)})
    fvd_runner = next((m for m in metrics if m.kind == "video_set"), None)
    fvd = FeatureSet(fvd_runner) if fvd_runner is not None else None
    with atomic_dir(out, overwrite=overwrite) as tmp:
        agg = Aggregator(metrics, tmp / "results.csv", first_step)
        try:
            if folder_mode:
                with torch.inference_mode():
                    _evaluate_folders(plan, metrics, agg, fvd, gt_offset=gt_offset, align=align, device=device,
                                      callback=callback)
            else:
                _evaluate_model(loaded, dataset, indices, metrics, agg, fvd, context=ctx_len, horizon=hor,
                                samples=samples, batch_size=batch_size, seed=seed, device=device, callback=callback,
                                head=head)
        finally:
            agg.close()
        by_name = agg.summary()
        if fvd is not None:
            by_name["fvd"] = fvd.compute()
        results_metrics = {n: by_name[n] for n in names if n in by_name}
        files = ["results.json", "results.csv"]
        if plots:
            for name, entry in results_metrics.items():
                if entry["kind"] == "video_set":
                    continue
                unit = f" ({entry['unit']})" if entry.get("unit") else ""
                arrow = "higher is better" if entry["higher_is_better"] else "lower is better"
                plot_curve(tmp / f"plot_{name}.png", entry["curve"]["t"], entry["curve"]["mean"],
                           entry["curve"]["ci95"], ylabel=name + unit,
                           title=f"{name}{unit} per frame, mean and 95% CI over {entry['n']} sequences ({arrow})")
                files.append(f"plot_{name}.png")
        extremes: dict[str, Any] = {}
        if agg.best is not None:
            for label, ref in (("best", agg.best), ("worst", agg.worst)):
                extremes[label] = {"sequence": ref.name, "metric": agg.primary.name, "value": _clean(ref.value),
                                   "sample": ref.sample}
                if not videos:
                    continue
                if folder_mode:
                    ctx_f, gt_f, pred_f = _folder_comparison(ref, gt_offset, align)
                else:
                    ctx_f, gt_f, pred_f = _recreate_model_sample(loaded, dataset, ref, context=ctx_len, horizon=hor,
                                                                 samples=samples, device=device)
                _write_comparison(tmp / f"{label}.mp4", ctx_f, gt_f, pred_f, ref.sample)
                files.append(f"{label}.mp4")
                extremes[label]["video"] = f"{label}.mp4"
        results = run_meta(command="eval", protocol=protocol, metrics=results_metrics, inputs=inputs,
                           sequences=agg.sequences, extremes=extremes, files=files, versions=_versions(),
                           seconds=round(time.perf_counter() - t0, 3),
                           warnings=_unique([str(w.message) for w in caught]))
        (tmp / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    results["out"] = str(out)
    return results


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _unique_warnings(recorded: list[warnings.WarningMessage]) -> list[tuple[type, str]]:
    seen = dict.fromkeys((w.category, str(w.message)) for w in recorded)
    return list(seen)


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)


__all__ = [
    "EvalWarning",
    "RunningCurve",
    "build_metrics",
    "evaluate",
    "load_predictor",
    "match_folders",
    "parse_metric_names",
    "plot_curve",
    "scan_clips",
    "select_best",
]

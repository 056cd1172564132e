"""Running aggregation: best of N per sequence and metric, Welford means and 95% CIs, FVD embeddings.

Nothing here holds all samples of all sequences: per sequence only its per-frame values
``(S, T)`` pass through :meth:`Aggregator.add`; across sequences only running sums, the FVD
embeddings and the identity of the current best and worst sequence are kept.
"""
from __future__ import annotations

import csv
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vpcli.engine.evaluate.metrics import MetricRunner


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
        self.sample_means = {m.name: RunningCurve() for m in self.metrics}  # the mean of N, beside best of N
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
            self.sample_means[m.name].add(sample_mean, _nan_mean(v, axis=0))
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
            mean_of_n = self.sample_means[m.name].summary()  # every sample counted, not the best one
            entry["mean_of_samples"] = {"mean": mean_of_n["mean"], "ci95": mean_of_n["ci95"],
                                        "curve": mean_of_n["curve"]["mean"]}
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


"""What an evaluation writes: comparison videos, per-frame plots, results.json."""
from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vpcli.errors import VpcliError


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
                   horizon: int | None = None, n: int = 0, fvd: bool = False, gt_offset: int | None = 0,
                   curve_steps: bool = False) -> str:
    best = ("per sequence and metric the sample with the best mean over the frames is kept (highest for "
            "metrics where higher is better, e.g. PSNR/SSIM; lowest otherwise, e.g. LPIPS/MSE); reported: the mean "
            "over sequences of the kept samples' scores with a 95% confidence interval (Student t over sequences) "
            "and the per-time-step mean curve of the kept samples; beside it, mean_of_samples: the same with "
            "every sample counted (each sequence's mean over its samples)")
    if mode == "model":
        text = (f"best of {samples}: for each of {n} test sequences the {context} context frames are encoded once "
                f"and {samples} samples of {horizon} future frames are drawn as one batch; per-frame metrics are "
                f"computed for every sample; " + best)
        if fvd:
            text += ("; FVD compares one sample per sequence (the first), context frames included, with the real "
                     "clips")
    else:
        first = (f"frame {gt_offset} + t of its ground truth" if gt_offset is not None else
                 "ground-truth frame first + t, first being the first predicted frame named in the prediction's "
                 "meta.json (vpcli predict; 0 without one)")
        text = (f"folders: predictions matched to ground truth by name, frame t of a prediction against "
                f"{first}; clips with several samples (NAME/sample_K): " + best)
        if curve_steps:
            text += " (the curves are over future steps 1, 2, ... as the clips start at different frames)"
        if fvd:
            text += "; FVD compares the first sample of every clip with the ground-truth clips"
    return text



def write_plots(folder: Path, metrics: dict[str, dict[str, Any]]) -> list[str]:
    """``plot_<metric>.png`` (mean curve and 95% CI band) for every per-frame metric; returns the file names."""
    files = []
    for name, entry in metrics.items():
        if entry["kind"] == "video_set":
            continue
        unit = f" ({entry['unit']})" if entry.get("unit") else ""
        arrow = "higher is better" if entry["higher_is_better"] else "lower is better"
        plot_curve(folder / f"plot_{name}.png", entry["curve"]["t"], entry["curve"]["mean"],
                   entry["curve"]["ci95"], ylabel=name + unit,
                   title=f"{name}{unit} per frame, mean and 95% CI over {entry['n']} sequences ({arrow})")
        files.append(f"plot_{name}.png")
    return files


def write_results(folder: Path, results: dict[str, Any]) -> None:
    """``results.json`` (inside the temporary output folder, which is published as a whole)."""
    (folder / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")

"""HVP long-term prediction check (Lee et al., ICLR 2021, Sec. 4 "Long-term prediction", Eq. 7).

The paper claims HVP predicts 1,000 frames "without collapse". This script measures that claim on
held-out synth-street sequences: for each of the first ``--clips`` sequences of ``--data`` (sorted
by name) the first ``--context`` frames (RGB + label maps) condition the model, which then
predicts ``--horizon`` steps. Everything is computed while streaming (``predict`` yields one step at
a time); only the uint8 frames of the FVD windows are kept.

Metrics, at every step ``t`` (1-based) of the prediction, reported at the ``--at`` steps:

a. **sharpness**: mean gradient magnitude of the frame. Grey = mean over the RGB channels
   (values in [0, 1]); forward finite differences ``dx = g[:, 1:] - g[:, :-1]`` and
   ``dy = g[1:, :] - g[:-1, :]`` on the common ``(H-1) x (W-1)`` interior, magnitude
   ``sqrt(dx^2 + dy^2)`` (Euclidean), averaged over pixels. Reference: the same number for the
   real frames (mean over every frame of every reference sequence).
b. **label-histogram distance**: total-variation distance ``0.5 * sum |p - q|`` between the
   normalised 19-class histogram of the predicted label map and that of all real label maps (every
   frame of every reference sequence; id 255 = ignore is not counted). Reference: the same
   distance for the last context label map of each clip.
c. **no collapse**: the last ``--at`` step against the first (t=1000 vs t=10 by default).
   Sharpness: ``|s_last - s_first| / s_first <= 0.2``. Histogram distance: both values, the ratio
   ``d_last / d_first`` and ``ok = d_last <= 1.2 * d_first`` (only a growing distance is a
   collapse; a distance that shrinks is not); the symmetric relative change is reported too.
d. **shot-wise FVD** (Eq. 7) at each ``--at`` step: the ``--shot-window`` predicted frames starting
   at ``t`` (moved earlier so the window ends inside the horizon) of every clip x sample, against
   every ``--shot-window``-frame window (stride ``--real-stride``) of the real reference
   sequences, through :class:`vpcli.metrics.fvd.FVD` (I3D features of the real shots computed once).
   Without the Kinetics I3D weights offline the library's explicit random-weight I3D
   (:meth:`InceptionI3d.random_init_`, seeded) is used and the values are marked
   "not comparable: random I3D weights". FVD with fewer than ``FVD_MIN_VIDEOS`` predicted shots
   is skipped with a note. ``--no-fvd`` skips it (I3D at 224x224 is slow on CPU).

Per-clip numbers are means over samples; the table gives the mean over clips and a 95% confidence
interval over clips (Student t, ``mean +- t_{0.975, n-1} * sd / sqrt(n)``). The reference
sequences are all sequence folders of ``--data`` unless ``--ref-clips N`` limits them to the first N.

Example::

    python scripts/hvp_longterm.py --weights RUN --data /work/hvp/test64 --clips 16 --horizon 1000 \
        --at 10,100,500,1000 --out results.json --threads 1
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vpcli.engine.loading import load_predictor
from vpcli.io.labels import read_label_png

NUM_CLASSES = 19
IGNORE = 255
RANDOM_I3D_NOTE = "not comparable: random I3D weights"


# --------------------------------------------------------------------------- data


def sequence_folders(data: Path) -> list[Path]:
    seqs = sorted(p for p in data.iterdir() if p.is_dir() and (p / "frames").is_dir() and (p / "labels").is_dir())
    if not seqs:
        sys.exit(f"error: no sequence folders (SEQ/frames, SEQ/labels) in {data}")
    return seqs


def read_sequence(seq: Path, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """-> frames uint8 (T, H, W, 3), labels int64 (T, H, W)."""
    fr = sorted((seq / "frames").glob("*.png"))
    lb = sorted((seq / "labels").glob("*.png"))
    if len(fr) != len(lb) or not fr:
        sys.exit(f"error: {seq} has {len(fr)} frames and {len(lb)} label maps")
    if limit is not None:
        fr, lb = fr[:limit], lb[:limit]
    frames = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in fr])
    labels = np.stack([read_label_png(p) for p in lb])
    return frames, labels


# --------------------------------------------------------------------------- metrics


def sharpness(frames: torch.Tensor) -> torch.Tensor:
    """``(N, 3, H, W)`` in [0, 1] -> ``(N,)`` mean Euclidean gradient magnitude of the grey image."""
    g = frames.float().mean(1)
    dx = g[:, :-1, 1:] - g[:, :-1, :-1]
    dy = g[:, 1:, :-1] - g[:, :-1, :-1]
    return torch.sqrt(dx * dx + dy * dy).mean((1, 2))


def class_hist(labels: torch.Tensor | np.ndarray) -> np.ndarray:
    """Counts of ids 0..18 (255 and anything else out of range not counted), float64 (19,)."""
    x = torch.as_tensor(labels).reshape(-1)
    x = x[(x >= 0) & (x < NUM_CLASSES)]
    return torch.bincount(x, minlength=NUM_CLASSES).double().numpy()


def tv_distance(counts: np.ndarray, ref_p: np.ndarray) -> float:
    s = counts.sum()
    if s <= 0:
        return float("nan")
    return float(0.5 * np.abs(counts / s - ref_p).sum())


def mean_ci(values) -> dict:
    """Mean over clips and the 95% Student-t interval half-width."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
    n = len(v)
    if n == 0:
        return {"mean": None, "ci95": None, "n": 0}
    m = float(v.mean())
    if n < 2:
        return {"mean": m, "ci95": None, "n": n}
    try:
        from scipy.stats import t as student_t
        q = float(student_t.ppf(0.975, n - 1))
    except ImportError:  # normal approximation
        q = 1.959964
    return {"mean": m, "ci95": float(q * v.std(ddof=1) / math.sqrt(n)), "n": n}


# --------------------------------------------------------------------------- FVD


def build_fvd(weights: str, device: str, seed: int):
    """-> (FVD instance, note or None). Random-weight I3D only through the library's explicit
    ``InceptionI3d.random_init_`` when the Kinetics weights cannot be had."""
    from vpcli.errors import WeightsError
    from vpcli.metrics.fvd import FVD
    from vpcli.metrics.i3d import InceptionI3d
    try:
        return FVD(weights, device=device), None, {"weights": weights}
    except WeightsError as e:
        reason = getattr(e, "message", str(e))
    model = InceptionI3d().random_init_(seed)
    return (FVD(model=model, device=device), RANDOM_I3D_NOTE,
            {"weights": f"random_init_(seed={seed}) (InceptionI3d)", "why": reason})


def to_video(frames_u8: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 ``(N, T, 3, H, W)`` -> float [0, 1]."""
    return torch.as_tensor(frames_u8).float() / 255.0


# --------------------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="run folder, checkpoint or manifest name")
    p.add_argument("--data", default="/work/hvp/test64", help="folder of synth-street sequence folders")
    p.add_argument("--clips", type=int, default=16, help="first N sequences (sorted by name)")
    p.add_argument("--ref-clips", type=int, default=None,
                   help="reference sequences for the real statistics / real FVD shots (default: all in --data)")
    p.add_argument("--context", type=int, default=None, help="context frames (default: the model's data.context)")
    p.add_argument("--horizon", type=int, default=1000)
    p.add_argument("--samples", type=int, default=1)
    p.add_argument("--at", default="10,100,500,1000", help="1-based prediction steps to report")
    p.add_argument("--shot-window", type=int, default=16)
    p.add_argument("--real-stride", type=int, default=1, help="stride of the real FVD shots")
    p.add_argument("--fvd-weights", default="i3d-kinetics400", help="I3D weights (manifest name or file)")
    p.add_argument("--fvd-batch", type=int, default=8)
    p.add_argument("--no-fvd", action="store_true")
    p.add_argument("--out", default="results.json")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--device", default="cpu")
    return p.parse_args(argv)


def fmt(d: dict | None, digits: int = 4) -> str:
    if not d or d.get("mean") is None:
        return "n/a"
    if d.get("ci95") is None:
        return f"{d['mean']:.{digits}f}"
    return f"{d['mean']:.{digits}f} ± {d['ci95']:.{digits}f}"


def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.time()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)

    model, cfg, info = load_predictor(None, args.weights, device=args.device)
    if "labels" not in getattr(model, "outputs", ()):
        sys.exit(f"error: {args.weights} is a {getattr(model, 'name', '?')} model without label outputs (need HVP)")
    context = int(args.context if args.context is not None else cfg.data.context)
    horizon, samples = int(args.horizon), int(args.samples)
    if context < 1 or horizon < 1 or samples < 1 or args.clips < 1:
        sys.exit("error: --context, --horizon, --samples and --clips must be >= 1")
    at_req = sorted({int(a) for a in args.at.split(",") if a.strip()})
    at = [a for a in at_req if 1 <= a <= horizon]
    notes: list[str] = []
    if len(at) < len(at_req):
        notes.append(f"--at steps {[a for a in at_req if a not in at]} are outside 1..{horizon} and were dropped")
    if not at:
        sys.exit(f"error: no --at step within 1..{horizon}")
    window = int(args.shot_window)

    data = Path(args.data)
    seqs = sequence_folders(data)
    if args.clips > len(seqs):
        notes.append(f"--clips {args.clips} but {data} holds {len(seqs)} sequences; using {len(seqs)}")
    clips = seqs[:args.clips]
    ref_seqs = seqs if args.ref_clips is None else seqs[:args.ref_clips]

    # --- real reference statistics (every frame of every reference sequence) ----------------------
    ref_counts = np.zeros(NUM_CLASSES)
    ref_sharp_per_seq = []
    ref_frames_total = 0
    ref_len = None
    for seq in ref_seqs:
        fr, lb = read_sequence(seq)
        ref_len = fr.shape[0] if ref_len is None else min(ref_len, fr.shape[0])
        ref_counts += class_hist(lb)
        x = torch.from_numpy(fr).permute(0, 3, 1, 2).float() / 255.0
        ref_sharp_per_seq.append(float(sharpness(x).mean()))
        ref_frames_total += fr.shape[0]
    ref_p = ref_counts / ref_counts.sum()

    # --- FVD set-up --------------------------------------------------------------------------------
    fvd_metric = fvd_note = fvd_weights_info = None
    fvd_skip = None
    fvd_starts = {}
    if args.no_fvd:
        fvd_skip = "skipped (--no-fvd)"
    else:
        from vpcli.metrics.fvd import FVD_MIN_VIDEOS
        from vpcli.metrics.i3d import MIN_FRAMES
        if window < MIN_FRAMES:
            fvd_skip = f"skipped: --shot-window {window} < I3D's minimum of {MIN_FRAMES} frames"
        elif horizon < window:
            fvd_skip = f"skipped: horizon {horizon} shorter than the {window}-frame shot window"
        elif len(clips) * samples < FVD_MIN_VIDEOS:
            fvd_skip = (f"skipped: {len(clips) * samples} predicted shots per step, FVD needs at least "
                        f"{FVD_MIN_VIDEOS} (more --clips or --samples)")
        elif ref_len is None or ref_len < window:
            fvd_skip = f"skipped: real sequences have {ref_len} frames, fewer than the {window}-frame window"
        else:
            # 0-based first step of the window for each reported t (1-based), kept inside the horizon
            fvd_starts = {t: min(t - 1, horizon - window) for t in at}
    keep_steps = {}  # 0-based step -> list of (at, offset in window)
    for t, s0 in fvd_starts.items():
        for k in range(window):
            keep_steps.setdefault(s0 + k, []).append((t, k))

    # --- prediction loop ---------------------------------------------------------------------------
    per_clip = []
    curve_sharp = np.zeros(horizon)
    curve_hist = np.zeros(horizon)
    shots = {t: [] for t in fvd_starts}        # per clip: uint8 (S, window, 3, H, W)
    clip_seconds = []
    for ci, seq in enumerate(clips):
        fr, lb = read_sequence(seq)
        if fr.shape[0] < context:
            sys.exit(f"error: {seq} has {fr.shape[0]} frames, fewer than the context of {context}")
        rgb = torch.from_numpy(fr[:context]).permute(0, 3, 1, 2).float().div(255.0)[None].to(args.device)
        lab = torch.from_numpy(lb[:context])[None].to(args.device)
        h, w = rgb.shape[-2:]
        mult = getattr(model, "size_multiple", 1)
        if h % mult or w % mult:
            sys.exit(f"error: frames of {h}x{w} are not a multiple of the model's {mult}")
        gen = torch.Generator(device=args.device).manual_seed(args.seed * 100003 + ci)
        buf = {t: np.zeros((samples, window, 3, h, w), np.uint8) for t in fvd_starts}
        sharp_steps = np.zeros((horizon, samples))
        hist_steps = np.zeros((horizon, samples))
        t0 = time.time()
        step = -1
        for step, rec in enumerate(model.predict({"rgb": rgb, "labels": lab}, horizon, samples, gen)):
            frames = rec.frames[0]                      # (S, 3, H, W)
            labels = rec.labels[0]                      # (S, H, W)
            sharp_steps[step] = sharpness(frames).cpu().numpy()
            for si in range(samples):
                hist_steps[step, si] = tv_distance(class_hist(labels[si].cpu()), ref_p)
            for t, k in keep_steps.get(step, ()):
                buf[t][:, k] = (frames.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
            if step + 1 >= horizon:
                break
        if step + 1 != horizon:
            sys.exit(f"error: the model yielded {step + 1} steps, not {horizon}")
        sec = time.time() - t0
        clip_seconds.append(sec)
        for t in fvd_starts:
            shots[t].append(buf[t])
        curve_sharp += sharp_steps.mean(1)
        curve_hist += hist_steps.mean(1)
        ctx_dist = tv_distance(class_hist(lb[context - 1]), ref_p)
        per_clip.append({"sequence": seq.name, "seconds": round(sec, 3), "context_hist_tv": ctx_dist,
                         "sharpness": {str(t): float(sharp_steps[t - 1].mean()) for t in at},
                         "hist_tv": {str(t): float(hist_steps[t - 1].mean()) for t in at}})
        print(f"[{ci + 1}/{len(clips)}] {seq.name}: {horizon} steps x {samples} samples in {sec:.1f}s "
              f"({1000 * sec / horizon:.1f} ms/step)", file=sys.stderr, flush=True)
    n_clips = len(clips)
    curve_sharp /= n_clips
    curve_hist /= n_clips

    # --- aggregate ---------------------------------------------------------------------------------
    rows = {}
    for t in at:
        rows[str(t)] = {"sharpness": mean_ci([c["sharpness"][str(t)] for c in per_clip]),
                        "hist_tv": mean_ci([c["hist_tv"][str(t)] for c in per_clip])}
    ref_block = {
        "real_sharpness": {**mean_ci(ref_sharp_per_seq), "frames": ref_frames_total,
                           "sequences": len(ref_seqs), "note": "CI over reference sequences"},
        "context_last_hist_tv": mean_ci([c["context_hist_tv"] for c in per_clip]),
        "real_class_hist": [float(v) for v in ref_p],
    }

    first, last = str(at[0]), str(at[-1])
    s_a, s_b = rows[first]["sharpness"]["mean"], rows[last]["sharpness"]["mean"]
    d_a, d_b = rows[first]["hist_tv"]["mean"], rows[last]["hist_tv"]["mean"]
    s_rel = abs(s_b - s_a) / s_a if s_a else None
    d_ratio = d_b / d_a if d_a else None
    no_collapse = {
        "compare": [at[0], at[-1]], "tolerance": 0.2,
        "sharpness": {"first": s_a, "last": s_b, "rel_change": s_rel,
                      "ok": bool(s_rel is not None and s_rel <= 0.2)},
        "hist_tv": {"first": d_a, "last": d_b, "ratio": d_ratio,
                    "rel_change": abs(d_b - d_a) / d_a if d_a else None,
                    "ok": bool(d_b <= 1.2 * d_a) if d_a else bool(d_b == 0),
                    "rule": "ok = last <= 1.2 * first (a shrinking distance is no collapse)"},
    }
    if at[0] != 10 or at[-1] != 1000:
        notes.append(f"no-collapse check compares t={at[0]} with t={at[-1]} (the paper's claim is 10 vs 1000)")

    # --- FVD ---------------------------------------------------------------------------------------
    fvd_block: dict = {"status": fvd_skip} if fvd_skip else {}
    if fvd_starts:
        from vpcli.metrics.fvd import fvd_from_features, gaussian_stats
        t_fvd = time.time()
        fvd_metric, fvd_note, fvd_weights_info = build_fvd(args.fvd_weights, args.device, args.seed)
        fvd_metric.batch_size = max(1, int(args.fvd_batch))
        real_shots = []
        for seq in ref_seqs:
            fr, _ = read_sequence(seq)
            v = torch.from_numpy(fr).permute(0, 3, 1, 2)                       # (T, 3, H, W) uint8
            for s0 in range(0, v.shape[0] - window + 1, max(1, args.real_stride)):
                real_shots.append(v[s0:s0 + window])
        real_feats = torch.cat([fvd_metric.features(to_video(torch.stack(real_shots[i:i + 32])))
                                for i in range(0, len(real_shots), 32)])
        gaussian_stats(real_feats)  # checks there are enough real shots
        values, caught = {}, []
        for t, s0 in fvd_starts.items():
            pred = to_video(np.concatenate(shots[t], 0))                        # (clips*S, window, 3, H, W)
            with warnings.catch_warnings(record=True) as wl:
                warnings.simplefilter("always")
                values[str(t)] = {"fvd": fvd_from_features(fvd_metric.features(pred), real_feats,
                                                           method=fvd_metric.method),
                                  "window_steps": [s0 + 1, s0 + window], "pred_shots": int(pred.shape[0])}
            caught += [str(x.message) for x in wl]
        fvd_block = {"status": "computed", "values": values, "real_shots": len(real_shots),
                     "window": window, "real_stride": args.real_stride, "i3d": fvd_weights_info,
                     "comparable": fvd_note is None, "note": fvd_note,
                     "protocol": {**fvd_metric.protocol, **({"name": "random-i3d", "embedding":
                                  "logits of a random-weight I3D (not Kinetics-400)",
                                  "source": "vpcli InceptionI3d.random_init_"} if fvd_note else {}),
                                  "frames": f"{window} predicted frames from step t (no context) vs every "
                                            f"{window}-frame window of the real sequences",
                                  "sample": f"all {samples} samples of every clip"},
                     "warnings": sorted(set(caught)), "seconds": round(time.time() - t_fvd, 2)}

    elapsed = time.time() - t_start
    result = {
        "script": "scripts/hvp_longterm.py",
        "command": " ".join([Path(sys.executable).name, *sys.argv]) if argv is None else " ".join(argv),
        "weights": {"arg": args.weights, **{k: info.get(k) for k in ("name", "path", "sha256", "kind")}},
        "method": getattr(model, "name", None),
        "data": str(data), "clips": [s.name for s in clips], "num_clips": n_clips,
        "reference_sequences": len(ref_seqs),
        "context": context, "horizon": horizon, "samples": samples, "seed": args.seed, "at": at,
        "shot_window": window, "frame_size": [int(h), int(w)],
        "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(), "device": args.device, "python": platform.python_version(),
        "elapsed_seconds": round(elapsed, 2),
        "seconds_per_clip": {"mean": float(np.mean(clip_seconds)), "per_clip": [round(s, 3) for s in clip_seconds],
                             "ms_per_step_per_sample": float(1000 * np.mean(clip_seconds) / (horizon * samples))},
        "sharpness_definition": "mean over pixels of sqrt(dx^2+dy^2), forward differences of grey=mean(RGB) in [0,1]",
        "hist_definition": "0.5 * L1 between normalised 19-class histograms (id 255 not counted)",
        "metrics": rows, "reference": ref_block, "no_collapse": no_collapse, "fvd": fvd_block,
        "curves": {"sharpness": [round(float(v), 6) for v in curve_sharp],
                   "hist_tv": [round(float(v), 6) for v in curve_hist]},
        "per_clip": per_clip, "notes": notes,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_clean(result), indent=2, allow_nan=False, default=str))

    # --- Markdown ----------------------------------------------------------------------------------
    fvd_head = "shot-wise FVD" + (f" ({fvd_note})" if fvd_note else "")
    print(f"HVP long-term: {n_clips} clips x {samples} samples, context {context}, horizon {horizon}, "
          f"weights {info.get('name') or info.get('path')}\n")
    print(f"| t | sharpness (95% CI) | label-hist TV (95% CI) | {fvd_head} |")
    print("|---|---|---|---|")
    for t in at:
        fv = fvd_block.get("values", {}).get(str(t))
        fv_text = f"{fv['fvd']:.1f}" if fv else (fvd_skip or "n/a")
        print(f"| {t} | {fmt(rows[str(t)]['sharpness'])} | {fmt(rows[str(t)]['hist_tv'])} | {fv_text} |")
    print(f"| real / context ref | {fmt(ref_block['real_sharpness'])} (real frames) | "
          f"{fmt(ref_block['context_last_hist_tv'])} (last context map) | |")
    nc = no_collapse
    print(f"\nNo collapse (t={at[0]} vs t={at[-1]}): sharpness rel. change "
          f"{nc['sharpness']['rel_change'] if nc['sharpness']['rel_change'] is None else round(nc['sharpness']['rel_change'], 4)}"
          f" -> {'OK' if nc['sharpness']['ok'] else 'FAIL'}; hist TV {d_a:.4f} -> {d_b:.4f} (ratio "
          f"{'n/a' if d_ratio is None else f'{d_ratio:.3f}'}) -> {'OK' if nc['hist_tv']['ok'] else 'FAIL'}")
    print(f"Time: {np.mean(clip_seconds):.2f}s per clip ({result['seconds_per_clip']['ms_per_step_per_sample']:.1f} "
          f"ms/step/sample), total {elapsed:.1f}s. JSON: {out}")
    for n in notes:
        print(f"Note: {n}")
    return 0


def _clean(obj):
    """Non-finite floats -> None (strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


if __name__ == "__main__":
    raise SystemExit(main())

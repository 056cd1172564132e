"""SADM's dis-occlusion criteria against the ground-truth occlusion masks of synth-street.

Sec. 3.2 / Fig. 4 of the SADM paper (Bei et al., CVPR 2021) estimate the dis-occluded pixels
Omega_d of the next frame by pixel occupancy, by semantic consistency, and by their union, and
claim that the union beats either criterion. synth-street writes the exact answer: ``occlusion.npz``
key ``backward`` marks the pixels of frame t+1 not visible in frame t. This script scores each
criterion against it at the first predicted frame (t+1 = the frame after the context), where the
comparison is exact: the warped source is the real last context frame.

Two rows per criterion:

* ``predicted``: Omega_d from the model's predicted backward flow and label map of t+1 (what
  `vpcli predict --method sadm` uses), the previous labels being the last context label map;
* ``exact``: the same criterion on the exact backward flow and the exact labels of t+1 (the
  criterion alone, free of the dynamics model's errors).

Pixels of all sequences are pooled (micro averages): precision = |Omega_d and GT| / |Omega_d|,
recall = |Omega_d and GT| / |GT|, F1, IoU and the fraction of pixels marked. Labels are compared
as the model's class groups (its ``class_groups``), as the criterion sees them.

Example::

    python scripts/sadm_disocclusion.py --weights sadm-synthstreet --data test64 --out disocc.json --threads 1
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vpcli.engine.loading import load_predictor
from vpcli.io.labels import read_label_png

CRITERIA = ("occupancy", "semantic", "both")


def sequence_folders(data: Path) -> list[Path]:
    seqs = sorted(p for p in data.iterdir() if (p / "occlusion.npz").is_file() and (p / "flow_forward.npz").is_file())
    if not seqs:
        sys.exit(f"error: no synth-street sequence folders (with occlusion.npz and flow_forward.npz) in {data}")
    return seqs


def read(seq: Path, n: int):
    """The first ``n`` frames (float (n, 3, H, W)), labels (n, H, W), forward flow (n-1, 2, H, W),
    and frame n-1's exact backward flow (frame n -> n-1) and backward occlusion (pixels of frame n)."""
    fr = sorted((seq / "frames").glob("*.png"))[:n + 1]
    lb = sorted((seq / "labels").glob("*.png"))[:n + 1]
    if len(fr) < n + 1 or len(lb) < n + 1:
        sys.exit(f"error: {seq} has fewer than {n + 1} frames / label maps")
    rgb = torch.from_numpy(np.stack([np.asarray(Image.open(p).convert("RGB")) for p in fr])).permute(0, 3, 1, 2)
    labels = torch.from_numpy(np.stack([read_label_png(p) for p in lb]).astype(np.int64))
    fwd = torch.from_numpy(np.load(seq / "flow_forward.npz")["flow"][:n])                 # (n, 2, H, W)
    bwd = torch.from_numpy(np.load(seq / "flow_backward.npz")["flow"][n - 1])             # frame n -> n-1
    occ = torch.from_numpy(np.load(seq / "occlusion.npz")["backward"][n - 1])             # pixels of frame n
    return rgb.float() / 255, labels, fwd, bwd, occ


def scores(tp: int, marked: int, gt: int, pixels: int) -> dict:
    p = tp / marked if marked else float("nan")
    r = tp / gt if gt else float("nan")
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r > 0 else 0.0,
            "iou": tp / (marked + gt - tp) if marked + gt - tp else float("nan"),
            "marked": marked / pixels, "gt_fraction": gt / pixels}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", required=True, help="SADM weights: manifest name, run folder or file")
    ap.add_argument("--data", required=True, help="folder of synth-street sequences (held out)")
    ap.add_argument("--sequences", type=int, default=None, help="first N sequences (sorted by name)")
    ap.add_argument("--context", type=int, default=None, help="context frames (default: the model's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="disocclusion.json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, cfg, _ = load_predictor("sadm", args.weights)
    model.eval()
    c = args.context or model.config.context
    seqs = sequence_folders(Path(args.data))[:args.sequences]
    counts = {(mode, k): [0, 0, 0] for mode in ("predicted", "exact") for k in CRITERIA}   # tp, marked, gt
    pixels = 0
    gen = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        for seq in seqs:
            rgb, labels, fwd, bwd, occ = read(seq, c)
            ctx = {"rgb": rgb[None, :c], "labels": labels[None, :c], "flow": fwd[None, :c - 1]}
            rec = next(iter(model.predict(ctx, 1, 1, gen, want_extras=True)))
            back = rec.extras["backward_flow"][:, 0].float()                                # (1, 2, H, W)
            pred_g = model._groups(rec.labels[:, 0])
            prev_g = model._groups(labels[None, c - 1])
            true_g = model._groups(labels[None, c])
            gt = occ[None]
            pixels += gt.numel()
            for k in CRITERIA:
                model.config.disocclusion = k
                for mode, (flow, g) in {"predicted": (back, pred_g), "exact": (bwd[None].float(), true_g)}.items():
                    om = model.disocclusion(flow, g, prev_g)[:, 0] > 0.5
                    n = counts[(mode, k)]
                    n[0] += int((om & gt).sum())
                    n[1] += int(om.sum())
                    n[2] += int(gt.sum())
    out = {"weights": args.weights, "data": str(args.data), "sequences": len(seqs), "context": c,
           "step": "t+1", "pixels": pixels, "torch": torch.__version__, "platform": platform.platform(),
           "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "results": {f"{mode}/{k}": scores(*counts[(mode, k)], pixels) for (mode, k) in counts}}
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"{'criterion':<22} {'precision':>9} {'recall':>7} {'F1':>6} {'IoU':>6} {'marked':>7}")
    for key, r in out["results"].items():
        print(f"{key:<22} {r['precision']:9.3f} {r['recall']:7.3f} {r['f1']:6.3f} {r['iou']:6.3f} {r['marked']:7.3f}")
    print(f"ground truth: {out['results']['exact/both']['gt_fraction']:.3f} of {pixels} pixels, {len(seqs)} sequences")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

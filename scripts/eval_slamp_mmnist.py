"""SLAMP's Moving-Digits evaluation (issue 6): best of N samples per sequence and metric, PSNR and
SSIM per future step, for SLAMP (fused prediction, static head, dynamic head), SLAMP-Baseline,
and copy-last-frame, on the same held-out sequences with the same seed.

Protocol (SLAMP Sec. 4 / the SVG evaluation code): condition on 5 frames, predict 20 (models
trained 5 -> 10), ``--samples`` samples per sequence drawn as one batch, the best sample kept per
sequence and metric; mean and 95% CI over sequences, and the per-step mean curve.

Every number comes from ``vpcli eval`` (one subprocess per row, results.json kept in OUT/NAME/);
this script only runs them and tabulates. Run (about 15 minutes on 2 CPU cores):

    python scripts/eval_slamp_mmnist.py --slamp slamp-mmnist-cpu-digits \
        --baseline slamp-baseline-mmnist-cpu-digits --out eval/slamp-mmnist

``--slamp``/``--baseline`` take anything ``--weights`` takes (a run folder or a manifest name).
Writes OUT/summary.json (all rows: mean, CI, curves) and OUT/summary.md (tables).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path


def rows(args) -> list[tuple[str, list[str]]]:
    common = ["--data", "synthetic:moving-digits", "--context", "5", "--horizon", str(args.horizon),
              "--num-sequences", str(args.sequences), "--samples", str(args.samples), "--metric", "psnr,ssim",
              "--seed", str(args.seed), "--batch-size", str(args.batch_size)]
    out = [("copy-last", ["--method", "copy-last", "--size", "64x64", *common])]
    if args.baseline:
        out.append(("slamp-baseline", ["--weights", args.baseline, *common]))
    if args.slamp:
        for head in ("static", "dynamic", "fused"):
            name = "slamp" if head == "fused" else f"slamp-{head}"
            out.append((name, ["--weights", args.slamp, "--head", head, *common]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slamp", help="SLAMP weights (run folder or manifest name)")
    ap.add_argument("--baseline", help="SLAMP-Baseline weights (run folder or manifest name)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--sequences", type=int, default=200)
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--horizon", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--rows", help="comma-separated subset to run now (e.g. to run two processes at once); "
                                   "rows already in OUT are read back, not re-run")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, dict] = {}
    wanted = set(args.rows.split(",")) if args.rows else None
    for name, extra in rows(args):
        folder = args.out / name
        if wanted is not None and name not in wanted:
            continue
        if not (folder / "results.json").exists() or args.overwrite:
            cmd = [sys.executable, "-m", "vpcli", "eval", *extra, "--out", str(folder), "--overwrite", "--json"]
            print("$", " ".join(cmd[2:]), flush=True)
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=os.environ.copy())
        r = json.loads((folder / "results.json").read_text())
        summary[name] = {m: {"mean": v["mean"], "ci95": v["ci95"], "curve": v["curve"]["mean"], "t": v["curve"]["t"],
                             "n": v["n"]} for m, v in r["metrics"].items()}
        summary[name]["command"] = "vpcli eval " + " ".join(extra)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    lines = [f"Best of {args.samples} samples per sequence and metric, {args.sequences} held-out sequences, "
             f"5 -> {args.horizon} frames (`python scripts/eval_slamp_mmnist.py`).", "",
             "| method | PSNR (dB) | SSIM |", "|---|---|---|"]
    for name, s in summary.items():
        lines.append(f"| {name} | {s['psnr']['mean']:.2f} ± {s['psnr']['ci95']:.2f} | "
                     f"{s['ssim']['mean']:.4f} ± {s['ssim']['ci95']:.4f} |")
    for metric, fmt in (("psnr", "{:.2f}"), ("ssim", "{:.3f}")):
        t = next(iter(summary.values()))[metric]["t"]
        lines += ["", f"{metric.upper()} per future step (frame index t):", "",
                  "| method | " + " | ".join(str(x) for x in t) + " |", "|---" * (len(t) + 1) + "|"]
        for name, s in summary.items():
            lines.append(f"| {name} | " + " | ".join(fmt.format(v) for v in s[metric]["curve"]) + " |")
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

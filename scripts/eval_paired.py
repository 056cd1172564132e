"""Paired difference of two `vpcli eval` runs over the same sequences: B - A per sequence.

    python scripts/eval_paired.py eval/hvp10 eval/hvp-lstm10 --metric miou

Reads each folder's results.csv (one row per sequence and metric: the best sample's value and the
mean over samples). Prints, for the best sample and for the mean sample, the mean of B - A over the
sequences both runs scored, its 95% confidence interval (Student t), and on how many sequences B
is better (by the metric's direction: higher for PSNR / SSIM / mIoU, lower for LPIPS / FVD / EPE).
"""
from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

from scipy import stats

LOWER_IS_BETTER = {"lpips", "fvd", "epe"}


def read(folder: Path, metric: str) -> dict[str, tuple[float, float]]:
    with open(folder / "results.csv", newline="") as f:
        return {r["sequence"]: (float(r["value"]), float(r["mean_over_samples"] or r["value"]))
                for r in csv.DictReader(f) if r["metric"] == metric}


def paired(a: list[float], b: list[float], lower_better: bool) -> dict:
    d = [y - x for x, y in zip(a, b)]
    n = len(d)
    mean = sum(d) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in d) / (n - 1)) if n > 1 else 0.0
    half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n) if n > 1 else float("nan")
    better = sum(1 for v in d if (v < 0 if lower_better else v > 0))
    return {"n": n, "mean_diff": mean, "ci95": half, "b_better": better}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--metric", default="miou", help="comma-separated")
    args = ap.parse_args(argv)
    for metric in args.metric.split(","):
        ra, rb = read(args.a, metric), read(args.b, metric)
        seqs = sorted(set(ra) & set(rb))
        if not seqs:
            raise SystemExit(f"error: no sequence has {metric} in both {args.a} and {args.b}")
        for i, what in enumerate(("best sample", "mean sample")):
            r = paired([ra[s][i] for s in seqs], [rb[s][i] for s in seqs], metric in LOWER_IS_BETTER)
            print(f"{metric} ({what}): {args.b.name} - {args.a.name} = {r['mean_diff']:+.4f} ± {r['ci95']:.4f} "
                  f"over {r['n']} sequences; {args.b.name} better on {r['b_better']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Markdown rows from `vpcli eval` results: each metric's best-of-N and mean-of-N at chosen steps.

    python scripts/eval_table.py eval/hvp eval/copy-last --metric miou --steps 1,5,10
    python scripts/eval_table.py eval/hvp eval/slamp --metric psnr,ssim --steps 1,5,10 --overall

Each positional argument is an eval output folder (its results.json). A row per folder and metric:
the value at each predicted step (1 = the first predicted frame) as "best / mean" of the samples
(one number for a deterministic method or --samples 1), and with --overall the mean over all steps
with its 95% confidence interval.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def _fmt(x, digits: int) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def rows(folder: Path, metrics: list[str], steps: list[int], overall: bool, digits: int) -> list[str]:
    res = json.loads((folder / "results.json").read_text())
    samples = res.get("inputs", {}).get("samples", 1) or 1
    out = []
    for name in metrics:
        m = res["metrics"].get(name)
        if m is None:
            out.append(f"| {folder.name} | {name} | (not computed) |")
            continue
        best = m["curve"]["mean"]
        mean = (m.get("mean_of_samples") or {}).get("curve") or best
        cells = []
        for s in steps:
            if s - 1 >= len(best):
                cells.append("-")
            elif samples > 1:
                cells.append(f"{_fmt(best[s - 1], digits)} / {_fmt(mean[s - 1], digits)}")
            else:
                cells.append(_fmt(best[s - 1], digits))
        if overall:
            mo = (m.get("mean_of_samples") or {}).get("mean")
            tail = f"{_fmt(m['mean'], digits)} ± {_fmt(m.get('ci95'), digits)}"
            if samples > 1:
                tail += f" / {_fmt(mo, digits)}"
            cells.append(tail)
        out.append(f"| {folder.name} | {name} | " + " | ".join(cells) + " |")
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--metric", default="psnr", help="comma-separated metric names")
    ap.add_argument("--steps", default="1,5,10", help="predicted steps to show (1-based)")
    ap.add_argument("--overall", action="store_true", help="add the mean over all steps with its 95%% CI")
    ap.add_argument("--digits", type=int, default=3)
    a = ap.parse_args(argv)
    metrics = [m for m in a.metric.split(",") if m]
    steps = [int(s) for s in a.steps.split(",") if s]
    head = "| run | metric | " + " | ".join(f"t+{s}" for s in steps) + (" | all steps |" if a.overall else " |")
    print(head)
    print("|" + "---|" * (2 + len(steps) + int(a.overall)))
    for f in a.folders:
        for line in rows(f, metrics, steps, a.overall, a.digits):
            print(line)


if __name__ == "__main__":
    main()

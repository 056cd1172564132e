"""Evaluation throughput and the streaming protocol's peak memory.

    python benchmarks/bench_eval.py                    # both parts (a few minutes on 2 busy cores)
    python benchmarks/bench_eval.py --part throughput --sizes 64x64,128x256 --metrics psnr,ssim,lpips
    python benchmarks/bench_eval.py --part memory --samples 100 --sequences 50,200 --json

Throughput: `vpcli.engine.evaluate.evaluate` end to end (copy-last on synthetic moving digits
resized to each size, ``--eval-samples`` samples per sequence scored as one batch, no plots or
videos) for one metric at a time; frames/s = sequences x samples x horizon / seconds, data
generation included. LPIPS uses a random AlexNet (``--untrained-metrics``: the speed does not
depend on the weights).

Memory: each run is a fresh process evaluating copy-last with ``--samples`` samples per sequence
on ``--sequences`` counts (default 50 and 200) at 64x64; its peak resident set size
(``ru_maxrss``) must not grow with the number of sequences (the evaluator keeps running sums and
per-sequence best values only). The check passes when the largest peak is within ``--tolerance``
(10%) of the smallest. The children run with ``MALLOC_MMAP_THRESHOLD_=131072`` so that glibc
returns every freed large tensor to the system: with its default *dynamic* threshold, freed
tensors are recycled through the heap and fragment it, and RSS drifts up in steps (measured:
473 MiB after 50 and 516 MiB after 200 sequences, while with the fixed threshold RSS stayed at
385.1 MiB from sequence 1 to 300: nothing is retained per sequence). ``--default-malloc`` measures
with glibc's defaults instead.

``--threads`` sets torch's intra-op threads (default 1). On a machine shared with other jobs, more
threads than idle cores make OpenMP workers spin against each other: on 2 busy cores PSNR/SSIM
ran about 10x slower with 2 threads than with 1.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _evaluate(out: Path, *, size: str, metric: str, samples: int, sequences: int, horizon: int,
              batch_size: int, device: str) -> float:
    from vpcli.engine.evaluate import evaluate
    start = time.perf_counter()
    evaluate(method="copy-last", data="synthetic:moving-digits", size=size, samples=samples, context=2,
             horizon=horizon, num_sequences=sequences, metric=metric, untrained_metrics=True, out=out,
             batch_size=batch_size, device=device, plots=False, videos=False, overwrite=True)
    return time.perf_counter() - start


def throughput(args) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # Warm-up: imports, oneDNN primitives, the digit generator.
        _evaluate(Path(tmp) / "warm", size="64x64", metric="psnr", samples=2, sequences=1, horizon=2,
                  batch_size=1, device=args.device)
        for size in args.sizes.split(","):
            for metric in args.metrics.split(","):
                seconds = _evaluate(Path(tmp) / f"{size}-{metric}", size=size, metric=metric,
                                    samples=args.eval_samples, sequences=args.eval_sequences, horizon=args.horizon,
                                    batch_size=args.batch_size, device=args.device)
                frames = args.eval_sequences * args.eval_samples * args.horizon
                rows.append({"part": "throughput", "size": size, "metric": metric, "frames": frames,
                             "seconds": round(seconds, 3), "frames_per_s": round(frames / seconds, 1)})
                _print_row(args, rows[-1])
    return rows


def _child(args) -> None:
    """One memory run in this (fresh) process: print peak RSS and time as JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        seconds = _evaluate(Path(tmp) / "e", size="64x64", metric=args.memory_metrics, samples=args.samples,
                            sequences=args.child, horizon=args.horizon, batch_size=args.batch_size,
                            device=args.device)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(json.dumps({"sequences": args.child, "peak_rss_mib": round(peak_mib, 1), "seconds": round(seconds, 2)}))


def memory(args) -> list[dict]:
    rows = []
    for n in (int(x) for x in args.sequences.split(",")):
        cmd = [sys.executable, __file__, "--child", str(n), "--samples", str(args.samples), "--horizon",
               str(args.horizon), "--batch-size", str(args.batch_size), "--memory-metrics", args.memory_metrics,
               "--device", args.device, "--threads", str(args.threads)]
        env = dict(os.environ)
        if not args.default_malloc:
            env["MALLOC_MMAP_THRESHOLD_"] = "131072"
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
        if done.returncode != 0:
            raise SystemExit(f"memory run with {n} sequences failed:\n{done.stderr}")
        rec = json.loads(done.stdout.strip().splitlines()[-1])
        frames = n * args.samples * args.horizon
        rows.append({"part": "memory", "size": "64x64", "metric": args.memory_metrics, "samples": args.samples,
                     "sequences": n, "frames": frames, "seconds": rec["seconds"],
                     "frames_per_s": round(frames / rec["seconds"], 1), "peak_rss_mib": rec["peak_rss_mib"]})
        _print_row(args, rows[-1])
    peaks = [r["peak_rss_mib"] for r in rows]
    ratio = max(peaks) / min(peaks)
    verdict = {"part": "memory-check", "peak_ratio": round(ratio, 3), "tolerance": args.tolerance,
               "malloc": "glibc default" if args.default_malloc else "MALLOC_MMAP_THRESHOLD_=131072",
               "ok": ratio <= 1 + args.tolerance}
    rows.append(verdict)
    _print_row(args, verdict)
    return rows


def _print_row(args, row: dict) -> None:
    if not args.json:
        print("  ".join(f"{k}={v}" for k, v in row.items()), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("all", "throughput", "memory"), default="all")
    parser.add_argument("--sizes", default="64x64,128x256")
    parser.add_argument("--metrics", default="psnr,ssim,lpips", help="throughput: metrics timed one at a time")
    parser.add_argument("--eval-samples", type=int, default=20, help="throughput: samples per sequence")
    parser.add_argument("--eval-sequences", type=int, default=4, help="throughput: sequences")
    parser.add_argument("--horizon", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=4, help="sequences per predict call")
    parser.add_argument("--samples", type=int, default=100, help="memory: samples per sequence")
    parser.add_argument("--sequences", default="50,200", help="memory: sequence counts to compare")
    parser.add_argument("--memory-metrics", default="psnr", help="memory: metrics scored")
    parser.add_argument("--tolerance", type=float, default=0.10)
    parser.add_argument("--default-malloc", action="store_true", help="memory: keep glibc's dynamic mmap threshold")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of rows")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    if args.child is not None:
        _child(args)
        return 0
    rows = []
    if args.part in ("all", "throughput"):
        rows += throughput(args)
    if args.part in ("all", "memory"):
        rows += memory(args)
    if args.json:
        print(json.dumps({"machine": platform.machine(), "python": platform.python_version(),
                          "torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows}, indent=2))
    ok = all(r.get("ok", True) for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

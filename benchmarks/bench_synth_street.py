"""Throughput of the synthetic street generator (frames per second, one CPU thread).

    python benchmarks/bench_synth_street.py                # 128x256, 3 sequences of 30 frames
    python benchmarks/bench_synth_street.py --sequences 5 --height 256 --width 512

Reports rendering alone (RGB, labels, depth, forward + backward flow and occlusion for every
frame) and rendering + writing the files (PNG frames and labels, compressed npz). Timings are
the best of ``--repeat`` runs per sequence, so other load on the machine inflates them less.
"""
from __future__ import annotations

import os

# One thread everywhere, so the number means "per core" (set before numpy / OpenCV load).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402

from vpcli.data.synth_street import SynthStreetConfig, render_sequence, sequence_seed, write_sequence  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--height", type=int, default=128)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--length", type=int, default=30, help="frames per sequence")
    ap.add_argument("--sequences", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=2, help="runs per sequence; the best is kept")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="where to write (default: a temp folder, removed)")
    args = ap.parse_args()
    cv2.setNumThreads(1)

    cfg = SynthStreetConfig(height=args.height, width=args.width, length=args.length)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_synth_street_"))
    # [wall, cpu] seconds; CPU time is what this process used, so it is the better "per core"
    # figure on a shared machine, wall time what a user waits.
    render_s, write_s = [0.0, 0.0], [0.0, 0.0]
    try:
        render_sequence(SynthStreetConfig(height=32, width=64, length=2), 0)   # warm-up (imports)
        for i in range(args.sequences):
            seed = sequence_seed(args.seed, i)
            best_r, best_w = [float("inf")] * 2, [float("inf")] * 2
            for _ in range(args.repeat):
                t0, c0 = time.perf_counter(), time.process_time()
                seq = render_sequence(cfg, seed)
                t1, c1 = time.perf_counter(), time.process_time()
                write_sequence(out / f"seq_{i:05d}", seq, overwrite=True)
                t2, c2 = time.perf_counter(), time.process_time()
                best_r = [min(best_r[0], t1 - t0), min(best_r[1], c1 - c0)]
                best_w = [min(best_w[0], t2 - t1), min(best_w[1], c2 - c1)]
            for j in range(2):
                render_s[j] += best_r[j]
                write_s[j] += best_w[j]
            print(f"sequence {i}: render {best_r[0] * 1e3 / args.length:6.1f} ms/frame "
                  f"(cpu {best_r[1] * 1e3 / args.length:5.1f}), write {best_w[0] * 1e3 / args.length:6.1f} ms/frame "
                  f"(cpu {best_w[1] * 1e3 / args.length:5.1f})")
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / args.sequences
    finally:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)
    frames = args.sequences * args.length
    both = [r + w for r, w in zip(render_s, write_s)]
    print(f"\nsynth-street {args.height}x{args.width}, {args.sequences} x {args.length} frames, 1 thread "
          f"({size / 2**20:.1f} MiB written per sequence)")
    print(f"  rendering only:      {frames / render_s[0]:6.1f} frames/s wall, {frames / render_s[1]:6.1f} frames/s cpu")
    print(f"  rendering + writing: {frames / both[0]:6.1f} frames/s wall, {frames / both[1]:6.1f} frames/s cpu")


if __name__ == "__main__":
    main()

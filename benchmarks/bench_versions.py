"""Two checkouts of vpcli, the same `predict` and `eval` jobs, interleaved: is one slower?

    git worktree add /tmp/vpcli-base <commit>        # the version to compare against
    python benchmarks/bench_versions.py --base /tmp/vpcli-base [--repeats 5] [--threads 1]

Each repetition runs every job once under each checkout (alternating which goes first), in a
fresh process with ``PYTHONPATH`` set to that checkout, and reads the time the job reports
itself (predict: model time per predicted frame from its ``--json`` record; eval: the evaluation's
``seconds`` in results.json), so interpreter start-up and imports are left out. Reported: the
median of each, and the ratio current / base (below 1: the current checkout is faster).

Jobs (bundled weights, generated data, nothing to download):

* ``predict``: ``slamp-movingdigits``, one 64x64 clip, 4 samples x 100 frames;
* ``eval``: ``slamp-movingdigits`` under the papers' protocol, 20 held-out sequences x 10 samples,
  5 -> 10 frames, PSNR + SSIM.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def run(tree: Path, args: list[str], threads: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    return subprocess.run([sys.executable, "-m", "vpcli", *args], env=env, capture_output=True, text=True,
                          check=True, cwd=tree)


def job_predict(tree: Path, tmp: Path, clip: Path, threads: int) -> float:
    out = tmp / "p"
    r = run(tree, ["predict", str(clip), "--weights", "slamp-movingdigits", "--horizon", "100", "--samples", "4",
                   "--out", str(out), "--overwrite", "--json"], threads)
    rec = json.loads(r.stdout.strip().splitlines()[-1])
    return 1.0 / rec["predicted_frames_per_s"]  # seconds per predicted frame (model only)


def job_eval(tree: Path, tmp: Path, clip: Path, threads: int) -> float:
    out = tmp / "e"
    run(tree, ["eval", "--weights", "slamp-movingdigits", "--data", "synthetic:moving-digits", "--samples", "10",
               "--num-sequences", "20", "--horizon", "10", "--metric", "psnr,ssim", "--out", str(out), "--overwrite",
               "--json"], threads)
    return json.loads((out / "results.json").read_text())["seconds"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=Path, help="a checkout of the version to compare against")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if args.base is None or not (args.base / "vpcli").is_dir():
        print("skipped: pass --base PATH, a checkout of vpcli to compare against (git worktree add PATH COMMIT)")
        return
    trees = {"base": args.base.resolve(), "current": HERE}
    jobs = {"predict (s per frame)": job_predict, "eval (s)": job_eval}
    times: dict[str, dict[str, list[float]]] = {j: {t: [] for t in trees} for j in jobs}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run(HERE, ["data", "moving-digits", "--out", str(tmp / "clips"), "--num", "1", "--length", "10",
                   "--format", "mp4", "--split", "test"], args.threads)
        clip = next((tmp / "clips").rglob("*.mp4"))
        for rep in range(args.repeats):
            order = list(trees) if rep % 2 == 0 else list(reversed(trees))
            for name, fn in jobs.items():
                for tag in order:
                    times[name][tag].append(fn(trees[tag], tmp / tag, clip, args.threads))
    print(f"{'job':24s} {'base':>10s} {'current':>10s} {'current/base':>13s}   (median of {args.repeats}, "
          f"{args.threads} thread(s))")
    for name, by in times.items():
        b, c = statistics.median(by["base"]), statistics.median(by["current"])
        print(f"{name:24s} {b:10.4f} {c:10.4f} {c / b:13.3f}")


if __name__ == "__main__":
    main()

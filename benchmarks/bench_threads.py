"""vpcli's default thread count against 1 and 2 threads, alone and as two parallel shards.

    python benchmarks/bench_threads.py [--repeats 3] [--horizon 100]

Job: `vpcli predict` of 4 generated moving-digits clips with the bundled `slamp-movingdigits`,
4 samples x ``--horizon`` frames each. Cases, each timed as the wall time of the whole job:

* alone: one process over the 4 clips, with the default count, `--threads 1`, `--threads 2`;
* two shards: `--shard 1/2` and `--shard 2/2` started together (the default then gives each
  cores / 2 threads), with the default, `--threads 1` and `--threads 2` for both;
* beside a busy process: one process, while an unrelated Python loop keeps one core busy (the
  default then leaves that core alone).

"Alone" means alone with whatever else runs on the machine: run it on an idle one.

Repetitions are interleaved (every setting once per round) and the median is reported, with each
setting's time as a ratio to the best setting of its case. The target (issue 14): the default is
never more than 10% slower than the best.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = {"default": [], "1 thread": ["--threads", "1"], "2 threads": ["--threads", "2"]}


def env() -> dict[str, str]:
    # the user's environment without thread settings, so that the default is vpcli's own
    return {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "VPCLI_THREADS")}


def predict_cmd(clips: Path, out: Path, horizon: int, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "vpcli", "predict", str(clips), "--weights", "slamp-movingdigits",
            "--horizon", str(horizon), "--samples", "4", "--out", str(out), "--overwrite", *extra]


def timed(cmds: list[list[str]], busy: bool = False) -> float:
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    if spin is not None:
        time.sleep(0.5)  # running before vpcli starts, as a neighbour's job would be
    try:
        return _timed(cmds)
    finally:
        if spin is not None:
            spin.kill()
            spin.wait()


def _timed(cmds: list[list[str]]) -> float:
    t = time.perf_counter()
    procs = [subprocess.Popen(c, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT) for c in cmds]
    for p in procs:
        _, err = p.communicate()
        if p.returncode:
            raise SystemExit(f"failed: {err.decode()[-500:]}")
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--horizon", type=int, default=100)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from vpcli.threads import available_cores
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run([sys.executable, "-m", "vpcli", "data", "moving-digits", "--out", str(tmp / "clips"), "--num",
                        "4", "--length", "10", "--format", "mp4", "--split", "test"], check=True, env=env(),
                       capture_output=True)
        clips = next(p.parent for p in (tmp / "clips").rglob("*.mp4"))
        cases = {
            "alone": lambda extra: [predict_cmd(clips, tmp / "a", args.horizon, extra)],
            "two shards": lambda extra: [predict_cmd(clips, tmp / "s", args.horizon, ["--shard", f"{k}/2", *extra])
                                         for k in (1, 2)],
            "busy": lambda extra: [predict_cmd(clips, tmp / "b", args.horizon, extra)],
        }
        times = {c: {s: [] for s in SETTINGS} for c in cases}
        for rep in range(args.repeats):
            for case, make in cases.items():
                order = list(SETTINGS) if rep % 2 == 0 else list(reversed(SETTINGS))
                for setting in order:
                    times[case][setting].append(timed(make(SETTINGS[setting]), busy=case == "busy"))
    import torch
    print(f"{available_cores()} cores available, torch {torch.__version__}, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}; median of {args.repeats} interleaved rounds")
    ok = True
    for case, by in times.items():
        med = {s: statistics.median(v) for s, v in by.items()}
        best = min(med.values())
        row = "  ".join(f"{s} {t:.2f} s ({t / best:.2f}x)" for s, t in med.items())
        within = med["default"] <= 1.10 * best
        ok &= within
        print(f"{case:11s} {row}   default within 10% of the best: {'yes' if within else 'NO'}")
    print("target met" if ok else "target missed")


if __name__ == "__main__":
    main()

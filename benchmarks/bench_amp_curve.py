"""bf16 autocast against fp32 over a training run: is the loss curve the same (issue 20, item 1)?

Trains the CPU preset (``slamp-mmnist-cpu`` by default) twice from the same seed, ``train.amp=none``
(fp32) and ``train.amp=bf16``, both at once (one thread each: run it on a 2-core machine with nothing else),
logging every step's loss, and compares:

* the training loss averaged over windows of ``--window`` steps (single steps are noisy: the two
  runs draw the same batches, but rounding sends them apart), relative difference per window;
* the validation loss at every ``val_every`` step;
* seconds per step of each (the two share the machine alike).

Target: every window from step ``--window`` on, and every validation loss, within 2% of fp32's.

Run:  python benchmarks/bench_amp_curve.py [--steps 500] [--preset slamp-mmnist-cpu] [--out DIR] [--json out.json]
Needs a CPU where bf16 is native (``torch.backends.cpu.get_cpu_capability()`` AVX512 with AMX or
avx512_bf16); elsewhere bf16 autocast is slow and ``train.amp=auto`` picks fp32 anyway.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import bf16_flags  # noqa: E402  (benchmarks/, beside this script)


def read_log(run: Path) -> tuple[dict[int, float], dict[int, float], float]:
    """A run's metrics.jsonl -> (training loss by step, validation loss by step, median s/step)."""
    train, val, rates = {}, {}, []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r.get("event") == "train":
            train[r["step"]] = r["loss"]
            rates.append(r["steps_per_s"])
        elif r.get("event") == "val":
            val[r["step"]] = r["val/loss"]
    return train, val, 1 / sorted(rates)[len(rates) // 2]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="slamp-mmnist-cpu")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--window", type=int, default=50)
    ap.add_argument("--val-every", type=int, default=250)
    ap.add_argument("--out", default=None, help="folder for the two runs (default: a temporary one)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    root = Path(args.out or tempfile.mkdtemp(prefix="vpcli-amp-curve-"))
    root.mkdir(parents=True, exist_ok=True)
    procs, t0 = {}, time.perf_counter()
    for amp, setting in (("fp32", "none"), ("bf16", "bf16")):
        cmd = [sys.executable, "-m", "vpcli", "train", "--config", args.preset, "--threads", "1",
               "--out", str(root / amp), "--set", f"train.steps={args.steps}", "--set", f"train.amp={setting}",
               "--set", "train.log_every=1", "--set", f"train.val_every={args.val_every}", "--seed", "0"]
        procs[amp] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(root / f"{amp}.log", "w"))
    for amp, p in procs.items():
        if p.wait() != 0:
            sys.exit(f"the {amp} run failed: see {root / f'{amp}.log'}")
    wall = time.perf_counter() - t0
    (t32, v32, s32), (t16, v16, s16) = read_log(root / "fp32"), read_log(root / "bf16")
    w = args.window
    windows = []
    for start in range(1, args.steps + 1, w):
        steps = [s for s in range(start, start + w) if s in t32 and s in t16]
        a = sum(t32[s] for s in steps) / len(steps)
        b = sum(t16[s] for s in steps) / len(steps)
        windows.append({"steps": [start, start + w - 1], "fp32": a, "bf16": b, "rel_diff": (b - a) / a})
    vals = [{"step": s, "fp32": v32[s], "bf16": v16[s], "rel_diff": (v16[s] - v32[s]) / v32[s]} for s in sorted(v32)
            if s in v16]
    later = windows[1:]
    res = {"preset": args.preset, "steps": args.steps, "window": w, "cpu_capability":
           torch.backends.cpu.get_cpu_capability(), "bf16_flags": bf16_flags(), "runs": str(root),
           "wall_s": wall, "windows": windows, "val": vals,
           "max_abs_rel_diff_windows_after_first": max(abs(x["rel_diff"]) for x in later) if later else None,
           "max_abs_rel_diff_val": max((abs(x["rel_diff"]) for x in vals), default=None),
           "target": "every window after the first and every validation loss within 2% of fp32's"}
    res["fp32_s_per_step_median"], res["bf16_s_per_step_median"] = s32, s16
    for x in windows:
        print(f"steps {x['steps'][0]:4d}-{x['steps'][1]:4d}: fp32 {x['fp32']:.4f}  bf16 {x['bf16']:.4f}  "
              f"{100 * x['rel_diff']:+.2f}%")
    for x in vals:
        print(f"val step {x['step']}: fp32 {x['fp32']:.4f}  bf16 {x['bf16']:.4f}  {100 * x['rel_diff']:+.2f}%")
    print(f"max |diff| windows after the first {100 * res['max_abs_rel_diff_windows_after_first']:.2f}%, "
          f"validation {100 * (res['max_abs_rel_diff_val'] or 0):.2f}%; s/step fp32 {res['fp32_s_per_step_median']:.2f}, "
          f"bf16 {res['bf16_s_per_step_median']:.2f} ({res['cpu_capability']}); runs in {root}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

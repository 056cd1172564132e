"""HVP inference cost: structure-generation and full-pipeline speed, fp32 against bf16, and peak
memory of `vpcli predict` over the horizon.

1. Predicted frames/s, B = 1, S = 1, at 64x128 and 128x256, float32 and
   ``torch.autocast("cpu", dtype=torch.bfloat16)``, for a randomly initialised model of the
   hvp-street-cpu preset (5 context frames of random RGB in [0, 1] and random labels in 0..18):
   * structure alone: ``HVP.predict_labels`` (posterior over the context, then per step prior +
     predictor + decoder + argmax + one-hot re-encode), no image generator;
   * full pipeline: ``HVP.predict(context, horizon, 1, generator)``, each yielded StepRecord taken.
   Each step is timed as it is yielded; ``frames_per_s`` is 1 / the median step time (the steady
   state), ``context_plus_first_step_s`` the time to the first step (encoding the context and the
   posterior over it come first). The bf16 / fp32 speed ratio is measured in the same run and
   reported with ``torch.backends.cpu.get_cpu_capability()`` and the CPU's bf16 flags
   (avx512_bf16, amx_*; from /proc/cpuinfo): bf16 is only fast on CPUs with AVX-512 bf16 or AMX;
   elsewhere it is emulated and can be slower than fp32.
2. Peak RSS of the real CLI path, ``vpcli predict CLIP --weights WEIGHTS --horizon N --out TMP
   --threads T``, at horizon 100 and 2,000 (--quick: 20 and 200), each run as the child of its own
   fresh wrapper process that reads ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` afterwards, so each
   maximum is that run's own. Claim checked: the two peaks are equal within 10%. Needs --weights
   (a trained HVP run folder or checkpoint; none is made here, the part is skipped without one);
   the clip is --clip, else a synth-street sequence made for the run (``vpcli data synth-street
   --num 1 --length 8 --size 64x128 --seed 7``). A synth-street sequence folder carries its labels,
   so it gets ``--labels-from companion``; for other clips the weights' config decides.

Run:  python benchmarks/bench_hvp.py [--quick] [--threads 1] [--weights RUN] [--clip CLIP] [--json out.json]
"""
from __future__ import annotations

from _report import machine_info, run_named  # noqa: E402  (benchmarks/, beside this script)
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vpcli import registry
from vpcli.engine.run import resolve_config

PRESET = "hvp-street-cpu"


def build(preset: str = PRESET, overrides=()):
    """A randomly initialised (seed 0) model of ``preset`` in eval mode, and its config."""
    cfg = resolve_config(None, preset, list(overrides))
    torch.manual_seed(0)
    return registry.get("predictor", cfg.method).builder(cfg.model_config()).eval(), cfg


def context(cfg, size: tuple[int, int], flow: bool = False) -> dict:
    """Seeded random context: RGB in [0, 1], labels 0..18 and, with ``flow``, flow of ~2 px."""
    g = torch.Generator().manual_seed(0)
    c = cfg.data.context
    out = {"rgb": torch.rand(1, c, 3, *size, generator=g), "labels": torch.randint(0, 19, (1, c, *size), generator=g)}
    if flow:
        out["flow"] = torch.randn(1, c - 1, 2, *size, generator=g) * 2
    return out


# ----------------------------------------------------------------------------------- 1. speed

@torch.no_grad()
def step_times(steps) -> tuple[float, list[float]]:
    """Consume a step generator; (seconds to the first step, seconds of each later step)."""
    t0 = last = time.perf_counter()
    first, later = None, []
    for _ in steps:
        now = time.perf_counter()
        if first is None:
            first = now - t0
        else:
            later.append(now - last)
        last = now
    return first, later


def bench_speed(size: tuple[int, int], horizon: int, repeats: int) -> dict:
    model, cfg = build()
    ctx = context(cfg, size)
    paths = {"structure": lambda h, g: model.predict_labels(ctx["labels"], h, 1, g),
             "full": lambda h, g: (r.frames for r in model.predict(ctx, h, 1, g))}
    out = {"preset": PRESET, "size": list(size), "context": cfg.data.context, "horizon": horizon,
           "batch": 1, "samples": 1}
    for name, make in paths.items():
        for prec in ("fp32", "bf16"):
            amp = torch.autocast("cpu", dtype=torch.bfloat16) if prec == "bf16" else nullcontext()
            with torch.inference_mode(), amp:
                step_times(make(2, torch.Generator().manual_seed(0)))   # warm-up (allocator, kernels)
                firsts, later = [], []
                for r in range(repeats):
                    f, steps = step_times(make(horizon, torch.Generator().manual_seed(r)))
                    firsts.append(f)
                    later += steps
            step = statistics.median(later)
            out[f"{name}_{prec}"] = {"frames_per_s": 1 / step, "seconds_per_step": step,
                                     "context_plus_first_step_s": statistics.median(firsts)}
        out[f"{name}_bf16_over_fp32_speed"] = (out[f"{name}_bf16"]["frames_per_s"]
                                               / out[f"{name}_fp32"]["frames_per_s"])
    out["structure_share_of_full_fp32"] = (out["structure_fp32"]["seconds_per_step"]
                                           / out["full_fp32"]["seconds_per_step"])
    out["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return out


# ----------------------------------------------------------------------------------- 2. memory

# Run the command given as JSON in argv[1] as a child; print its exit status and peak RSS (KiB on
# Linux). A fresh wrapper per run, so RUSAGE_CHILDREN holds only that run's maximum.
WRAPPER = ("import json, resource, subprocess, sys\n"
           "p = subprocess.run(json.loads(sys.argv[1]), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)\n"
           "print(json.dumps({'rc': p.returncode, 'maxrss_kib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,"
           " 'stderr_tail': p.stderr[-2000:]}))\n")


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "vpcli", *args]


def is_synth_street(clip: Path) -> bool:
    return clip.is_dir() and (clip / "labels").is_dir() and (clip / "meta.json").is_file()


def run_rss(cmd: list[str], threads: int, env: dict[str, str] | None = None) -> dict:
    """Run ``cmd`` as the child of its own wrapper -> exit code, peak RSS (KiB), seconds, stderr's tail."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), **(env or {})}
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", WRAPPER, json.dumps(cmd)], capture_output=True, text=True,
                          check=True, env=env, cwd=ROOT)
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "seconds": time.perf_counter() - t}


def peak_rss(clip: Path, weights: str, horizon: int, out: Path, threads: int, extra: list[str]) -> dict:
    cmd = cli("predict", str(clip), "--weights", weights, "--horizon", str(horizon), "--out", str(out),
              "--threads", str(threads), *extra)
    res = run_rss(cmd, threads)
    if res["rc"] != 0:
        raise RuntimeError(f"vpcli predict exited {res['rc']}: {' '.join(cmd)}\n{res['stderr_tail']}")
    return {"horizon": horizon, "peak_rss_mb": res["maxrss_kib"] / 1024, "seconds": res["seconds"]}


def bench_memory(clip: str | None, weights: str | None, horizons: tuple[int, int], threads: int, *,
                 method: str = "HVP", street_extra: tuple[str, ...] = ("--labels-from", "companion")) -> dict:
    """Peak RSS of `vpcli predict` at two horizons; a synth-street clip gets ``street_extra`` (its
    companions: labels, and flow for methods that read it)."""
    if not weights:
        msg = f"skipped: no --weights given (a trained {method} run folder or checkpoint; none is made here)"
        print(f"memory: {msg}", file=sys.stderr, flush=True)
        return {"skipped": msg}
    with tempfile.TemporaryDirectory(prefix=f"bench_{method.lower()}_") as d:
        tmp = Path(d)
        if clip is None:
            subprocess.run(cli("data", "synth-street", "--out", str(tmp / "clip"), "--num", "1", "--length", "8",
                               "--size", "64x128", "--seed", "7", "--threads", str(threads)),
                           check=True, capture_output=True, cwd=ROOT)
            clip_path = tmp / "clip" / "seq_00000"
        else:
            clip_path = Path(clip).resolve()
        extra = list(street_extra) if is_synth_street(clip_path) else []
        runs = [peak_rss(clip_path, weights, h, tmp / f"pred{h}", threads, extra) for h in horizons]
    base, big = runs[0]["peak_rss_mb"], runs[1]["peak_rss_mb"]
    return {"clip": "synth-street seq_00000 (64x128, 8 frames, seed 7)" if clip is None else clip,
            "weights": weights, "inputs": " ".join(extra) if extra else "weights' config", "runs": runs,
            "ratio": big / base, "within_10pct": abs(big / base - 1) <= 0.10}


def inference_bench_args(argv, doc: str, method: str, threads: int, long_horizon: int):
    """The options an inference benchmark shares (bench_hvp, bench_sadm); sets torch's threads and
    prints the machine. -> (args, steps per timed rollout, repeats, memory horizons, results dict)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps and repeats; horizons 20 / 200 for memory")
    ap.add_argument("--threads", type=int, default=threads)
    ap.add_argument("--weights", default=None, help=f"trained {method} weights for the memory part (skipped without)")
    ap.add_argument("--clip", default=None, help="clip for the memory part (default: a synth-street sequence)")
    ap.add_argument("--json", default=None, help="write the results here as well")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    horizon, repeats = (5, 1) if args.quick else (20, 3)
    horizons = (20, 200) if args.quick else (100, long_horizon)
    res = {"machine": machine_info()}
    print(json.dumps(res["machine"]), flush=True)
    return args, horizon, repeats, horizons, res


def main(argv=None) -> int:
    args, horizon, repeats, horizons, res = inference_bench_args(argv, __doc__, "HVP", 1, 2000)
    run_named((
        ("speed_64x128", lambda: bench_speed((64, 128), horizon, repeats)),
        ("speed_128x256", lambda: bench_speed((128, 256), horizon, repeats)),
        ("memory_predict", lambda: bench_memory(args.clip, args.weights, horizons, args.threads)),
    ), args.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())

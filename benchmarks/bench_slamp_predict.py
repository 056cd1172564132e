"""SLAMP prediction: what each inference lever of issue 20 buys, one lever at a time, interleaved.

1. ``blocks``: ``predict`` with at most ``rows_per_pass`` rows (clips x samples) per forward pass,
   at the paper's Moving MNIST model (``slamp-mmnist``, random weights, 64x64), 4 clips x 50
   samples, 5 context -> 6 frames: the rows curve behind ``ROW_PIXELS``.
2. ``fold``: the bundled weights with their eval-mode BatchNorms folded into the convolutions
   (``inference_fold_batchnorm``, what ``vpcli predict`` loads) against unfolded, fp32 and (where
   native) bf16 autocast, and the largest frame difference: ``slamp-movingdigits`` at 64x64
   (8 clips x 4 samples) and ``slamp-real`` at 480x640 (1 clip x 4 samples), 4 steps.
3. ``allocator``: the same folded predict under glibc's malloc (``VPCLI_MALLOC=glibc``) against
   vpcli's heap mode (``vpcli.allocator``), with predict's default sample blocks and with all
   samples in one pass (``rows_per_pass`` = clips x samples); one process per mode and round,
   the modes alternating (2 timed calls each after a warm-up).

Run:  python benchmarks/bench_slamp_predict.py [--threads 1] [--reps 3] [--quick] [--json out.json]
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from _report import interleaved, medians, run_named  # noqa: E402  (benchmarks/, beside this script)

from vpcli import allocator


def _predict(model, ctx, horizon, samples, bf16=False, rows=None):
    def run():
        model.rows_per_pass = rows
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = [r.frames.float() for r in model.predict(ctx, horizon, samples=samples,
                                                           generator=torch.Generator().manual_seed(0))]
        model.rows_per_pass = None
        return torch.stack(out)
    return run


def _loaded(name: str, fold: bool):
    from vpcli.engine.loading import load_predictor
    from vpcli.predictors.slamp import _SLAMPFamily
    before = _SLAMPFamily.inference_fold_batchnorm
    _SLAMPFamily.inference_fold_batchnorm = fold
    try:
        return load_predictor("slamp", name)[0]
    finally:
        _SLAMPFamily.inference_fold_batchnorm = before


def bench_blocks(reps: int, quick: bool) -> dict:
    from vpcli import registry
    from vpcli.engine.loading import for_inference
    from vpcli.engine.run import resolve_config
    cfg = resolve_config(None, "slamp-mmnist")
    torch.manual_seed(0)
    model = for_inference(registry.get("predictor", "slamp").builder(cfg.model_config()))
    b, s, horizon = (4, 8, 3) if quick else (4, 50, 6)
    ctx = {"rgb": torch.rand(b, 5, 1, 64, 64, generator=torch.Generator().manual_seed(1))}
    rows = [8, 16, 32] if quick else [8, 16, 32, 64, 200]
    t = medians(interleaved({f"rows_{r}": _predict(model, ctx, horizon, s, rows=r) for r in rows}, reps,
                            warmup=True))
    frames = b * s * horizon
    return {"clips": b, "samples": s, "horizon": horizon, "seconds": t,
            "frames_per_s": {k: frames / v for k, v in t.items()}}


def bench_fold(reps: int, quick: bool, bf16: bool) -> dict:
    out = {}
    cases = [("slamp-movingdigits", (64, 64), 8)] + ([] if quick else [("slamp-real", (480, 640), 1)])
    for name, size, b in cases:
        models = {f: _loaded(name, f) for f in (False, True)}
        ctx = {"rgb": torch.rand(b, 4, models[True].config.channels, *size, generator=torch.Generator().manual_seed(2))}
        for prec in (["fp32", "bf16"] if bf16 else ["fp32"]):
            runs = {f"folded_{f}": _predict(models[f], ctx, 4, 4, bf16=prec == "bf16") for f in (False, True)}
            diff = float((runs["folded_True"]() - runs["folded_False"]()).abs().max())
            t = medians(interleaved(runs, reps, warmup=True))
            out[f"{name} {size[0]}x{size[1]} {prec}"] = {
                "unfolded_s": t["folded_False"], "folded_s": t["folded_True"],
                "ratio_folded_over_unfolded": t["folded_True"] / t["folded_False"], "frames_max_abs_diff": diff}
    return out


def _allocator_child(mode: str, quick: bool, reps: int) -> dict:
    """One process, one malloc mode from its start: predict timed ``reps`` times after a warm-up."""
    name, size, b, s = ("slamp-movingdigits", (64, 64), 8, 4) if quick else ("slamp-real", (480, 640), 1, 4)
    model = _loaded(name, True)
    ctx = {"rgb": torch.rand(b, 4, model.config.channels, *size, generator=torch.Generator().manual_seed(3))}
    out = {}
    for rows, label in ((None, "blocks"), (b * s, "one_pass")):
        fn = _predict(model, ctx, 4, s, rows=rows)
        fn()
        out[label] = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            out[label].append(time.perf_counter() - t)
    return out


def bench_allocator(reps: int, quick: bool, threads: int) -> dict:
    """Each malloc mode in its own processes (in one process the modes do not separate: glibc reuses
    the heap's freed blocks whatever its mmap setting), the modes alternating, ``reps`` rounds."""
    import json
    import subprocess
    times: dict = {m: {"blocks": [], "one_pass": []} for m in allocator.MODES}
    for r in range(reps):
        for mode in (allocator.MODES if r % 2 == 0 else allocator.MODES[::-1]):
            cmd = [sys.executable, __file__, "--child-malloc", mode, "--threads", str(threads),
                   *(["--quick"] if quick else [])]
            got = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            for k, v in got.items():
                times[mode][k].extend(v)
    med = {m: {k: sorted(v)[len(v) // 2] for k, v in d.items()} for m, d in times.items()}
    return {"model": "slamp-movingdigits 64x64, 8 clips" if quick else "slamp-real 480x640, 1 clip",
            "samples": 4, "horizon": 4, "seconds": med, "all": times,
            "ratio_heap_over_glibc": {k: med["heap"][k] / med["glibc"][k] for k in ("blocks", "one_pass")}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", choices=("blocks", "fold", "allocator"), help="run one case")
    ap.add_argument("--quick", action="store_true", help="small cases only (about a minute)")
    ap.add_argument("--json")
    ap.add_argument("--child-malloc", choices=allocator.MODES, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    allocator.configure(args.child_malloc or "heap")   # "blocks" and "fold" run as vpcli's CLI does
    if args.child_malloc:
        import json
        print(json.dumps(_allocator_child(args.child_malloc, args.quick, 2)))
        return 0
    cap = torch.backends.cpu.get_cpu_capability()
    res = {"cpu_capability": cap, "threads": args.threads, "torch": torch.__version__}
    if allocator.mmapped_bytes() is None:
        print("bench_slamp_predict: not glibc: the allocator case is skipped")
    cases = (
        ("blocks", lambda: bench_blocks(args.reps, args.quick)),
        ("fold", lambda: bench_fold(args.reps, args.quick, cap.startswith("AVX512"))),
        *((("allocator", lambda: bench_allocator(args.reps, args.quick, args.threads)),)
          if allocator.mmapped_bytes() is not None
          else ()),
    )
    run_named([c for c in cases if args.only in (None, c[0])], args.json, res)
    return 0


if __name__ == "__main__":
    t0 = time.perf_counter()
    code = main()
    print(f"bench_slamp_predict: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    sys.exit(code)

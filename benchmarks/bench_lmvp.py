"""LMVP training and inference cost, and the dynamic filter layer against a per-pixel loop.

1. Training iterations/s of the full loop: stage "main" (d -> m -> g, Algorithm 1) and stage
   "pretrain" (d -> joint), batch 16, for the CPU presets (lmvp-mmnist-cpu: 10 -> 10 digits at
   64x64; lmvp-street-cpu: 3 -> 3 RGB at 64x64), each step as the trainer runs it (zero_grad,
   loss, backward, Adam step), on real clips generated beforehand (data cost not included; the
   digit generator's cost per batch is reported apart). Run with --threads 1 and --threads 2.
2. Predict throughput (predicted frames/s, B = 1, S = 1) at 64x64 for the CPU presets and the
   paper-like lmvp-mmnist.
3. The dynamic filter layer (vpcli.nn.dynamic_filter: one unfold and a product-sum over the taps)
   against a naive implementation that loops over the pixels (each output pixel its own k x k dot
   product, vectorised over batch and channels only), forward, B = 16, 64x64, k = 9, C = 1 and 3;
   and the batched layer's forward + backward.

Run:  python benchmarks/bench_lmvp.py [--quick] [--threads 1] [--json out.json]
"""
from __future__ import annotations

from _report import run_named  # noqa: E402  (benchmarks/, beside this script)
import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

import torch
from torch.nn import functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from vpcli import registry
from vpcli.engine.run import resolve_config
from vpcli.nn.dynamic_filter import dynamic_filter
from vpcli.trainable import IterationCache, TrainState


def build(preset: str):
    cfg = resolve_config(None, preset)
    torch.manual_seed(0)
    return registry.get("predictor", cfg.method).builder(cfg.model_config()), cfg


def timed(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def clips(cfg, batch: int) -> tuple[torch.Tensor, float]:
    """``batch`` clips of the preset's data (and the seconds it took to make them)."""
    from vpcli.data.clips import make_dataset
    d = cfg.data
    ds = make_dataset(d.source, split="train", context=d.context, future=d.future, size=tuple(d.size),
                      channels=d.channels, num_clips=batch, seed=0)
    t = time.perf_counter()
    x = torch.stack([ds[i]["rgb"] for i in range(batch)])
    return x, time.perf_counter() - t


def bench_train(preset: str, batch: int, repeats: int) -> dict:
    model, cfg = build(preset)
    model.train()
    x, data_s = clips(cfg, batch)
    out = {"preset": preset, "batch": batch, "frames": cfg.data.length, "size": list(cfg.data.size),
           "data_seconds_per_batch": data_s}
    for stage in model.training_plan():
        opts = {s.name: torch.optim.Adam(s.params(), lr=1e-4) for s in stage.steps}
        per_step = {s.name: [] for s in stage.steps}

        def iteration(stage=stage, opts=opts, per_step=per_step):
            state = TrainState(stage=stage.name, cache=IterationCache(model.cache_keys))
            for s in stage.steps:
                t = time.perf_counter()
                opts[s.name].zero_grad(set_to_none=True)
                s.loss({"rgb": x}, state)["loss"].backward()
                opts[s.name].step()
                per_step[s.name].append(time.perf_counter() - t)
        t = timed(iteration, repeats)
        out[stage.name] = {"seconds_per_iteration": t, "iterations_per_s": 1 / t,
                           "seconds_per_step": {k: statistics.median(v[1:] or v) for k, v in per_step.items()}}
    return out


def bench_predict(preset: str, horizon: int, repeats: int) -> dict:
    model, cfg = build(preset)
    model.eval()
    ctx = {"rgb": torch.rand(1, cfg.data.context, cfg.data.channels, *cfg.data.size)}
    t = timed(lambda: [r.frames for r in model.predict(ctx, horizon, 1)], repeats)
    params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("disc_head."))
    return {"preset": preset, "size": list(cfg.data.size), "context": cfg.data.context, "horizon": horizon,
            "seconds": t, "frames_per_s": horizon / t, "inference_params_M": params / 1e6,
            "fp16_MB": params * 2 / 2**20}


def naive_filter(x: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """Per-pixel loop: out[:, :, i, j] = <filter of (i, j), k x k neighbourhood of (i, j)>."""
    b, c, h, w = x.shape
    k = math.isqrt(filters.shape[1])
    r = k // 2
    xp = F.pad(x, (r, r, r, r), mode="replicate")
    out = torch.empty_like(x)
    for i in range(h):
        for j in range(w):
            patch = xp[:, :, i:i + k, j:j + k].reshape(b, c, k * k)        # (B, C, k*k)
            out[:, :, i, j] = (patch * filters[:, None, :, i, j]).sum(-1)
    return out


def bench_filter(channels: int, repeats: int, batch: int = 16, size: int = 64, k: int = 9) -> dict:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, channels, size, size, generator=g)
    filters = torch.rand(batch, k * k, size, size, generator=g).softmax(1)
    with torch.no_grad():
        batched = timed(lambda: dynamic_filter(x, filters), repeats)
        naive = timed(lambda: naive_filter(x, filters), 1, warmup=0)
        diff = float((dynamic_filter(x, filters) - naive_filter(x, filters)).abs().max())
    xg, fg = x.clone().requires_grad_(), filters.clone().requires_grad_()
    both = timed(lambda: dynamic_filter(xg, fg).sum().backward(), repeats)
    return {"batch": batch, "channels": channels, "size": size, "kernel_size": k,
            "batched_forward_ms": batched * 1e3, "naive_per_pixel_forward_ms": naive * 1e3,
            "speedup": naive / batched, "max_abs_diff": diff, "batched_forward_backward_ms": both * 1e3}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="write the results here as well")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = 2 if args.quick else 4
    res = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                       "threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                       "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}}
    print(json.dumps(res["machine"]), flush=True)
    run_named((
        ("train_mmnist_cpu_b16", lambda: bench_train("lmvp-mmnist-cpu", 16, repeats)),
        ("train_street_cpu_b16", lambda: bench_train("lmvp-street-cpu", 16, repeats)),
        ("predict_mmnist_cpu", lambda: bench_predict("lmvp-mmnist-cpu", 20, repeats)),
        ("predict_street_cpu", lambda: bench_predict("lmvp-street-cpu", 20, repeats)),
        ("predict_mmnist_paper_like", lambda: bench_predict("lmvp-mmnist", 20, repeats)),
        ("filter_grey", lambda: bench_filter(1, repeats)),
        ("filter_rgb", lambda: bench_filter(3, repeats)),
    ), args.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())

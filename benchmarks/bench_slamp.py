"""SLAMP inference and training cost, with random weights at the paper's sizes.

1. Sampling: N samples of one clip as one batched ``predict(..., samples=N)`` vs N sequential
   ``predict(..., samples=1)`` calls (the reference code's loop). Ratio of wall times; target
   <= 0.5. Paper-size Moving MNIST model (slamp-mmnist preset), 64x64, 5 context frames.
2. Predict throughput (generated frames/s, B = 1) for slamp-mmnist at 64x64 and slamp-cityscapes
   at 128x256, with S = 1 and S = N samples. 1 and 2 run the model as predict does
   (``vpcli.engine.loading.for_inference``: channels-last weights on the CPU).
3. Training steps/s of the slamp-mmnist preset at batch 32 (5 + 10 frames), one timed step after
   a warm-up, with its FLOP count (torch.utils.flop_counter) to show the achieved rate.
4. Inference variants: ``torch.autocast(<device>, dtype=torch.bfloat16)`` and channels_last
   memory format -- speed-up over float32 and the max abs difference of the frames (same noise).

Run:  python benchmarks/bench_slamp.py [--quick] [--threads 1] [--device cpu] [--json out.json]
"""
from __future__ import annotations

from _report import run_named  # noqa: E402  (benchmarks/, beside this script)
import argparse
import json
import os
import platform
import statistics
import sys
import time
from contextlib import nullcontext

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from vpcli import registry
from vpcli.engine.loading import for_inference
from vpcli.engine.run import resolve_config
from vpcli.predictors.base import TrainState


def build(preset: str, device: str):
    cfg = resolve_config(None, preset)
    torch.manual_seed(0)
    model = registry.get("predictor", cfg.method).builder(cfg.model_config()).to(device)
    return model, cfg


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, repeats: int, warmup: bool = True) -> float:
    """Median wall time of ``repeats`` calls (after one warm-up call)."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def fixed_noise(kind: str, t: int, shape) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(7 * t + (kind == "motion")))


def run_predict(model, ctx, horizon, samples, seed=0, noise=None):
    g = torch.Generator(device=ctx["rgb"].device).manual_seed(seed)
    return torch.stack([r.frames for r in model.predict(ctx, horizon, samples=samples, generator=g, noise=noise)])


def bench_sampling(device, n, horizon, rounds):
    """Batched vs sequential, interleaved round by round (this machine's load drifts)."""
    model, cfg = build("slamp-mmnist", device)
    model = for_inference(model, device)
    ctx = {"rgb": torch.rand(1, cfg.data.context, cfg.data.channels, *cfg.data.size, device=device)}

    def batched():
        return run_predict(model, ctx, horizon, n)

    def sequential():
        return [run_predict(model, ctx, horizon, 1, seed=i) for i in range(n)]
    run_predict(model, ctx, 2, n), run_predict(model, ctx, 2, 1)  # warm-up both batch sizes
    tb, ts = [], []
    for _ in range(rounds):
        tb.append(timed(batched, device, 1, warmup=False))
        ts.append(timed(sequential, device, 1, warmup=False))
    return {"samples": n, "horizon": horizon, "context": cfg.data.context, "rounds": rounds,
            "batched_s": statistics.median(tb), "sequential_s": statistics.median(ts),
            "ratio": statistics.median(tb) / statistics.median(ts),
            "ratio_per_round": [b / s for b, s in zip(tb, ts)], "target": "<= 0.5"}


def bench_fps(device, preset, horizon, samples, repeats):
    model, cfg = build(preset, device)
    model = for_inference(model, device)  # channels-last on the CPU, as vpcli predict runs it
    ctx = {"rgb": torch.rand(1, cfg.data.context, cfg.data.channels, *cfg.data.size, device=device)}
    t = timed(lambda: run_predict(model, ctx, horizon, samples), device, repeats)
    return {"preset": preset, "size": list(cfg.data.size), "samples": samples, "horizon": horizon,
            "seconds": t, "frames_per_s": horizon * samples / t,
            "params_M": sum(p.numel() for p in model.parameters()) / 1e6}


def bench_train(device, batch, steps):
    model, cfg = build("slamp-mmnist", device)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.optim.lr, betas=cfg.train.optim.betas)
    x = torch.rand(batch, cfg.data.length, cfg.data.channels, *cfg.data.size, device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        model({"rgb": x}, state=TrainState())["loss"].backward()
        opt.step()
    # FLOPs of one step (forward + backward), counted at batch 2 (BatchNorm needs two) and scaled.
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with counter:
        model({"rgb": x[:2]}, state=TrainState())["loss"].backward()
    opt.zero_grad(set_to_none=True)
    flops = counter.get_total_flops() * batch / 2
    t = timed(step, device, steps)
    return {"preset": "slamp-mmnist", "batch": batch, "frames": cfg.data.length, "seconds_per_step": t,
            "steps_per_s": 1 / t, "clips_per_s": batch / t, "tflop_per_step": flops / 1e12,
            "achieved_gflop_s": flops / t / 1e9}


def bench_variants(device, horizon, samples, repeats):
    model, cfg = build("slamp-mmnist", device)
    model.eval()
    ctx = {"rgb": torch.rand(1, cfg.data.context, cfg.data.channels, *cfg.data.size, device=device)}
    out = {}

    def go(cl: bool, bf16: bool):
        m = model.to(memory_format=torch.channels_last) if cl else model.to(memory_format=torch.contiguous_format)
        c = {"rgb": ctx["rgb"]}
        amp = torch.autocast(device.split(":")[0], dtype=torch.bfloat16) if bf16 else nullcontext()

        def f():
            with amp:
                return run_predict(m, c, horizon, samples, noise=fixed_noise).float()
        return f

    ref = go(False, False)()
    base = timed(go(False, False), device, repeats)
    out["float32"] = {"seconds": base}
    for name, cl, bf16 in (("channels_last", True, False), ("bf16_autocast", False, True),
                           ("bf16_autocast+channels_last", True, True)):
        f = go(cl, bf16)
        t = timed(f, device, repeats)
        out[name] = {"seconds": t, "speedup": base / t, "max_abs_diff": float((f() - ref).abs().max())}
    model.to(memory_format=torch.contiguous_format)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps and repeats (about a minute on 1 core)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--json", default=None, help="write the results here as well")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    horizon = 5 if args.quick else 20     # 20: the paper's Moving MNIST test horizon (Sec. 4)
    repeats = 1 if args.quick else 2
    res = {"machine": {"python": platform.python_version(), "torch": torch.__version__, "device": args.device,
                       "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine()}}
    print(json.dumps(res["machine"]), flush=True)
    run_named((
        ("sampling", lambda: bench_sampling(args.device, args.samples, horizon, 1 if args.quick else 2)),
        ("fps_mmnist_s1", lambda: bench_fps(args.device, "slamp-mmnist", horizon, 1, repeats)),
        ("fps_mmnist_sN", lambda: bench_fps(args.device, "slamp-mmnist", horizon, args.samples, repeats)),
        ("fps_cityscapes_s1", lambda: bench_fps(args.device, "slamp-cityscapes", max(2, horizon // 4), 1, repeats)),
        ("train_mmnist_b32", lambda: bench_train(args.device, 32, 1)),
        ("inference_variants", lambda: bench_variants(args.device, horizon, 4, repeats)),
    ), args.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())

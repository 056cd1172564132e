"""`vpcli predict` cost: constant memory over the horizon, and predicted frames per second.

1. Streaming: peak RSS of a whole `vpcli predict` run (tiny SLAMP run folder, 64x64 grey clip,
   2 samples, written to H.264) at horizon 100 and at horizon 2,000, each in a fresh subprocess
   (ru_maxrss). Target: equal within 10%. A runner that kept its predictions would need
   2 x 2,000 x 64 x 64 x 4 bytes = 131 MB more for the float frames alone.
2. Throughput with random weights, B = 1 clip: generated frames/s of the model alone
   (``predict`` generator) and end to end (``predict_clip``: decode the context, predict, encode
   every sample to H.264), for the slamp-mmnist preset (paper-size Moving MNIST model, 64x64) and
   the slamp-cityscapes preset (paper-size street model, 128x256), S = 1 and S = N samples.
3. ``torch.autocast(<device>, dtype=torch.bfloat16)``: speed-up of the model alone over float32,
   and the max abs difference of the frames from the same noise.

Run:  python benchmarks/bench_predict.py [--quick] [--threads 1] [--device cpu] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vpcli import registry
from vpcli.engine.run import resolve_config

TINY = ["model.nf=8", "model.g_dim_app=16", "model.g_dim_motion=16", "model.rnn_size=32", "model.mask_channels=8"]


def make_run(root: Path, preset: str, overrides: list[str]) -> Path:
    import yaml
    from safetensors.torch import save_file
    cfg = resolve_config(None, preset, overrides)
    torch.manual_seed(0)
    model = registry.get("predictor", cfg.method).builder(cfg.model_config())
    (root / "checkpoints").mkdir(parents=True)
    (root / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    save_file(model.state_dict(), str(root / "checkpoints" / "last.safetensors"))
    return root


def make_clip(path: Path, t: int, h: int, w: int, channels: int) -> Path:
    from vpcli.io.video import write_video
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (t, h, w, 1 if channels == 1 else 3), dtype=np.uint8)
    return write_video(path, np.repeat(frames, 3, -1) if channels == 1 else frames, fps=10, lossless=True)


# ----------------------------------------------------------------------------------- 1. memory

def child_rss(args) -> None:
    """In a fresh process: one `vpcli predict` run; print its peak RSS in MB."""
    torch.set_num_threads(args.threads)
    from vpcli.engine.predict_runner import PredictOptions, predict
    t = time.perf_counter()
    predict([args.clip], args.out, PredictOptions(weights=args.weights, horizon=args.horizon, samples=2, seed=0))
    seconds = time.perf_counter() - t
    print(json.dumps({"horizon": args.horizon, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "seconds": seconds}))


def bench_memory(tmp: Path, threads: int, horizons: list[int]) -> dict:
    run = make_run(tmp / "tiny", "slamp-mmnist-tiny", TINY)
    clip = make_clip(tmp / "clip.mp4", 6, 64, 64, 1)
    results = []
    for h in horizons:
        out = subprocess.run([sys.executable, __file__, "--child-rss", "--horizon", str(h), "--weights", str(run),
                              "--clip", str(clip), "--out", str(tmp / f"mem{h}"), "--threads", str(threads)],
                             capture_output=True, text=True, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    base, big = results[0]["peak_rss_mb"], results[-1]["peak_rss_mb"]
    return {"runs": results, "ratio": big / base, "within_10pct": abs(big / base - 1) <= 0.10}


# ----------------------------------------------------------------------------------- 2./3. speed

def build(preset: str, device: str):
    cfg = resolve_config(None, preset)
    torch.manual_seed(0)
    return registry.get("predictor", cfg.method).builder(cfg.model_config()).to(device).eval(), cfg


def model_fps(model, ctx, horizon: int, samples: int, *, bf16: bool = False, repeats: int = 1):
    """Generated frames/s of the model alone (best of ``repeats`` after a short warm-up), and the frames."""
    device = ctx["rgb"].device

    def once():
        gen = torch.Generator(device=device).manual_seed(0)
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            return torch.stack([r.frames.float() for r in model.predict(ctx, horizon, samples, gen)])

    with torch.inference_mode():  # warm-up (allocator, kernels)
        list(model.predict(ctx, 1, samples, torch.Generator(device=device).manual_seed(0)))
    best, frames = float("inf"), None
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        frames = once()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return horizon * samples / best, frames


def end_to_end_fps(tmp: Path, preset: str, horizon: int, samples: int, device: str) -> float:
    from vpcli.engine.predict_runner import PredictOptions, predict
    cfg = resolve_config(None, preset)
    tag = f"{preset}-{samples}"
    run = make_run(tmp / f"run-{tag}", preset, [])
    clip = make_clip(tmp / f"clip-{tag}.mp4", cfg.data.context, *cfg.data.size, cfg.data.channels)
    [record] = predict([str(clip)], tmp / f"e2e-{tag}", PredictOptions(weights=str(run), horizon=horizon,
                                                                        samples=samples, device=device))
    return horizon * samples / record["seconds"]


def bench_speed(tmp: Path, device: str, quick: bool, n: int) -> list[dict]:
    rows = []
    for preset, horizon in (("slamp-mmnist", 10 if quick else 30), ("slamp-cityscapes", 3 if quick else 10)):
        model, cfg = build(preset, device)
        shape = (1, cfg.data.context, cfg.data.channels, *cfg.data.size)  # B,T,C,H,W
        ctx = {"rgb": torch.rand(shape, generator=torch.Generator().manual_seed(0)).to(device)}
        for s in (1, n):
            fps32, f32 = model_fps(model, ctx, horizon, s)
            fps16, f16 = model_fps(model, ctx, horizon, s, bf16=True)
            e2e = end_to_end_fps(tmp, preset, horizon, s, device)
            rows.append({"preset": preset, "size": list(cfg.data.size), "samples": s, "horizon": horizon,
                         "model_fps": round(fps32, 2), "end_to_end_fps": round(e2e, 2),
                         "bf16_model_fps": round(fps16, 2), "bf16_speedup": round(fps16 / fps32, 3),
                         "bf16_max_abs_diff": float((f32 - f16).abs().max())})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short horizons (a smoke run)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--samples", type=int, default=4, help="N for the S = N rows")
    p.add_argument("--horizons", default="100,2000", help="horizons of the memory test")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--json", type=Path)
    # internal: the memory child
    p.add_argument("--child-rss", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--horizon", type=int, help=argparse.SUPPRESS)
    p.add_argument("--weights", help=argparse.SUPPRESS)
    p.add_argument("--clip", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child_rss:
        return child_rss(args)
    torch.set_num_threads(args.threads)
    report = {"machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": args.threads,
                          "device": args.device, "cpu": platform.processor() or platform.machine()}}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if not args.skip_memory:
            report["memory"] = bench_memory(tmp, args.threads, [int(h) for h in args.horizons.split(",")])
            print(json.dumps(report["memory"]), flush=True)
        if not args.skip_speed:
            report["speed"] = bench_speed(tmp, args.device, args.quick, args.samples)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()

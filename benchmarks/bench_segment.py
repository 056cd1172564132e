"""DeepLabV3+ inference speed on CPU: fp32 vs bf16 autocast, NCHW vs channels_last.

For each backbone (MobileNetV2, ResNet-50; random weights, eval mode) and frame size, the model
runs a batch of frames in four modes; we report frames/s (median of ``--iters`` timed batches
after a warm-up), the speed-up over fp32 NCHW, and how far each mode's output is from fp32 NCHW:
max |logit difference| (absolute, and relative to the largest fp32 logit) and the fraction of
pixels whose argmax label agrees. Timings interleave the modes over ``--rounds`` rounds and take
the median, because the machine may be shared. With ``--bundled`` the shipped synthetic-street model is
measured too, on rendered street frames (trained weights make the label agreement meaningful;
random weights have many near-ties).

Run:  python benchmarks/bench_segment.py [--threads 2] [--sizes 128x256,256x512] [--rounds 3] [--bundled] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from contextlib import nullcontext

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from vpcli.preprocess.deeplab import DeepLabV3Plus  # noqa: E402

MODES = (("fp32", False, False), ("fp32+channels_last", False, True), ("bf16", True, False),
         ("bf16+channels_last", True, True))
BUNDLED = os.path.join(os.path.dirname(__file__), "..", "vpcli", "assets", "weights",
                       "deeplabv3plus-mobilenet-synthstreet.safetensors")


def _ctx(bf16: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()


@torch.inference_mode()
def bench(name: str, model, x, iters: int, rounds: int) -> list[dict]:
    """Modes are timed in interleaved rounds (the machine is shared: load drifts), median of all."""
    outs, times = {}, {mode: [] for mode, _, _ in MODES}
    for mode, bf16, cl in MODES:  # warm-up (oneDNN builds its kernels on first use) + the output we compare
        fmt = torch.channels_last if cl else torch.contiguous_format
        with _ctx(bf16):
            outs[mode] = model.to(memory_format=fmt)(x.contiguous(memory_format=fmt)).float()
    for _ in range(rounds):
        for mode, bf16, cl in MODES:
            fmt = torch.channels_last if cl else torch.contiguous_format
            m, xi = model.to(memory_format=fmt), x.contiguous(memory_format=fmt)
            for _ in range(iters):
                t = time.perf_counter()
                with _ctx(bf16):
                    m(xi)
                times[mode].append(time.perf_counter() - t)
    ref, base_t = outs["fp32"], statistics.median(times["fp32"])
    rows = []
    for mode, _, _ in MODES:
        t, out = statistics.median(times[mode]), outs[mode]
        diff = (out - ref).abs().max().item()
        agree = (out.argmax(1) == ref.argmax(1)).float().mean().item()
        rows.append({"model": name, "size": f"{x.shape[2]}x{x.shape[3]}", "batch": x.shape[0], "mode": mode,
                     "frames_per_s": round(x.shape[0] / t, 2), "speedup": round(base_t / t, 2),
                     "max_abs_logit_diff": float(f"{diff:.3g}"),
                     "rel_logit_diff": float(f"{diff / max(ref.abs().max().item(), 1e-12):.3g}"),
                     "label_agreement": round(agree, 5)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def street_frames(n: int, h: int, w: int) -> torch.Tensor:
    from vpcli.data.synth_street import SynthStreetConfig, render_sequence
    seq = render_sequence(SynthStreetConfig(height=h, width=w, length=n), 4242)
    return torch.from_numpy(seq.rgb).permute(0, 3, 1, 2).float() / 255.0  # (n, 3, h, w)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", default="128x256,256x512")
    ap.add_argument("--backbones", default="mobilenetv2,resnet50")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--iters", type=int, default=2, help="timed batches per mode per round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds over the four modes")
    ap.add_argument("--bundled", action="store_true", help="also time the shipped synthetic-street model")
    ap.add_argument("--json", default=None, help="write all rows here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, "
          f"bf16 supported: {torch.backends.mkldnn.is_available()}", flush=True)
    rows = []
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    for backbone in args.backbones.split(","):
        torch.manual_seed(0)
        model = DeepLabV3Plus({"backbone": backbone}).eval()
        for h, w in sizes:
            x = torch.rand(args.batch, 3, h, w, generator=torch.Generator().manual_seed(0))
            rows += bench(f"deeplabv3plus-{backbone}(random)", model, x, args.iters, args.rounds)
    if args.bundled and os.path.exists(BUNDLED):
        from vpcli.engine.segment_runner import load_segmenter
        model = load_segmenter(BUNDLED, channels_last=False).model
        for h, w in sizes:
            rows += bench("bundled-synthstreet", model, street_frames(args.batch, h, w), args.iters, args.rounds)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where a SLAMP step's time goes, and what the candidate levers of issue 20 buy on this CPU.

Issue 20 asks for the training step at <= 0.7x and sampling at <= 0.3x the authors' time, and says to
measure before choosing a lever. This script measures, at the paper's Moving MNIST model
(``slamp-mmnist``: DCGAN-64, random weights), each as medians of interleaved repetitions so that a
busy machine slows both sides alike:

1. ``profile``: one training step (loss + backward + Adam) under torch.profiler: the share of the
   step spent in convolutions (forward, transposed forward, backward) and the five costliest
   convolution calls by shape.
2. ``deconv``: the decoder's ConvTranspose2d(4, stride 2, pad 1) against two rewrites into ordinary
   convolutions -- four 2x2 convolutions, one per output phase, and one 3x3 convolution with 4x the
   outputs followed by a pixel shuffle -- at the decoder's four shapes, forward and forward+backward
   (the rewrites are checked equal to the transposed convolution first).
3. ``channels_last``: ``SLAMP.predict`` and a training step with the model in channels-last memory
   format against the default, with the largest difference of the frames; predict also for
   slamp-real's structure (``slamp-real-cpu``) at 128x192 and 480x640, 1 clip x 4 samples.
4. ``time_batched``: the encoder and pixel decoder run once over all T frames of a teacher-forced
   clip (B*T rows) against T calls of B rows, forward+backward.

Run:  python benchmarks/bench_slamp_levers.py [--batch 8] [--threads 1] [--reps 3] [--json out.json]
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F

from _report import interleaved as interleave, medians, run_named  # noqa: E402  (benchmarks/, beside this script)
from bench_slamp import build  # noqa: E402

from vpcli.predictors.base import TrainState


def interleaved(cases: dict, reps: int) -> dict:
    """{name: fn} -> {name: median seconds}, the cases run in turn ``reps`` times after a warm-up."""
    return medians(interleave(cases, reps, warmup=True))


def _step_fn(model, x):
    state = TrainState(teacher_forcing=1.0)
    opt = torch.optim.Adam(model.parameters(), 1e-4)

    def step():
        opt.zero_grad()
        model.loss({"rgb": x}, state)["loss"].backward()
        opt.step()
    return step


def bench_profile(batch: int) -> dict:
    from torch.profiler import ProfilerActivity, profile
    model, _ = build("slamp-mmnist", "cpu")
    step = _step_fn(model, torch.rand(batch, 15, 1, 64, 64))
    step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        t = time.perf_counter()
        step()
        wall = time.perf_counter() - t
    rows = prof.key_averages(group_by_input_shape=True)
    total = sum(r.self_cpu_time_total for r in rows)
    kinds = {"conv_backward": "aten::convolution_backward", "conv_forward": "aten::mkldnn_convolution",
             "transposed_forward": "aten::_convolution"}  # transposed convs run inside _convolution
    share = {k: round(sum(r.self_cpu_time_total for r in rows if r.key == op) / total, 3) for k, op in kinds.items()}
    convs = sorted((r for r in rows if r.key in kinds.values()), key=lambda r: -r.self_cpu_time_total)[:5]
    return {"batch": batch, "step_s": round(wall, 3), "share": share, "conv_total_share": round(sum(share.values()), 3),
            "top_convs": [{"op": r.key, "shapes": [s for s in r.input_shapes if s][:3], "calls": r.count,
                           "share": round(r.self_cpu_time_total / total, 3)} for r in convs]}


def phase_deconv(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """ConvTranspose2d(k=4, s=2, p=1) as four 2x2 convolutions: output row 2i+a reads input rows
    i-1+a+r (r = 0, 1) through kernel row 3-a-2r (columns alike)."""
    h, wd = x.shape[-2:]
    xp = F.pad(x, (1, 1, 1, 1))
    rows = []
    for a in (0, 1):
        cols = []
        for b in (0, 1):
            k = w[:, :, [3 - a, 1 - a]][:, :, :, [3 - b, 1 - b]].transpose(0, 1)   # (cout, cin, 2, 2)
            cols.append(F.conv2d(xp[:, :, a:a + h + 1, b:b + wd + 1], k))
        rows.append(torch.stack(cols, -1))               # (B, cout, H, W, 2)
    y = torch.stack(rows, 3)                             # (B, cout, H, 2, W, 2)
    return y.reshape(y.shape[0], y.shape[1], 2 * h, 2 * wd)


def shuffle_deconv(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The same as one 3x3 convolution with 4 x cout outputs (zeros where a phase reads no tap)
    followed by a pixel shuffle."""
    cin, cout = w.shape[:2]
    k = x.new_zeros(cout, 2, 2, cin, 3, 3)
    for a in (0, 1):
        for b in (0, 1):
            for r in (0, 1):
                for s in (0, 1):
                    k[:, a, b, :, a + r, b + s] = w[:, :, 3 - a - 2 * r, 3 - b - 2 * s].t()
    return F.pixel_shuffle(F.conv2d(x, k.reshape(4 * cout, cin, 3, 3), padding=1), 2)


def bench_deconv(batch: int, reps: int) -> dict:
    out = {}
    g = torch.Generator().manual_seed(0)
    for cin, cout, hw in [(1024, 256, 4), (512, 128, 8), (256, 64, 16), (128, 1, 32)]:  # DCGAN-64 decoder, nf 64
        x = torch.randn(batch, cin, hw, hw, generator=g).requires_grad_()
        w = (torch.randn(cin, cout, 4, 4, generator=g) * 0.05).requires_grad_()
        fns = {"transposed": lambda x, w: F.conv_transpose2d(x, w, stride=2, padding=1),
               "four_2x2": phase_deconv, "3x3_shuffle": shuffle_deconv}
        with torch.no_grad():
            ref = fns["transposed"](x, w)
            err = max((f(x, w) - ref).abs().max().item() for f in fns.values())

        def train(f):
            return lambda: f(x, w).square().sum().backward()

        def fwd(f):
            def run():
                with torch.no_grad():
                    f(x, w)
            return run
        t = interleaved({**{f"{k}_train": train(f) for k, f in fns.items()},
                         **{f"{k}_fwd": fwd(f) for k, f in fns.items()}}, reps)
        out[f"{cin}->{cout}@{hw}"] = {"max_abs_diff": err, **{k: round(v * 1e3, 1) for k, v in t.items()},
                                      "ratio_train_four_2x2": round(t["four_2x2_train"] / t["transposed_train"], 2),
                                      "ratio_train_3x3_shuffle": round(t["3x3_shuffle_train"] / t["transposed_train"], 2)}
    out["unit"] = "ms"
    return out


def bench_channels_last(batch: int, samples: int, reps: int, preset: str = "slamp-mmnist", size=(64, 64),
                        channels: int = 1, context: int = 5, horizon: int = 10, train: bool = True) -> dict:
    model, _ = build(preset, "cpu")
    ctx = torch.rand(batch, context, channels, *size)
    clip = torch.rand(batch, 15, channels, *size)

    def predict(fmt):
        def run():
            model.eval().to(memory_format=fmt)
            gen = torch.Generator().manual_seed(0)
            return torch.stack([r.frames for r in model.predict({"rgb": ctx}, horizon, samples=samples, generator=gen)])
        return run

    def train_step(fmt):
        def run():
            model.train().to(memory_format=fmt)
            _step_fn(model, clip)()
        return run
    diff = (predict(torch.contiguous_format)() - predict(torch.channels_last)()).abs().max().item()
    cases = {"predict_nchw": predict(torch.contiguous_format), "predict_cl": predict(torch.channels_last)}
    if train:
        cases.update(train_nchw=train_step(torch.contiguous_format), train_cl=train_step(torch.channels_last))
    t = interleaved(cases, reps)
    res = {"preset": preset, "size": list(size), "batch": batch, "samples": samples, "horizon": horizon,
           "frames_max_abs_diff": diff, **{k: round(v, 3) for k, v in t.items()},
           "ratio_predict": round(t["predict_cl"] / t["predict_nchw"], 3)}
    if train:
        res["ratio_train"] = round(t["train_cl"] / t["train_nchw"], 3)
    return res


def bench_time_batched(batch: int, reps: int, frames: int = 4) -> dict:
    model, _ = build("slamp-mmnist", "cpu")
    enc, dec = model.pixel_encoder, model.pixel_decoder
    x = torch.rand(frames, batch, 1, 64, 64)

    def looped():
        loss = 0
        for t in range(frames):
            h, skips = enc(x[t])
            loss = loss + dec(h, skips).square().mean()
        loss.backward()

    def batched():
        h, skips = enc(x.flatten(0, 1))
        (dec(h, skips).square().mean() * frames).backward()
    t = interleaved({"looped": looped, "batched": batched}, reps)
    return {"batch": batch, "frames": frames, **{k: round(v, 3) for k, v in t.items()},
            "ratio": round(t["batched"] / t["looped"], 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    machine = {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
               "threads": torch.get_num_threads()}
    print(machine, flush=True)
    run_named((
        ("profile", lambda: bench_profile(args.batch)),
        ("deconv", lambda: bench_deconv(args.batch, args.reps)),
        ("channels_last", lambda: bench_channels_last(2, 10, args.reps)),
        ("channels_last_real_128x192", lambda: bench_channels_last(1, 4, args.reps, "slamp-real-cpu", (128, 192), 3,
                                                                   4, 6, train=False)),
        ("channels_last_real_480x640", lambda: bench_channels_last(1, 4, args.reps, "slamp-real-cpu", (480, 640), 3,
                                                                   4, 6, train=False)),
        ("time_batched", lambda: bench_time_batched(args.batch, args.reps)),
    ), args.json, {"machine": machine})
    return 0


if __name__ == "__main__":
    sys.exit(main())

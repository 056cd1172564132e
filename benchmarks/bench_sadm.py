"""SADM inference cost: the dynamics model and the full pipeline at 128x256, the grouped ConvLSTM
against a loop over per-class cells, and peak memory of `vpcli predict` over the horizon.

1. Predicted frames/s, B = 1, S = 1, at 64x128 and 128x256, float32 and
   ``torch.autocast("cpu", dtype=torch.bfloat16)``, for randomly initialised models of the
   sadm-street-cpu preset (C = 7 category groups) and of the same preset with one group per
   Cityscapes class (C = 19, the paper's ``class_groups: null``); context: 4 frames of random RGB,
   random labels 0..18 and random flow:
   * dynamics alone: ``SADM.predict_dynamics`` (encode the context once, then per step the decoder,
     heads, late fusion, eq. 5 and argmax);
   * full pipeline: ``SADM.predict`` (the dynamics, warping, occupancy + semantic dis-occlusion,
     the partial-convolution inpainting), each StepRecord taken.
   ``frames_per_s`` is 1 / the median step time (steady state). The paper reports 19 fps on a GTX
   1080 (at Cityscapes' resolution, full width): not the same model size, noted for scale only.
2. The per-class recurrent cell: ``GroupedConvLSTMCell(C, in, hidden)`` (one grouped convolution,
   NCHW, as SADM keeps its gates) against C separate ``ConvLSTMCell`` s in a
   Python loop (each timed with NCHW and channels-last weights; the faster loop is the baseline),
   at the state resolution of a 128x256 frame (32x64), the preset's widths (8 in, 8 hidden), C = 7
   and 19, batch 1 (inference) and batch 8 (training: forward + backward), in float32 and under
   bf16 autocast. Claim checked: the grouped cell is faster than the best loop in every case
   (reported per precision: on an AVX512-bf16 CPU it holds in bf16, while in float32 oneDNN's
   grouped kernel for 16 input channels per group is no faster than 7 small dense ones).
3. Peak RSS of ``vpcli predict CLIP --weights WEIGHTS --horizon N`` at horizon 100 and 1,000
   (--quick: 20 and 200), each run as the child of its own wrapper (bench_hvp's method): a
   synth-street clip gets ``--labels-from companion --flow-from companion``. Needs --weights (a
   trained SADM; skipped without). Claim checked: the two peaks are equal within 10%.

Run:  python benchmarks/bench_sadm.py [--quick] [--threads 2] [--weights sadm-synthstreet] [--json out.json]
"""
from __future__ import annotations

from _report import best_time, run_named  # noqa: E402  (benchmarks/, beside this script)
import statistics
import sys
from contextlib import nullcontext
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_hvp import bench_memory, build, context, inference_bench_args, step_times  # noqa: E402

from vpcli.nn.convlstm import ConvLSTMCell, GroupedConvLSTMCell  # noqa: E402
from vpcli.predictors.sadm import channels_last_convs  # noqa: E402

PRESET = "sadm-street-cpu"


def bench_speed(size: tuple[int, int], horizon: int, repeats: int, groups: str) -> dict:
    model, cfg = build(PRESET, ["model.class_groups=null"] if groups == "19" else [])
    ctx = context(cfg, size, flow=True)
    paths = {"dynamics": lambda h, g: model.predict_dynamics(model._groups(ctx["labels"]), ctx["flow"], h, 1, g),
             "full": lambda h, g: (r.frames for r in model.predict(ctx, h, 1, g))}
    out = {"preset": PRESET, "classes": model.dynamics.k, "size": list(size), "context": cfg.data.context,
           "horizon": horizon, "batch": 1, "samples": 1,
           "parameters": sum(p.numel() for n, p in model.named_parameters()
                             if n.split(".")[0] in ("dynamics", "inpaint"))}
    for name, make in paths.items():
        for prec in ("fp32", "bf16"):
            amp = torch.autocast("cpu", dtype=torch.bfloat16) if prec == "bf16" else nullcontext()
            with torch.inference_mode(), amp:
                step_times(make(2, torch.Generator().manual_seed(0)))   # warm-up
                later = []
                for r in range(repeats):
                    later += step_times(make(horizon, torch.Generator().manual_seed(r)))[1]
            step = statistics.median(later)
            out[f"{name}_{prec}"] = {"frames_per_s": 1 / step, "seconds_per_step": step}
        out[f"{name}_bf16_over_fp32_speed"] = out[f"{name}_bf16"]["frames_per_s"] / out[f"{name}_fp32"]["frames_per_s"]
    out["dynamics_share_of_full_fp32"] = out["dynamics_fp32"]["seconds_per_step"] / out["full_fp32"]["seconds_per_step"]
    return out


def bench_cells(repeats: int) -> dict:
    rows, ok = [], {"fp32": True, "bf16": True}
    for k in (7, 19):
        for batch, train in ((1, False), (8, True)):
            cin = hid = 8
            torch.manual_seed(0)
            grouped = GroupedConvLSTMCell(k, cin, hid)
            channels_last_convs(grouped)   # leaves the gates NCHW, as in SADM
            loops = {"nchw": [ConvLSTMCell(cin, hid) for _ in range(k)]}
            loops["channels_last"] = [ConvLSTMCell(cin, hid) for _ in range(k)]
            for cell in loops["channels_last"]:
                channels_last_convs(cell)
            x = torch.randn(batch, k * cin, 32, 64, requires_grad=train)
            for prec in ("fp32", "bf16"):
                amp = torch.autocast("cpu", dtype=torch.bfloat16) if prec == "bf16" else nullcontext()

                def run_grouped():
                    with torch.set_grad_enabled(train), amp:
                        h, _ = grouped(x)
                    if train:
                        h.float().sum().backward()

                def run_loop(cells):
                    def f():
                        with torch.set_grad_enabled(train), amp:
                            xs = x.view(batch, k, cin, 32, 64)
                            h = torch.cat([c(xs[:, i])[0] for i, c in enumerate(cells)], 1)
                        if train:
                            h.float().sum().backward()
                    return f
                t_g = best_time(run_grouped, repeats)
                t_l = {name: best_time(run_loop(cells), repeats) for name, cells in loops.items()}
                best = min(t_l.values())
                ok[prec] &= t_g < best
                rows.append({"classes": k, "batch": batch, "precision": prec,
                             "mode": "forward+backward" if train else "forward", "grouped_ms": 1e3 * t_g,
                             "loop_nchw_ms": 1e3 * t_l["nchw"], "loop_channels_last_ms": 1e3 * t_l["channels_last"],
                             "loop_over_grouped": best / t_g})
    return {"state": [32, 64], "in_channels": 8, "hidden": 8, "rows": rows,
            "grouped_faster_everywhere": ok}


def main(argv=None) -> int:
    args, horizon, repeats, horizons, res = inference_bench_args(argv, __doc__, "SADM", 2, 1000)
    run_named((
        ("cells_grouped_vs_loop", lambda: bench_cells(3 if args.quick else 10)),
        ("speed_128x256_C7", lambda: bench_speed((128, 256), horizon, repeats, "7")),
        ("speed_128x256_C19", lambda: bench_speed((128, 256), horizon, repeats, "19")),
        ("speed_64x128_C7", lambda: bench_speed((64, 128), horizon, repeats, "7")),
        ("memory_predict", lambda: bench_memory(args.clip, args.weights, horizons, args.threads, method="SADM",
                                                street_extra=("--labels-from", "companion",
                                                              "--flow-from", "companion"))),
    ), args.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())

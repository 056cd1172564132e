"""Data-loader throughput (clips/s, frames/s) against what SLAMP training consumes.

Cases (all through ``torch.utils.data.DataLoader`` with the default collate):

1. ``synthetic:moving-digits`` 64x64, 15 frames (SLAMP MNIST: 5 context + 10 future), batch 32,
   generated on the fly -- with 0 and 2 workers.
2. The same sequences pre-generated to an ``.npz`` (our SRVP-style test-set file) and read by
   ``ClipDataset``.
3. synth-street folders at 128x256 (SLAMP Cityscapes protocol: 10 context + 10 future), PNG
   frames, RGB only and with labels + flow companions, batch 8, 2 workers.
4. The same street sequences as H.264 MP4 files (every window start, ``window_stride=1``), to
   show the cost of decoding video (each window decodes from the first frame of its file).

The SLAMP model does not exist in vpcli yet, so the training-step cost is **estimated with a
stand-in network** of roughly SLAMP-MNIST's shape (two DCGAN-64 encoders, two DCGAN-64
decoders, SLAMP's 5-layer 64-channel mask CNN, two-layer 256-unit predictor LSTMs and 256-unit
prior/posterior LSTMs for two 20-d latents). It is a stand-in, not SLAMP. Its step is timed on
this machine's CPU at batch 4 and scaled to batch 32, and its FLOPs are counted
(``torch.utils.flop_counter``); GPU step times are *derived* from the FLOP count at assumed
sustained throughputs, not measured (no GPU here). The comparison that depends on no stand-in is
the loader's break-even step time: a training step faster than ``32 / (clips/s)`` seconds would
wait for data.

Run:  python benchmarks/bench_data_loader.py [--quick] [--out bench_out/]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from vpcli.data.clips import ClipDataset, make_dataset
from vpcli.data.moving_digits import generate_moving_digits


def measure(dataset, *, batch_size: int, workers: int, batches: int, seed: int = 0) -> dict:
    """Time ``batches`` batches after the first one (worker start-up is reported apart)."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(seed), drop_last=True,
                        persistent_workers=False)
    t0 = time.perf_counter()
    it = iter(loader)
    first = next(it)
    t_first = time.perf_counter() - t0
    frames_per_clip = first["rgb"].shape[1]
    n = 0
    t1 = time.perf_counter()
    for _ in range(batches):
        try:
            next(it)
        except StopIteration:
            break
        n += 1
    dt = time.perf_counter() - t1
    del it
    clips = n * batch_size
    return {"batch_size": batch_size, "workers": workers, "batches_timed": n, "seconds": round(dt, 3),
            "first_batch_s": round(t_first, 3), "clips_per_s": round(clips / dt, 1),
            "frames_per_s": round(clips * frames_per_clip / dt, 1),
            "batch_shape": list(first["rgb"].shape), "keys": sorted(k for k in first if k != "meta")}


# ------------------------------------------------------------------ stand-in for SLAMP-MNIST


def _enc(cin: int, dim: int = 128) -> nn.Sequential:
    # DCGAN-64 encoder: 64 -> 32 -> 16 -> 8 -> 4 -> 1
    def blk(a, b):
        return [nn.Conv2d(a, b, 4, 2, 1), nn.BatchNorm2d(b), nn.LeakyReLU(0.2)]

    return nn.Sequential(*blk(cin, 64), *blk(64, 128), *blk(128, 256), *blk(256, 512),
                         nn.Conv2d(512, dim, 4, 1, 0), nn.BatchNorm2d(dim), nn.Tanh())


def _dec(cout: int, dim: int = 128) -> nn.Sequential:
    def blk(a, b):
        return [nn.ConvTranspose2d(a, b, 4, 2, 1), nn.BatchNorm2d(b), nn.LeakyReLU(0.2)]

    return nn.Sequential(nn.ConvTranspose2d(dim, 512, 4, 1, 0), nn.BatchNorm2d(512), nn.LeakyReLU(0.2),
                         *blk(512, 256), *blk(256, 128), *blk(128, 64), nn.ConvTranspose2d(64, cout, 4, 2, 1))


class StandIn(nn.Module):
    """Roughly SLAMP-MNIST-shaped (not SLAMP): appearance + motion encoders, pixel + flow
    decoders, mask CNN, predictor / prior / posterior LSTMs. Only its cost is of interest."""

    def __init__(self, z: int = 20, h: int = 128, hid: int = 256):
        super().__init__()
        self.enc_app, self.enc_mot = _enc(1, h), _enc(2, h)
        self.dec_pix, self.dec_flow = _dec(1, h), _dec(2, h)
        self.mask = nn.Sequential(*[m for i in range(5) for m in (nn.Conv2d(3 if i == 0 else 64, 64 if i < 4 else 1, 3, 1, 1),
                                                                   nn.ReLU() if i < 4 else nn.Sigmoid())])
        self.pred_app = nn.LSTM(h + z, hid, 2, batch_first=True)
        self.pred_mot = nn.LSTM(h + z, hid, 2, batch_first=True)
        self.post = nn.ModuleList(nn.LSTM(h, hid, 1, batch_first=True) for _ in range(2))
        self.prior = nn.ModuleList(nn.LSTM(h, hid, 1, batch_first=True) for _ in range(2))
        self.heads = nn.ModuleList(nn.Linear(hid, 2 * z) for _ in range(4))
        self.out_app, self.out_mot = nn.Linear(hid, h), nn.Linear(hid, h)
        self.z = z

    def forward(self, x):  # x: (B, T, 1, 64, 64)
        B, T = x.shape[:2]
        ea = self.enc_app(x.flatten(0, 1)).view(B, T, -1)                      # (B, T, h)
        pairs = torch.cat([x[:, :-1], x[:, 1:]], 2).flatten(0, 1)             # (B*(T-1), 2, 64, 64)
        em = self.enc_mot(pairs).view(B, T - 1, -1)                           # (B, T-1, h)
        kl = 0.0
        zs = []
        for i, e in enumerate((ea[:, 1:], em)):
            q = self.heads[i](self.post[i](e)[0])
            p = self.heads[2 + i](self.prior[i](e)[0])
            mq, lq = q.chunk(2, -1)
            mp, lp = p.chunk(2, -1)
            zs.append(mq + torch.randn_like(mq) * (0.5 * lq).exp())
            kl = kl + 0.5 * (lp - lq + ((lq.exp() + (mq - mp) ** 2) / lp.exp()) - 1).sum(-1).mean()
        ha = self.out_app(self.pred_app(torch.cat([ea[:, :-1], zs[0]], -1))[0])  # (B, T-1, h)
        hm = self.out_mot(self.pred_mot(torch.cat([em, zs[1]], -1))[0])
        pix = torch.sigmoid(self.dec_pix(ha.flatten(0, 1)[..., None, None]))     # (B*(T-1), 1, 64, 64)
        flow = self.dec_flow(hm.flatten(0, 1)[..., None, None])                  # (B*(T-1), 2, 64, 64)
        prev = x[:, :-1].flatten(0, 1)
        grid = torch.stack(torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="xy"), -1)
        warped = nn.functional.grid_sample(prev, grid + flow.permute(0, 2, 3, 1) / 32, align_corners=True)
        m = self.mask(torch.cat([pix, warped, prev], 1))
        pred = m * pix + (1 - m) * warped
        target = x[:, 1:].flatten(0, 1)
        return ((pred - target) ** 2).mean() + ((pix - target) ** 2).mean() + ((warped - target) ** 2).mean() + 1e-4 * kl


def train_step_time(steps: int, batch: int = 4, frames: int = 15, full_batch: int = 32) -> dict:
    """Time the stand-in's forward + backward + Adam step on the CPU at a small batch and count
    its FLOPs; scale both linearly to SLAMP-MNIST's batch of 32 (convolutions dominate)."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    model = StandIn()
    opt = torch.optim.Adam(model.parameters(), 3e-4)
    x = torch.rand(batch, frames, 1, 64, 64)
    times = []
    for i in range(steps + 1):
        t = time.perf_counter()
        opt.zero_grad()
        model(x).backward()
        opt.step()
        if i:  # the first step allocates; not timed
            times.append(time.perf_counter() - t)
    with FlopCounterMode(display=False) as counter:
        model(x).backward()
    flops_full = counter.get_total_flops() * full_batch / batch
    step = float(np.median(times)) * full_batch / batch
    return {"params_millions": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
            "timed_batch": batch, "frames": frames, "device": "cpu", "torch_threads": torch.get_num_threads(),
            "cpu_step_s_batch32_scaled": round(step, 2), "cpu_clips_per_s_consumed": round(full_batch / step, 2),
            "tflop_per_step_batch32": round(flops_full / 1e12, 2),
            # Not measured: what a GPU would need at an assumed sustained fp32/TF32 throughput.
            "gpu_estimate": {f"{tf}_tflops_sustained": {"step_ms": round(flops_full / (tf * 1e12) * 1e3, 1),
                                                        "clips_per_s": round(full_batch * tf * 1e12 / flops_full, 1)}
                             for tf in (20, 50, 100)}}


# ------------------------------------------------------------------ main


def _street_folders(root: Path, n: int, length: int) -> Path:
    from vpcli.data import synth_street

    out = root / "synth_street_128x256"
    if out.is_dir() and len(list(out.glob("seq_*"))) >= n:
        return out
    shutil.rmtree(out, ignore_errors=True)
    cfg = synth_street.SynthStreetConfig(height=128, width=256, length=length)
    synth_street.generate(out, num_sequences=n, config=cfg, seed=0)
    return out


def _street_mp4s(street: Path, root: Path) -> Path:
    from vpcli.io.video import read_video, write_video

    out = root / "street_mp4"
    if out.is_dir() and list(out.glob("*.mp4")):
        return out
    out.mkdir(parents=True, exist_ok=True)
    for seq in sorted(street.glob("seq_*")):
        frames, _ = read_video(seq / "frames")
        write_video(out / f"{seq.name}.mp4", frames, 10)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="bench_out", help="folder for generated data and the JSON report")
    ap.add_argument("--quick", action="store_true", help="fewer batches (a smoke run)")
    ap.add_argument("--train-steps", type=int, default=2, help="timed stand-in training steps (0 = skip)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # DataLoader workers run torch with one thread; the main process would use every core, and on
    # a loaded machine that oversubscription made collate ~250x slower (torch.stack of 32 clips:
    # 260 ms with 2 threads, 1 ms with 1). One thread keeps the 0-worker case and the stand-in honest.
    torch.set_num_threads(1)
    nb = 4 if args.quick else 25
    report = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                          "note": "CPU cores shared with other jobs; numbers vary run to run"}, "cases": {}}

    def case(name, ds, **kw):
        t = time.perf_counter()
        r = measure(ds, **kw)
        r["wall_s"] = round(time.perf_counter() - t, 2)
        report["cases"][name] = r
        print(f"{name:48s} {r['clips_per_s']:9.1f} clips/s {r['frames_per_s']:10.1f} frames/s "
              f"(batch {r['batch_size']}, {r['workers']} workers, first batch {r['first_batch_s']} s)", flush=True)

    md = make_dataset("synthetic:moving-digits", context=5, future=10, num_clips=100_000, seed=0)
    case("moving-digits 64x64x15 on the fly, 0 workers", md, batch_size=32, workers=0, batches=nb)
    case("moving-digits 64x64x15 on the fly, 2 workers", md, batch_size=32, workers=2, batches=nb)

    npz_dir = out / "moving_digits_npz"
    if not list(npz_dir.glob("*.npz")):
        generate_moving_digits(npz_dir, num_sequences=2000, length=15, num_digits=2, seed=0, split="test", overwrite=True)
    npz_ds = ClipDataset(npz_dir, context=5, future=10, grayscale=True)
    case("moving-digits 64x64x15 from npz, 2 workers", npz_ds, batch_size=32, workers=2, batches=nb)

    street = _street_folders(out, n=4 if args.quick else 6, length=30)
    rgb = ClipDataset(street, context=10, future=10, window_stride=1, companions=None)
    full = ClipDataset(street, context=10, future=10, window_stride=1)
    sb = max(2, nb // 3)
    case("synth-street 128x256x20 PNG, rgb, 2 workers", rgb, batch_size=8, workers=2, batches=sb)
    case("synth-street 128x256x20 PNG, +labels+flow, 2 workers", full, batch_size=8, workers=2, batches=sb)
    mp4 = ClipDataset(_street_mp4s(street, out), context=10, future=10, window_stride=1)
    case("street 128x256x20 MP4 (H.264), rgb, 2 workers", mp4, batch_size=8, workers=2, batches=sb)

    if args.train_steps:
        ts = train_step_time(args.train_steps)
        report["stand_in_training"] = ts
        print(f"stand-in SLAMP-MNIST-sized step ({ts['params_millions']}M params, batch 32 x 15 frames, "
              f"{ts['tflop_per_step_batch32']} TFLOP): CPU (1 thread, scaled from batch {ts['timed_batch']}) "
              f"{ts['cpu_step_s_batch32_scaled']} s -> consumes {ts['cpu_clips_per_s_consumed']} clips/s", flush=True)
        for k, v in ts["gpu_estimate"].items():
            print(f"  GPU estimate (not measured) at {k.split('_')[0]} TFLOP/s sustained: "
                  f"{v['step_ms']} ms/step -> {v['clips_per_s']} clips/s", flush=True)
    md2 = report["cases"]["moving-digits 64x64x15 on the fly, 2 workers"]
    report["break_even_step_s_batch32"] = round(32 / md2["clips_per_s"], 4)
    print(f"loader break-even (moving digits, 2 workers): a step faster than "
          f"{report['break_even_step_s_batch32'] * 1000:.1f} ms per batch of 32 would wait for data")
    (out / "bench_data_loader.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {out / 'bench_data_loader.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

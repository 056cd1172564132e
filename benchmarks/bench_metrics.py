"""Throughput of every metric on this machine.

    python benchmarks/bench_metrics.py              # quick: a few seconds per row
    python benchmarks/bench_metrics.py --frames 128 --clips 8 --json

Per-frame metrics are timed on one ``1,T,3,H,W`` pair of random videos at 64x64 and 128x256
(frames/s = T / seconds, best of ``--repeat`` runs after one warm-up); MS-SSIM needs frames of at
least 161 px, so it is also timed at 256x256. mIoU runs on 19-class label maps. FVD is timed as
I3D feature extraction of 16-frame clips (clips/s) with random weights (the speed does not depend
on the weights). LPIPS and CSIM use random backbones for the same reason.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from collections.abc import Callable

import torch
from _report import best_time  # benchmarks/, beside this script

from vpcli.metrics import CSIM, LPIPS
from vpcli.metrics.fvd import FVD
from vpcli.metrics.i3d import InceptionI3d
from vpcli.metrics.pixel import bce, mae, mse
from vpcli.metrics.psnr import psnr
from vpcli.metrics.segmentation import miou
from vpcli.metrics.ssim import ms_ssim, ssim


def _best_time(repeat: int, fn: Callable[..., object], *args: object) -> float:
    fn(*args)  # warm-up (oneDNN primitive creation, allocator)
    return best_time(lambda: fn(*args), repeat)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16, help="frames per timed call (T)")
    parser.add_argument("--clips", type=int, default=4, help="16-frame clips per FVD feature call")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)

    lpips_alex = LPIPS("alex", pretrained=False).to(device)
    lpips_vgg = LPIPS("vgg", pretrained=False).to(device)
    csim_vgg = CSIM(pretrained=False).to(device)
    frame_metrics: dict[str, Callable] = {
        "psnr": psnr, "mse": mse, "mae": mae, "bce": bce, "ssim": ssim, "ms-ssim": ms_ssim,
        "lpips-alex": lpips_alex, "lpips-vgg": lpips_vgg, "csim": csim_vgg,
    }
    rows = []
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for h, w in ((64, 64), (128, 256), (256, 256)):
            x = torch.rand(1, args.frames, 3, h, w, generator=g).to(device)
            y = torch.rand(1, args.frames, 3, h, w, generator=g).to(device)
            for name, fn in frame_metrics.items():
                if (h, w) == (256, 256) and name != "ms-ssim":
                    continue
                if name == "ms-ssim" and min(h, w) < 161:
                    rows.append({"metric": name, "size": f"{h}x{w}", "unit": "frames/s", "value": None,
                                 "note": "needs >= 161 px"})
                    continue
                seconds = _best_time(args.repeat, fn, x, y)
                rows.append({"metric": name, "size": f"{h}x{w}", "unit": "frames/s", "value": args.frames / seconds})
            labels_p = torch.randint(0, 19, (1, args.frames, h, w), generator=g).to(device)
            labels_t = torch.randint(0, 19, (1, args.frames, h, w), generator=g).to(device)
            if (h, w) != (256, 256):
                seconds = _best_time(args.repeat, miou, labels_p, labels_t, 19)
                rows.append({"metric": "miou", "size": f"{h}x{w}", "unit": "frames/s", "value": args.frames / seconds})

        metric = FVD(model=InceptionI3d().random_init_(0), device=device, batch_size=args.clips)
        for h, w in ((64, 64), (128, 256)):
            clips = torch.rand(args.clips, 16, 3, h, w, generator=g)
            seconds = _best_time(args.repeat, metric.features, clips)
            rows.append({"metric": "fvd-features (I3D, 16-frame clips)", "size": f"{h}x{w}", "unit": "clips/s",
                         "value": args.clips / seconds})

    info = {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": str(device),
            "cpu": platform.processor() or platform.machine(), "frames": args.frames, "clips": args.clips}
    if args.json:
        print(json.dumps({"info": info, "results": rows}, indent=1))
        return 0
    print(f"torch {info['torch']}, {info['threads']} threads, device {info['device']}, T={args.frames}")
    print(f"{'metric':40s} {'size':>9s} {'throughput':>14s}")
    for r in rows:
        value = f"{r['value']:10.1f} {r['unit']}" if r["value"] is not None else f"n/a ({r['note']})"
        print(f"{r['metric']:40s} {r['size']:>9s} {value:>14s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

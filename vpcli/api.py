"""Library functions behind the CLI: segment, estimate_flow, predict, train, evaluate.

Each function takes plain Python values and returns plain records; the CLI only parses and
renders. Engines that are not in this build yet raise :class:`NotAvailableError` (exit code 2)
naming what is missing, instead of producing pretend output.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from vpcli import __version__
from vpcli.errors import NotAvailableError, UsageError


def _missing(command: str, what: str) -> NotAvailableError:
    return NotAvailableError(f"vpcli {command}: {what} is not implemented in vpcli yet",
                             "see README.md 'Status' for what this build can do")


def _runner(module: str, command: str, what: str):
    """The engine module behind a command, or NotAvailableError while it does not exist."""
    import importlib
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module:
            raise
        raise _missing(command, what) from None


def segment(**kwargs: Any):
    """Segment clips: see `vpcli.engine.segment_runner.segment`."""
    return _runner("vpcli.engine.segment_runner", "segment", "the DeepLabV3+ segmentation engine").segment(**kwargs)


def estimate_flow(**kwargs: Any):
    """Optical flow for clips: see `vpcli.engine.flow_runner.estimate_flow`."""
    return _runner("vpcli.engine.flow_runner", "flow",
                   "the optical-flow engine (DIS, Farneback, PWC-Net)").estimate_flow(**kwargs)


def predict(**kwargs: Any):
    """Predict future frames: see `vpcli.engine.predict_runner.predict`."""
    return _runner("vpcli.engine.predict_runner", "predict",
                   "the prediction engine (SLAMP, HVP, SADM, LMVP predictors)").predict(**kwargs)


def evaluate(**kwargs: Any):
    """Evaluate predictions: see `vpcli.engine.evaluator.evaluate`."""
    return _runner("vpcli.engine.evaluator", "eval",
                   "the evaluation engine (PSNR, SSIM, MS-SSIM, LPIPS, FVD, mIoU)").evaluate(**kwargs)


# --- inputs -----------------------------------------------------------------------------------
def collect_inputs(specs: list[str], *, recursive: bool = False,
                   shard: tuple[int, int] | None = None) -> list[tuple[Path, str]]:
    """Expand input specs and give each a stable output name, then keep shard K of N.

    Names are computed on the full list before sharding, so two shards never pick one name.
    """
    from vpcli.io.sources import expand_inputs, input_names
    from vpcli.io.sources import shard as take_shard
    paths = expand_inputs(specs, recursive=recursive)
    pairs = list(zip(paths, input_names(paths)))
    if shard is not None:
        pairs = take_shard(pairs, *shard) if len(pairs) else pairs
    return pairs


def display_path(path: Path) -> str:
    """A path relative to the working folder when it is inside it (shorter in tables)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def run_meta(**fields: Any) -> dict[str, Any]:
    """The common part of every output folder's meta.json."""
    return {"vpcli": __version__, "python": platform.python_version(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **fields}


def write_meta(folder: Path, meta: dict[str, Any]) -> None:
    from vpcli.io.atomic import write_text
    write_text(folder / "meta.json", json.dumps(meta, indent=2, default=str) + "\n")


# --- data tools -------------------------------------------------------------------------------
def video_info(path: Path) -> dict[str, Any]:
    """Frames, size, fps and codec of one clip (video file, GIF or frame folder), without decoding."""
    from vpcli.io.video import probe
    info = probe(path)
    return {"kind": info.kind, "frames": info.num_frames, "width": info.width, "height": info.height,
            "fps": round(info.fps, 3), "codec": info.codec, "seconds": round(info.duration, 3)}


def parse_size(text: str | None) -> tuple[int, int] | None:
    """``"64x128"`` (H x W) -> (64, 128)."""
    if text is None:
        return None
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"size must be HxW like 128x256, got {text!r}") from None
    if h < 1 or w < 1:
        raise UsageError(f"size must be positive, got {text!r}")
    return h, w


CONVERT_FORMATS = {"mp4": "video.mp4", "mkv": "video.mkv", "gif": "video.gif", "png": "frames"}


def convert(path: Path, out_dir: Path, *, fmt: str = "mp4", lossless: bool = False, fps: float | None = None,
            start: int = 0, end: int | None = None, stride: int = 1, size: str | None = None,
            overwrite: bool = False) -> dict[str, Any]:
    """Re-encode one clip into ``out_dir`` (``video.mp4``/``video.mkv``/``video.gif`` or PNG
    ``frames/``) plus ``meta.json``, streaming frame by frame. Nothing is left on failure."""
    from vpcli.io.atomic import atomic_dir
    from vpcli.io.video import VideoWriter, iter_frames, probe
    if fmt not in CONVERT_FORMATS:
        raise UsageError(f"unknown format {fmt!r}", f"choose one of {', '.join(CONVERT_FORMATS)}")
    info = probe(path)
    t0 = time.perf_counter()
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        target = tmp / CONVERT_FORMATS[fmt]
        out_fps = fps or info.fps / stride
        with VideoWriter(target, out_fps, lossless=lossless) as writer:
            for frame in iter_frames(path, start=start, end=end, stride=stride, size=parse_size(size)):
                writer.write(frame)
        record = {"output": str(out_dir / CONVERT_FORMATS[fmt]), "frames": writer.frames_written,
                  "fps": out_fps}
        write_meta(tmp, run_meta(command="data convert", input=str(path), format=fmt, lossless=lossless,
                                 start=start, end=end, stride=stride, size=size, source=video_info(path),
                                 seconds=round(time.perf_counter() - t0, 3), **record))
    return record


# --- training ---------------------------------------------------------------------------------
def _build_datasets(run_cfg, seed: int):
    """Train and validation datasets for a run config (validation may be absent)."""
    from vpcli.data.clips import make_dataset
    from vpcli.errors import InputError
    d = run_cfg.data
    common = dict(context=d.context, future=d.future, frame_step=d.frame_step, size=tuple(d.size),
                  channels=d.channels, seed=seed)
    synthetic = d.source.startswith("synthetic:")
    train_kw = {"num_clips": d.train_clips} if synthetic and d.train_clips else {}
    if not synthetic and d.window_stride:
        train_kw["window_stride"] = d.window_stride  # validation keeps disjoint windows
    train_set = make_dataset(d.source, split="train", **common, **train_kw)
    if len(train_set) == 0:
        raise InputError(f"{d.source} yields no training clips of {d.length} frames",
                         "add longer clips, or lower data.context / data.future / data.frame_step")
    try:
        val_kw = {"num_clips": d.val_clips} if synthetic else {}
        val_set = make_dataset(d.source, split="val", **common, **val_kw) if d.val_clips else None
    except InputError:
        val_set = None  # too few clips for a validation split: train without one
    if val_set is not None and len(val_set) == 0:
        val_set = None
    return train_set, val_set


def _prepare_run_dir(out: Path, *, resume: bool, overwrite: bool) -> None:
    import shutil

    from vpcli.errors import OutputError
    out = Path(out)
    is_run = (out / "config.yaml").exists()
    if resume:
        if not is_run:
            raise OutputError(f"{out} is not a vpcli run folder (no config.yaml)", "pass the folder a run wrote")
        return
    if out.exists() and any(out.iterdir()):
        if not is_run:
            raise OutputError(f"{out} exists and is not a vpcli run folder", "choose an empty or new --out folder")
        if not overwrite:
            raise OutputError(f"{out} already holds a run", "pass --resume to continue it or --overwrite to start over")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def train(*, method: str | None, data: str | None, out: Path, config: str | None = None,
          overrides: list[str] = (), resume: Path | None = None, init: str | None = None,
          batch_size: int | None = None, device: str = "cpu", seed: int | None = None,
          callback=None, overwrite: bool = False, **_: Any) -> dict[str, Any]:
    """Train ``method`` on ``data`` into the run folder ``out`` (or continue ``resume`` exactly)."""
    import torch
    import yaml

    from vpcli import registry
    from vpcli.config import load_yaml
    from vpcli.engine.run import config_differences, resolve_config
    from vpcli.engine.trainer import Trainer, TrainingError, load_weights
    from vpcli.errors import ConfigError
    from vpcli.io.atomic import write_text

    overrides = list(overrides)
    if data is not None:
        overrides.append(f"data.source={data}")
    if batch_size is not None:
        overrides.append(f"train.batch_size={batch_size}")
    if seed is not None:
        overrides.append(f"train.seed={seed}")
    run_dir = Path(resume) if resume is not None else Path(out)
    if resume is not None:
        _prepare_run_dir(run_dir, resume=True, overwrite=False)
        saved = load_yaml(run_dir / "config.yaml")
        if method is not None and method != saved.get("method"):
            raise TrainingError(f"{run_dir} is a {saved.get('method')} run, not {method}",
                                "resume with the same --method, or start a new run with --out")
        steps_override = [o for o in overrides if o.startswith("train.steps=")]
        if config is not None or [o for o in overrides if o not in steps_override]:
            wanted = resolve_config(method or saved["method"], config, overrides).to_dict()
            diff = [k for k in config_differences(saved, wanted) if k != "train.steps"]
            if diff:
                raise ConfigError(f"the config differs from the run in {run_dir}: {', '.join(diff)}",
                                  "resume without --config/--set (only train.steps may change), or start a new run")
        run_cfg = resolve_config(None, None, steps_override, base=saved)
    else:
        run_cfg = resolve_config(method, config, overrides)
    model_cfg = run_cfg.model_config()
    entry = registry.get("predictor", run_cfg.method)
    rank0 = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 touches the run folder
    if resume is None and rank0:
        _prepare_run_dir(run_dir, resume=False, overwrite=overwrite)
    torch.manual_seed(run_cfg.train.seed)  # model initialisation
    model = entry.builder(model_cfg)
    if not model.train_steps():
        raise ConfigError(f"{run_cfg.method} has nothing to train", "choose a trainable --method")
    if init is not None:
        from vpcli.weights import resolve
        load_weights(model, resolve(init))
    train_set, val_set = _build_datasets(run_cfg, run_cfg.train.seed)
    full = run_cfg.to_dict()
    if resume is None and rank0:
        write_text(run_dir / "config.yaml", yaml.safe_dump(full, sort_keys=False))
    trainer = Trainer(model, train_set, run_cfg.train, run_dir, val_set=val_set, full_config=full,
                      context_frames=run_cfg.data.context, device=device, callback=callback)
    if callback is not None and trainer.info.is_main:
        callback("start", {"method": run_cfg.method, "steps": run_cfg.train.steps, "run_dir": str(run_dir),
                           "train_clips": len(train_set), "val_clips": len(val_set) if val_set else 0,
                           "resumed_from": trainer.step if resume else None})
    try:
        return trainer.fit(resume=resume is not None)
    finally:
        from vpcli.engine.distributed import shutdown
        shutdown(trainer.info)


def data_split(folder: Path, out: Path, fractions: str = "0.8,0.1,0.1", *, overwrite: bool = False) -> dict[str, Any]:
    """Write ``train.txt``, ``val.txt``, ``test.txt`` for the clips in ``folder`` into ``out``."""
    from vpcli.data.clips import assign_splits
    from vpcli.io.atomic import check_overwrite, write_text
    try:
        fr = [float(v) for v in fractions.split(",")]
    except ValueError:
        raise UsageError(f"--fractions expects three numbers like 0.8,0.1,0.1, got {fractions!r}") from None
    splits = assign_splits(folder, fr)
    out = Path(out)
    for name in splits:  # check all three before writing any
        check_overwrite(out / f"{name}.txt", overwrite)
    for name, rels in splits.items():
        write_text(out / f"{name}.txt", "".join(f"{r}\n" for r in rels))
    return {"out": str(out), "counts": {k: len(v) for k, v in splits.items()}}


# --- weights export ---------------------------------------------------------------------------
def export_weights(run_dir: Path, name: str, *, out: Path | None = None, which: str = "best",
                   fp16: bool = False, license: str = "MIT", overwrite: bool = False) -> dict[str, Any]:
    """Write a run's weights as a bundle-ready safetensors file plus its manifest entry.

    ``out`` defaults to ``RUN_DIR/export/NAME.safetensors``; the entry is written beside it as
    ``NAME.manifest.yaml`` (a complete one-entry manifest, usable with ``--manifest``) with the
    sha256, the config the weights need, how they were trained and the last validation scores.
    """
    import hashlib
    import re

    import yaml
    from safetensors.torch import load_file, save_file

    from vpcli.config import load_yaml
    from vpcli.errors import InputError
    from vpcli.io.atomic import atomic_path, check_overwrite, write_text
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise UsageError(f"weights name {name!r} may hold only letters, digits, '.', '_' and '-'")
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.exists():
        raise InputError(f"{run_dir} is not a vpcli run folder (no config.yaml)", "pass the --out folder of vpcli train")
    ckpt = run_dir / "checkpoints" / f"{which}.safetensors"
    if which == "best" and not ckpt.exists():
        ckpt = run_dir / "checkpoints" / "last.safetensors"  # runs without validation have no best
    if not ckpt.exists():
        raise InputError(f"{run_dir} has no checkpoint {ckpt.name}", "train the run first")
    cfg = load_yaml(cfg_path)
    out = Path(out) if out is not None else run_dir / "export" / f"{name}.safetensors"
    entry_path = out.with_name(f"{name}.manifest.yaml")
    check_overwrite(out, overwrite)
    check_overwrite(entry_path, overwrite)
    tensors = load_file(str(ckpt))
    if fp16:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    with atomic_path(out, overwrite=overwrite) as tmp:
        save_file(tensors, str(tmp), metadata={"vpcli_name": name, "vpcli_method": str(cfg["method"])})
    sha = hashlib.sha256(out.read_bytes()).hexdigest()
    records = [__import__("json").loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
               if line.strip()] if (run_dir / "metrics.jsonl").exists() else []
    vals = [r for r in records if r.get("event") == "val"]
    end = next((r for r in reversed(records) if r.get("event") == "end"), {})
    d, t = cfg["data"], cfg["train"]
    entry = {
        "name": name, "task": "predictor", "arch": cfg["method"],
        "config": {"method": cfg["method"], "model": cfg.get("model", {}),
                   "data": {k: d[k] for k in ("context", "future", "size", "channels", "frame_step")}},
        "source": {"bundled": out.name}, "sha256": sha, "license": license,
        "trained_on": (f"{d['source']}, {end.get('step', t['steps'])} steps of batch {t['batch_size']}, "
                       f"seed {t['seed']}, vpcli {__version__} ({ckpt.name} of {run_dir.name})"),
        "metrics": {k: round(v, 6) for k, v in vals[-1].items() if k != "step" and k != "event"} if vals else {},
        "description": f"{cfg['method']} exported from a vpcli run" + (" (fp16)" if fp16 else ""),
    }
    write_text(entry_path, yaml.safe_dump({"version": 1, "weights": [entry]}, sort_keys=False))
    return {"weights": str(out), "manifest": str(entry_path), "sha256": sha, "bytes": out.stat().st_size}

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
    if resume is not None:
        trainer.load_checkpoint()  # before "start", which reports the step the run resumes from
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


# --- weights export and conversion -------------------------------------------------------------
def _weights_targets(out: Path, name: str, overwrite: bool) -> Path:
    """Check the weights name and that neither ``out`` nor its manifest ``NAME.manifest.yaml``
    beside it would be overwritten (before any work is done); return the manifest's path."""
    import re

    from vpcli.io.atomic import check_overwrite
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise UsageError(f"weights name {name!r} may hold only letters, digits, '.', '_' and '-'",
                         "choose another --name")
    entry_path = Path(out).with_name(f"{name}.manifest.yaml")
    check_overwrite(out, overwrite)
    check_overwrite(entry_path, overwrite)
    return entry_path


def _publish_weights(tensors: dict, out: Path, entry_path: Path, *, entry: dict[str, Any],
                     metadata: dict[str, str], fp16: bool, overwrite: bool) -> dict[str, Any]:
    """Write ``tensors`` as safetensors at ``out`` and the one-entry manifest ``entry_path``.

    ``entry`` holds every manifest field but ``source`` and ``sha256``, which are filled in here
    (the file is bundled beside the manifest). Both writes are atomic, and the weights file is
    published only once its manifest is written.
    """
    import yaml
    from safetensors.torch import save_file

    from vpcli.io.atomic import atomic_path, write_text
    from vpcli.weights.hashing import hash_file
    if fp16:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    out = Path(out)
    with atomic_path(out, overwrite=overwrite) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
        sha = hash_file(tmp)
        full: dict[str, Any] = {}
        for key, value in entry.items():
            if key == "license":  # the manifest schema's order: ..., config, source, sha256, license, ...
                full.update(source={"bundled": out.name}, sha256=sha)
            full[key] = value
        write_text(entry_path, yaml.safe_dump({"version": 1, "weights": [full]}, sort_keys=False))
    return {"weights": str(out), "manifest": str(entry_path), "sha256": sha, "bytes": out.stat().st_size}


def _predictor_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """What a predictor manifest entry's ``config`` holds: method, model, and the data shape."""
    d = cfg["data"]
    return {"method": cfg["method"], "model": cfg.get("model", {}),
            "data": {k: d[k] for k in ("context", "future", "size", "channels", "frame_step")}}


def export_weights(run_dir: Path, name: str, *, out: Path | None = None, which: str = "best",
                   fp16: bool = False, license: str = "MIT", overwrite: bool = False) -> dict[str, Any]:
    """Write a run's weights as a bundle-ready safetensors file plus its manifest entry.

    ``out`` defaults to ``RUN_DIR/export/NAME.safetensors``; the entry is written beside it as
    ``NAME.manifest.yaml`` (a complete one-entry manifest, usable with ``--manifest``) with the
    sha256, the config the weights need, how they were trained and the last validation scores.
    """
    from safetensors.torch import load_file

    from vpcli.config import load_yaml
    from vpcli.errors import InputError
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
    entry_path = _weights_targets(out, name, overwrite)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
               if line.strip()] if (run_dir / "metrics.jsonl").exists() else []
    vals = [r for r in records if r.get("event") == "val"]
    end = next((r for r in reversed(records) if r.get("event") == "end"), {})
    d, t = cfg["data"], cfg["train"]
    metric, mode = t.get("best_metric", "val/loss"), t.get("best_mode", "min")
    ranked = [r for r in vals if metric in r]
    if ckpt.name == "best.safetensors" and ranked:
        # the scores of the checkpoint being exported: the best validation, not the last one
        vals = [(min if mode == "min" else max)(ranked, key=lambda r: r[metric])]
    entry = {
        "name": name, "task": "predictor", "arch": cfg["method"], "config": _predictor_config(cfg),
        "license": license,
        "trained_on": (f"{d['source']}, {end.get('step', t['steps'])} steps of batch {t['batch_size']}, "
                       f"seed {t['seed']}, vpcli {__version__} ({ckpt.name} of {run_dir.name})"),
        "metrics": {k: round(v, 6) for k, v in vals[-1].items() if k != "step" and k != "event"} if vals else {},
        "description": f"{cfg['method']} exported from a vpcli run" + (" (fp16)" if fp16 else ""),
    }
    return _publish_weights(load_file(str(ckpt)), out, entry_path, entry=entry, fp16=fp16, overwrite=overwrite,
                            metadata={"vpcli_name": name, "vpcli_method": str(cfg["method"])})


# Checkpoint formats of other projects that `vpcli weights convert` reads: what the file is, where
# it comes from, and the licence its weights carry (recorded in the manifest entry unless --license).
WEIGHTS_FORMATS: dict[str, dict[str, str]] = {
    "slamp-official": {
        "what": "SLAMP (Akan et al., ICCV 2021) checkpoint of kaanakan/slamp, re-saved as per-component "
                "state dicts (recipe in vpcli/weights/convert_slamp.py); needs --config PRESET|FILE",
        "project": "kaanakan/slamp", "task": "predictor",
        "license": "unspecified (kaanakan/slamp states no licence)",
        "example": "vpcli weights convert --from slamp-official slamp_mnist.sd.pth --config slamp-mmnist "
                   "--out slamp-mmnist-official.safetensors",
    },
    "deeplab-vainf": {
        "what": "VainF/DeepLabV3Plus-Pytorch best_deeplabv3plus_*.pth ('model_state'); needs --arch",
        "project": "VainF/DeepLabV3Plus-Pytorch", "task": "segmenter",
        "license": "MIT (the LICENSE of VainF/DeepLabV3Plus-Pytorch)",
        "example": "vpcli weights convert --from deeplab-vainf best_deeplabv3plus_mobilenet_cityscapes_os16.pth "
                   "--arch mobilenet --out deeplabv3plus-mobilenet-cityscapes.safetensors",
    },
    "pwcnet-sniklaus": {
        "what": "PWC-Net network-default.pytorch of sniklaus/pytorch-pwc (a plain state dict)",
        "project": "sniklaus/pytorch-pwc", "task": "flow",
        "license": "CC-BY-NC-SA-4.0 (NVlabs PWC-Net terms, which sniklaus/pytorch-pwc defers to)",
        "example": "vpcli weights convert --from pwcnet-sniklaus network-default.pytorch --out pwcnet-sniklaus.safetensors",
    },
}
VAINF_ARCH_NAMES = ("mobilenet", "resnet50", "resnet101")


def _format_options(fmt: str, given: dict[str, Any]) -> None:
    """Refuse options that the format does not take, and require those it needs (names as on the CLI)."""
    takes = {"slamp-official": ("--config", "--set"),
             "deeplab-vainf": ("--arch", "--num-classes", "--output-stride", "--input-size")}.get(fmt, ())
    stray = [opt for opt, value in given.items() if value not in (None, ()) and opt not in takes]
    if stray:
        raise UsageError(f"{', '.join(stray)} {'does' if len(stray) == 1 else 'do'} not apply to --from {fmt}",
                         f"--from {fmt} takes {', '.join(takes) or 'no format options'}")
    need = {"slamp-official": "--config", "deeplab-vainf": "--arch"}.get(fmt)
    if need is not None and given[need] in (None, ()):
        choices = "a preset such as slamp-mmnist, or a YAML file" if need == "--config" else \
            " | ".join(VAINF_ARCH_NAMES)
        raise UsageError(f"--from {fmt} needs {need}", f"pass {need} ({choices}) matching the checkpoint")


def convert_weights(fmt: str, src: Path, out: Path, *, name: str | None = None, config: str | None = None,
                    overrides: list[str] = (), arch: str | None = None, num_classes: int | None = None,
                    output_stride: int | None = None, input_size: str | None = None, fp16: bool = False,
                    license: str | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Convert another project's checkpoint (``fmt``: a key of :data:`WEIGHTS_FORMATS`) to vpcli.

    Writes ``out`` (safetensors; metadata: source file name and sha256, format, task, arch and the
    model config as JSON) and, beside it, the one-entry manifest ``NAME.manifest.yaml`` that
    `vpcli weights export` writes too (``name`` defaults to the stem of ``out``). Every check runs
    before anything is written; nothing is written on failure.
    """
    import difflib

    from vpcli.errors import InputError
    from vpcli.weights.hashing import hash_file
    if fmt not in WEIGHTS_FORMATS:
        close = difflib.get_close_matches(fmt, list(WEIGHTS_FORMATS), n=1, cutoff=0.4)
        raise UsageError(f"unknown format {fmt!r}", (f"did you mean {close[0]!r}? " if close else "")
                         + f"formats: {', '.join(WEIGHTS_FORMATS)}")
    _format_options(fmt, {"--config": config, "--set": tuple(overrides), "--arch": arch,
                          "--num-classes": num_classes, "--output-stride": output_stride,
                          "--input-size": input_size})
    if arch is not None and arch.removeprefix("deeplabv3plus_") not in VAINF_ARCH_NAMES:
        close = difflib.get_close_matches(arch, VAINF_ARCH_NAMES, n=1)
        raise UsageError(f"unknown --arch {arch!r}", (f"did you mean {close[0]!r}? " if close else "")
                         + f"choose one of {', '.join(VAINF_ARCH_NAMES)}")
    if output_stride not in (None, 8, 16):
        raise UsageError(f"--output-stride must be 8 or 16, got {output_stride}",
                         "VainF's published checkpoints use 16 (the _os16 in their names)")
    src, out = Path(src), Path(out)
    if not src.is_file():
        raise InputError(f"{src} {'is a folder' if src.is_dir() else 'does not exist'}",
                         f"pass the checkpoint file of {WEIGHTS_FORMATS[fmt]['project']}")
    if out.suffix != ".safetensors":
        raise UsageError(f"--out {out} must end in .safetensors", f"e.g. --out {out.with_suffix('.safetensors').name}")
    name = out.stem if name is None else name
    entry_path = _weights_targets(out, name, overwrite)
    tensors, cfg, model_arch, what = _CONVERTERS[fmt](src, config=config, overrides=list(overrides), arch=arch,
                                                      num_classes=num_classes, output_stride=output_stride or 16,
                                                      input_size=input_size)
    src_sha = hash_file(src)
    info = WEIGHTS_FORMATS[fmt]
    entry = {
        "name": name, "task": info["task"], "arch": model_arch, "config": cfg,
        "license": license or info["license"],
        "trained_on": f"as published by {info['project']}: {src.name} (sha256 {src_sha}), {what}",
        "metrics": {},
        "description": f"{model_arch} converted from {info['project']} by vpcli {__version__} "
                       f"(vpcli weights convert --from {fmt})" + (" (fp16)" if fp16 else ""),
    }
    metadata = {"vpcli_name": name, "vpcli_format": fmt, "vpcli_task": info["task"], "vpcli_arch": model_arch,
                "vpcli_source": src.name, "vpcli_source_sha256": src_sha, "vpcli_config": json.dumps(cfg)}
    record = _publish_weights(tensors, out, entry_path, entry=entry, metadata=metadata, fp16=fp16, overwrite=overwrite)
    return {**record, "format": fmt, "source": str(src), "source_sha256": src_sha, "task": info["task"],
            "arch": model_arch, "tensors": len(tensors)}


def _convert_slamp(src: Path, *, config: str, overrides: list[str], **_: Any):
    import torch

    from vpcli import registry
    from vpcli.engine.run import resolve_config
    from vpcli.weights.convert_slamp import convert_slamp_official
    run_cfg = resolve_config(None, config, overrides)
    with torch.device("meta"):  # names and shapes to check against; no memory
        model = registry.get("predictor", run_cfg.method).builder(run_cfg.model_config())
    tensors = convert_slamp_official(src, model=model)
    what = f"model config {config}" + (f" with {' '.join(overrides)}" if overrides else "")
    return tensors, _predictor_config(run_cfg.to_dict()), run_cfg.method, what


def _convert_deeplab(src: Path, *, arch: str, num_classes: int | None, output_stride: int,
                     input_size: str | None, **_: Any):
    from vpcli.weights.convert_deeplab import convert_vainf
    vainf = f"deeplabv3plus_{arch.removeprefix('deeplabv3plus_')}"
    tensors, cfg = convert_vainf(src, vainf, num_classes=num_classes, output_stride=output_stride,
                                 input_size=parse_size(input_size or "1024x2048"))
    return tensors, cfg, "deeplabv3plus", f"VainF model {vainf}, output stride {output_stride}"


def _convert_pwcnet(src: Path, **_: Any):
    from vpcli.preprocess.pwcnet import PWCNetConfig, load_pwcnet_state
    cfg = PWCNetConfig()  # sniklaus' file has the published widths
    return load_pwcnet_state(src, cfg), cfg.to_dict(), "pwcnet", "first convolution's input flipped from BGR to RGB"


_CONVERTERS = {"slamp-official": _convert_slamp, "deeplab-vainf": _convert_deeplab, "pwcnet-sniklaus": _convert_pwcnet}

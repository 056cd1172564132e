"""Weights export and conversion: the engine behind `vpcli weights export` and `vpcli weights convert`.

`export_weights` turns a training run's checkpoint into a bundle-ready safetensors file;
`convert_weights` reads another project's checkpoint (a format of :data:`WEIGHTS_FORMATS`).
Both write the weights plus a complete one-entry manifest ``NAME.manifest.yaml`` beside them,
atomically, and only after every check has passed.

Importing this module is cheap (no torch): the CLI reads :data:`WEIGHTS_FORMATS` for its help.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vpcli import __version__
from vpcli.errors import UsageError


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
    """What a predictor manifest entry's ``config`` holds: method, model, the data shape, and where
    the method's label / flow inputs come from (so that predict on a plain clip uses the same)."""
    d = cfg["data"]
    out = {"method": cfg["method"], "model": cfg.get("model", {}),
           "data": {k: d[k] for k in ("context", "future", "size", "channels", "frame_step")}}
    if cfg.get("inputs"):
        out["inputs"] = cfg["inputs"]
    return out


def _run_model(cfg: dict[str, Any]):
    """The model a run's config builds (to read its parts and check shapes against)."""
    from vpcli import registry
    from vpcli.engine.run import resolve_config
    run_cfg = resolve_config(None, None, [], base=cfg)
    return registry.get("predictor", run_cfg.method).builder(run_cfg.model_config())


def _keep_parts(tensors: dict, cfg: dict[str, Any], parts: list[str]) -> dict:
    """Only the named parts' tensors of a run's inference weights (the method's ``parts``)."""
    model = _run_model(cfg)
    for p in parts:
        model._check_part(p)  # an unknown part names the valid ones
    return {k: v for k, v in tensors.items() if model.part_of(k) in parts}


def _take_parts(tensors: dict, cfg: dict[str, Any], specs: list[str]) -> tuple[dict, list[str]]:
    """``tensors`` with each ``PART=WEIGHTS`` of ``specs`` replaced by that part of WEIGHTS (a run
    folder, a file or a manifest name), checked to fit the run's model; and one phrase per spec
    saying where the part came from."""
    from vpcli.engine.train_runner import _init_file, parse_init
    from vpcli.engine.trainer import load_weights
    model = _run_model(cfg)
    out, notes = dict(tensors), []
    for parts, src in parse_init(specs, model.part_names()):
        if parts is None:
            raise UsageError(f"--init {src}: name the part to take (PART=WEIGHTS)",
                             f"parts of {cfg['method']}: {', '.join(model.part_names())}")
        file, _ = _init_file(src)
        load_weights(model, file, parts)  # names and shapes must fit, or a one-line error
        state = model.inference_state_dict(parts)
        out = {k: v for k, v in out.items() if model.part_of(k) not in parts}
        out.update({k: v.detach().cpu() for k, v in state.items()})
        notes.append(f"part {parts[0]} from {src}")
    return out, notes


def _steps_text(records: list[dict], end: dict, t: dict) -> str:
    """``1200 steps``, or ``150 pretrain + 300 main steps`` for a run of several stages."""
    done = [(r["completed"], r["step"]) for r in records if r.get("event") == "stage"]
    if len(done) > 1:
        return " + ".join(f"{n} {name}" for name, n in done) + " steps"
    return f"{end.get('step', t['steps'])} steps"


def export_weights(run_dir: Path, name: str, *, out: Path | None = None, which: str = "best",
                   fp16: bool = False, license: str = "MIT", overwrite: bool = False,
                   parts: list[str] | None = None, init: list[str] | None = None) -> dict[str, Any]:
    """Write a run's weights as a bundle-ready safetensors file plus its manifest entry.

    ``out`` defaults to ``RUN_DIR/export/NAME.safetensors``; the entry is written beside it as
    ``NAME.manifest.yaml`` (a complete one-entry manifest, usable with ``--manifest``) with the
    sha256, the config the weights need, how they were trained and the last validation scores.
    Inference weights only (training-only modules are never in them); ``parts`` keeps only those
    parts (e.g. HVP's ``structure``), recorded in the entry's ``parts``, for ``--init PART=NAME``.
    ``init`` (``PART=WEIGHTS``) takes a part from other weights instead: one file from two runs
    that trained a method's stages side by side.
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
    metric, mode = t.get("best_metric") or "val/loss", t.get("best_mode") or "min"
    from safetensors import safe_open
    with safe_open(str(ckpt), "pt") as f:  # the trainer records which metric chose the best checkpoint
        meta = f.metadata() or {}
    metric, mode = meta.get("metric", metric), meta.get("mode", mode)
    # best.safetensors is the best of its own stage (the trainer starts each stage's best anew)
    stage = meta.get("stage")
    ranked = [r for r in vals if metric in r and r.get("stage", stage) == stage]
    if ckpt.name == "best.safetensors" and ranked:
        # the scores of the checkpoint being exported: the best validation, not the last one
        vals = [(min if mode == "min" else max)(ranked, key=lambda r: r[metric])]
    entry = {
        "name": name, "task": "predictor", "arch": cfg["method"], "config": _predictor_config(cfg),
        "license": license,
        "trained_on": (f"{d['source']}, {_steps_text(records, end, t)} of batch {t['batch_size']}, "
                       f"seed {t['seed']}, vpcli {__version__} ({ckpt.name} of {run_dir.name})"),
        "metrics": {k: round(v, 6) for k, v in vals[-1].items()
                    if k not in ("step", "event", "stage") and isinstance(v, (int, float))} if vals else {},
        "description": f"{cfg['method']} exported from a vpcli run" + (" (fp16)" if fp16 else ""),
    }
    tensors = load_file(str(ckpt))
    if init:
        tensors, notes = _take_parts(tensors, cfg, list(init))
        entry["trained_on"] += "; " + "; ".join(notes)
    if parts:
        tensors = _keep_parts(tensors, cfg, list(parts))
        entry["parts"] = list(parts)
        entry["description"] += f", parts {', '.join(parts)}"
    return _publish_weights(tensors, out, entry_path, entry=entry, fp16=fp16, overwrite=overwrite,
                            metadata={"vpcli_name": name, "vpcli_method": str(cfg["method"])})


# Checkpoint formats of other projects that `vpcli weights convert` reads: what the file is, where
# it comes from, and the licence its weights carry (recorded in the manifest entry unless --license).
WEIGHTS_FORMATS: dict[str, dict[str, str]] = {
    "slamp-official": {
        "what": "SLAMP (Akan et al., ICCV 2021) checkpoint of kaanakan/slamp, re-saved as per-component "
                "state dicts (recipe in vpcli/weights/convert_slamp.py); needs --config PRESET|FILE",
        "project": "kaanakan/slamp", "task": "predictor",
        "license": "Apache-2.0 (the LICENSE of kaanakan/slamp)",
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
    from vpcli.io.sources import parse_size
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

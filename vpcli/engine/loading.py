"""Build a predictor and its config from whatever the user passed as ``--weights``.

One loader for every command that runs a trained predictor (`vpcli predict`, `vpcli eval`):

* a **run folder** of `vpcli train` (``config.yaml`` + ``checkpoints/best.safetensors``, else
  ``last.safetensors``);
* a **.safetensors file** that describes itself with ``config.yaml`` / ``config.json`` beside it
  or in its run folder (``RUN/checkpoints/x.safetensors`` -> ``RUN/config.yaml``);
* a **manifest name** (``vpcli weights list``): the entry's ``config`` (``method``, ``model``,
  ``data``, as `vpcli weights export` writes it) and its sha256-checked file;
* **nothing**: parameter-free methods (``copy-last``) build from the method alone. A method with
  trained parameters takes the first manifest entry whose ``arch`` is the method (``default``
  in the returned info says so), or fails naming the ways to pass weights.

The returned ``info`` is what meta.json / results.json record::

    {"name": entry name or None, "path": file or None, "sha256": hex or None,
     "kind": "run" | "file" | "manifest" | None, "default": True when picked from the manifest}

``kind`` is None only when no weights were used; then the config (context length, frame size)
is the method's default rather than something the weights fix.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from vpcli.errors import InputError, UsageError

WEIGHTS_FORMS = "RUN_DIR|FILE|NAME"


def find_config(ckpt: Path) -> Path | None:
    """``config.yaml`` / ``config.json`` beside a checkpoint, or in the run folder above it."""
    for folder in (ckpt.parent, ckpt.parent.parent):
        for name in ("config.yaml", "config.json"):
            if (folder / name).is_file():
                return folder / name
    return None


def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or text.startswith("~") or text.endswith(".safetensors")


def _from_entry(entry) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """A manifest entry -> (checkpoint, base config, info)."""
    from vpcli.weights import resolve_entry
    if entry.task != "predictor":
        raise UsageError(f"weights {entry.name!r} are {entry.task} weights, not a predictor",
                         "pass predictor weights (see `vpcli weights list`)")
    resolved = resolve_entry(entry)
    base = _entry_base(entry)
    info = {"name": entry.name, "path": str(resolved.path), "sha256": resolved.sha256, "kind": "manifest",
            "default": False}
    return resolved.path, base, info


def _entry_base(entry) -> dict[str, Any]:
    """A manifest entry's run config (method defaulting to its arch), as a ``resolve_config`` base."""
    base = dict(entry.load_config())
    base.setdefault("method", entry.arch)
    return _keep_run_keys(base)


def _from_path(text: str, registry_names: list[str]) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """A run folder or a checkpoint file -> (checkpoint, base config, info)."""
    from vpcli.config import load_yaml
    from vpcli.weights import file_sha256
    ckpt, cfg_path, kind = _locate_path(text, registry_names)
    base = load_yaml(cfg_path)
    return ckpt, base, {"name": None, "path": str(ckpt), "sha256": file_sha256(ckpt), "kind": kind,
                        "default": False}


def _locate_path(text: str, registry_names: list[str]) -> tuple[Path, Path, str]:
    """A run folder or a checkpoint file -> (checkpoint, its config file, "run" | "file"); nothing is read."""
    path = Path(text).expanduser()
    if not path.exists():
        hint = "pass a run folder of vpcli train, a .safetensors checkpoint beside its config.yaml, or a manifest name"
        if registry_names:
            import difflib
            close = difflib.get_close_matches(text, registry_names, n=1)
            if close:
                hint = f"did you mean the weights {close[0]!r}? " + hint
        raise InputError(f"weights {text} do not exist (not a file, a folder or a manifest name)", hint)
    if path.is_dir():
        cfg_path = path / "config.yaml"
        if not cfg_path.is_file():
            raise InputError(f"{path} is not a vpcli run folder (no config.yaml)",
                             "pass the --out folder of vpcli train, or a checkpoint file")
        ckpt = next((path / "checkpoints" / f"{w}.safetensors" for w in ("best", "last")
                     if (path / "checkpoints" / f"{w}.safetensors").is_file()), None)
        if ckpt is None:
            raise InputError(f"{path} has no checkpoints/best.safetensors or last.safetensors",
                             "train the run first (vpcli train --out RUN)")
        kind = "run"
    else:
        ckpt = path
        cfg_path = find_config(path)
        if cfg_path is None:
            raise InputError(f"no config.yaml beside {path} or in its run folder",
                             "a checkpoint describes itself with config.yaml next to it; pass the run folder instead")
        kind = "file"
    return ckpt, cfg_path, kind


def _default_entry(method: str, channels: int | None = None):
    """``(entry, why)``: the predictor entry of the manifests that predict uses without ``--weights``.

    Among the entries whose arch is ``method`` (and, when ``channels`` is given, whose config takes
    that many channels; else all of the method's), RGB clips get the first *bundled* one tagged
    ``works_on: [real-video]`` -- a user's clip is real footage unless they say otherwise, and
    only a bundled file is sure to load offline -- and otherwise the first in manifest order.
    ``why`` completes predict's one line ("..., the ``why``"). ``(None, "")`` if the method has none."""
    from vpcli.weights import load_manifests
    entries = [e for e in load_manifests() if e.task == "predictor" and e.arch == method]
    if channels is not None:
        same = [e for e in entries if int((e.load_config().get("data") or {}).get("channels", 0)) == channels]
        entries = same or entries
    if not entries:
        return None, ""
    kind = {1: "greyscale", 3: "RGB"}.get(channels, "")
    clips = f" for {kind} clips" if kind else ""
    if channels == 3:
        real = [e for e in entries if "real-video" in e.works_on and e.source.kind == "bundled"]
        if real:
            return real[0], f"bundled {method} weights{clips} made for real video"
    return entries[0], f"first {method} weights in the manifests{clips}"


def default_weights_line(info: dict[str, Any]) -> str:
    """The one line predict and eval print when they picked the default weights ``info`` (from
    :func:`load_predictor`): which, what its ``works_on`` says (unless the reason says it already), why."""
    why = info["why"]
    made = "" if "real video" in why else _works_on(info["name"])
    return f"no --weights given: using {info['name']}{made}, the {why}"


def _works_on(name: str) -> str:
    """`` (made for X; not for real video)``: what a default entry's ``works_on`` says, for the one line."""
    from vpcli.weights import load_manifests
    try:
        tags = load_manifests().get(name).works_on
    except Exception:  # noqa: BLE001 - the line is a courtesy; the entry itself loaded
        return ""
    if not tags:
        return ""
    made = ", ".join(t.replace("-", " ") for t in tags)
    return f" (made for {made}{'' if 'real-video' in tags else '; not for real video'})"


def _has_parameters(method: str, base: dict[str, Any], overrides: list[str]) -> bool:
    from vpcli import registry
    from vpcli.engine.run import resolve_config
    cfg = resolve_config(method, None, overrides, base=base)
    model = registry.get("predictor", cfg.method).builder(cfg.model_config())
    return any(p.numel() for p in model.parameters())


def load_predictor(method: str | None, weights: str | os.PathLike | None, *, device: str = "cpu",
                   overrides: list[str] = (), default_weights: bool = True, channels: int | None = None):
    """Build the predictor (in eval mode, on ``device``) and its RunConfig.

    Returns ``(model, config, info)`` (see the module docstring for ``info``). ``overrides`` are
    ``--set``-style ``key=value`` strings applied on top of the weights' config (e.g.
    ``data.context=4``). ``method`` must agree with the weights' method when both are given;
    without weights it is required. ``default_weights=False`` never looks in the manifests;
    ``channels`` (1 or 3) picks, among a method's manifest entries, the first one for that many channels.
    """
    from vpcli import registry
    from vpcli.engine.run import resolve_config
    from vpcli.engine.trainer import load_weights

    overrides = list(overrides)
    ckpt: Path | None = None
    info: dict[str, Any] = {"name": None, "path": None, "sha256": None, "kind": None, "default": False}
    if weights is None:
        if method is None:
            raise UsageError("no --method and no --weights given",
                             f"pass --method ({', '.join(registry.names('predictor'))}) or --weights {WEIGHTS_FORMS}")
        registry.get("predictor", method)  # unknown method: exit 2 listing the valid ones
        base: dict[str, Any] = {"method": method}
        if _has_parameters(method, base, overrides):
            entry, why = _default_entry(method, channels) if default_weights else (None, "")
            if entry is None:
                raise UsageError(f"no bundled weights for {method} yet — {method} has trained parameters: "
                                 f"pass --weights {WEIGHTS_FORMS}",
                                 "a run folder of vpcli train, a .safetensors checkpoint beside its config.yaml, "
                                 "or a manifest name (vpcli weights list)")
            ckpt, base, info = _from_entry(entry)
            info["default"] = True
            info["why"] = why
    else:
        if method is not None:
            registry.get("predictor", method)
        text = str(weights)
        registry_names: list[str] = []
        reg = None
        if not _looks_like_path(text):
            from vpcli.weights import load_manifests
            reg = load_manifests()
            registry_names = reg.names()
        if reg is not None and text in registry_names:
            ckpt, base, info = _from_entry(reg.get(text))
        else:
            ckpt, base, info = _from_path(text, registry_names)
    if method is not None and base.get("method") not in (None, method):
        raise UsageError(f"--method {method} does not match the weights, which are {base.get('method')!r}",
                         "drop --method or pass weights of that method")
    cfg = resolve_config(method if ckpt is None else None, None, overrides, base=base)
    entry = registry.get("predictor", cfg.method)
    # Initialisation is overwritten by the checkpoint; seeding keeps parameter-free builds and
    # any buffers a checkpoint does not hold reproducible anyway.
    torch.manual_seed(0)
    model = entry.builder(cfg.model_config())
    if ckpt is not None:
        load_weights(model, ckpt)
    return for_inference(model, device), cfg, info


def for_inference(model, device: str = "cpu"):
    """``model`` on ``device`` in eval mode, in the memory format its inference is fastest in there
    (channels-last on the CPU where the predictor sets ``inference_channels_last``), its eval-mode
    BatchNorms folded into their convolutions where it sets ``inference_fold_batchnorm`` (the
    model is then for inference only): what predict and eval run; benchmarks that time inference
    use it too."""
    model = model.to(device).eval()
    if getattr(model, "inference_fold_batchnorm", False):
        from vpcli.nn.fold import fold_batchnorm
        fold_batchnorm(model)  # eval-mode BatchNorm into the conv before it (vpcli.nn.fold)
    if device == "cpu" and getattr(model, "inference_channels_last", False):
        model = model.to(memory_format=torch.channels_last)  # see the predictor's inference_channels_last
    return model


def context_of(weights: str | os.PathLike) -> int:
    """The context length that ``weights`` (a run folder, a checkpoint beside its config, or a
    manifest name) were trained with: what ``--context WEIGHTS`` gives a baseline."""
    from vpcli.config import load_yaml
    from vpcli.engine.run import resolve_config
    text, names = str(weights), []
    if not _looks_like_path(text):
        from vpcli.weights import load_manifests
        reg = load_manifests()
        names = reg.names()
        if text in names:
            return int(resolve_config(None, None, [], base=_entry_base(reg.get(text))).data.context)
    base = load_yaml(_locate_path(text, names)[1])  # the config only: the checkpoint is not read or hashed
    return int(resolve_config(None, None, [], base=base).data.context)


def _keep_run_keys(base: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in base.items() if k in ("method", "data", "model", "train", "inputs")}


__all__ = ["WEIGHTS_FORMS", "context_of", "default_weights_line", "find_config", "for_inference", "load_predictor"]

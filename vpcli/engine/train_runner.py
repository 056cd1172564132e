"""The engine behind `vpcli train`: resolve the run config, build model and data, run the trainer.

Order matters for what a failed start leaves behind: the config is resolved, the model built,
``--init`` weights loaded, the data opened, the inputs' sources checked and the device claimed
*before* anything is written, so a start that fails leaves no run folder (or, with
``--overwrite``, the previous run untouched). Only then is the run folder created (or
emptied) and ``config.yaml`` written.

``--init`` takes ``WEIGHTS`` (every inference part) or ``PART=WEIGHTS`` (one part, e.g.
``dynamics=runs/stage1`` to start SADM's inpainting stage from a trained dynamics model),
repeatable; ``WEIGHTS`` is a run folder, a .safetensors file or a manifest name.
``--stage NAME`` runs one stage of the method's plan (default: every stage not yet completed).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from vpcli.engine.options import check_device, check_output_folder
from vpcli.errors import ConfigError, InputError, OutputError, UsageError

Callback = Callable[[str, dict[str, Any]], None]


@dataclass
class TrainOptions:
    """Everything `vpcli train` takes besides the callback (each flag declared once, here)."""

    out: Path = Path("run")
    method: str | None = None
    data: str | None = None
    val: str | None = None
    config: str | None = None
    overrides: list[str] = field(default_factory=list)
    resume: Path | None = None
    init: list[str] = field(default_factory=list)
    stage: str | None = None
    labels_from: str | None = None
    flow_from: str | None = None
    batch_size: int | None = None
    device: str = "cpu"
    seed: int | None = None
    overwrite: bool = False

    def __post_init__(self):
        if isinstance(self.init, str):
            self.init = [self.init]
        if self.batch_size is not None and self.batch_size < 1:
            raise UsageError(f"--batch-size must be >= 1, got {self.batch_size}", "pass --batch-size 1 or more")
        if self.resume is not None and self.overwrite:
            raise UsageError("--resume and --overwrite exclude each other", "drop one of them")
        if self.resume is None:  # the run folder to create (with --resume, --out is not used)
            check_output_folder(self.out)
        check_device(self.device)

    def all_overrides(self) -> list[str]:
        out = list(self.overrides)
        for key, value in (("data.source", self.data), ("data.val_source", self.val),
                           ("train.batch_size", self.batch_size),
                           ("train.seed", self.seed), ("inputs.labels", self.labels_from),
                           ("inputs.flow", self.flow_from)):
            if value is not None:
                out.append(f"{key}={value}")
        return out


def build_datasets(run_cfg, seed: int, needs: frozenset[str] = frozenset({"rgb"})):
    """Train and validation datasets for a run config, and one sentence saying where validation
    comes from (validation may be absent only when ``data.val_clips`` is 0 or nothing can be held
    out); the companions the method needs from the data (its inputs whose source is
    ``companion``) are required.

    A folder source is split by the hash of each clip's path (80/10/10, :mod:`vpcli.data.clips`);
    when that leaves no validation clip (a small folder), one training clip is held out instead
    (the one whose path hashes lowest), and a folder of a single clip holds out its last window
    of frames. ``data.val_source`` (``--val DIR``) names a validation folder instead, every clip
    of it used.
    """
    from vpcli.data.clips import make_dataset
    from vpcli.engine.inputs import companions_wanted
    d = run_cfg.data
    wanted = companions_wanted(needs, run_cfg.inputs)
    common = dict(context=d.context, future=d.future, frame_step=d.frame_step, size=tuple(d.size),
                  channels=d.channels, seed=seed)
    if wanted:
        common["companions"] = wanted
    synthetic = d.source.startswith("synthetic:")
    train_kw = {"num_clips": d.train_clips} if synthetic and d.train_clips else {}
    if not synthetic and d.window_stride:
        train_kw["window_stride"] = d.window_stride  # validation keeps disjoint windows
    if d.val_source and d.val_clips == 0:
        raise ConfigError("data.val_source (--val) is set but data.val_clips is 0",
                          "drop --val, or set data.val_clips to the number of validation windows (>= 1)")
    no_clips = InputError(f"{d.source} yields no training clips of {d.length} frames",
                          "add longer clips, or lower data.context / data.future / data.frame_step")
    if synthetic:
        train_set = make_dataset(d.source, split="train", **common, **train_kw)
        if not d.val_clips:
            return train_set, None, "no validation (data.val_clips is 0)"
        val_set = make_dataset(d.source, split="val", num_clips=d.val_clips, **common)
        return train_set, val_set, f"validation: {len(val_set)} generated clips"
    train_set = _split_or_none(d.source, "train", common, train_kw)
    if d.val_source:
        if train_set is None:
            train_set = _split_or_none(d.source, None, common, train_kw)  # --val: every clip trains
        if train_set is None:
            raise no_clips
        val_set = make_dataset(d.val_source, split=None, **common)  # every clip of the folder
        return train_set, val_set, f"validation: {len(val_set)} windows from {d.val_source}"
    val_set = _split_or_none(d.source, "val", common, {}) if d.val_clips else None
    if train_set is not None and (val_set is not None or not d.val_clips):
        note = (f"validation: {len(val_set)} windows of the source's val split" if val_set is not None
                else "no validation (data.val_clips is 0)")
        return train_set, val_set, note
    # A small folder: the hash split left no training or no validation clip.
    found = [ds for ds in (train_set, val_set) if ds is not None]
    note = ""
    if not found:
        test_set = _split_or_none(d.source, "test", common, {})
        if test_set is None:  # then no clip is long enough: say how many are too short
            make_dataset(d.source, split=None, **common)
            raise no_clips
        found = [test_set]
        note = f"every clip of {d.source} falls in the test part of the hash split, so they train; "
    pool = [s for ds in found for s in ds.sources]
    return _hold_out(pool, found[0].span, common, train_kw, d.val_clips, note)


def _split_or_none(source: str, split: str | None, common: dict, kw: dict):
    """The ``split`` of a folder source, or None when it holds no clip (long enough)."""
    from vpcli.data.clips import make_dataset
    try:
        ds = make_dataset(source, split=split, **common, **kw)
    except InputError as e:
        if not e.message.startswith("no clip is long enough"):  # a missing folder, no videos at all, ...
            raise
        return None  # the split selected no clip
    return ds if len(ds) else None


def _hold_out(sources: list, span: int, common: dict, train_kw: dict, val_clips: int, note: str):
    """Clips of a folder whose hash split gave no validation (or no training) clip: hold out one
    clip, or the last window of a single clip (see :func:`build_datasets`); ``span``: source frames
    per window."""
    import dataclasses
    import hashlib

    from vpcli.data.clips import ClipDataset
    if not val_clips:
        return ClipDataset([s.record for s in sources], split=None, **common, **train_kw), None, \
            note + "no validation (data.val_clips is 0)"
    if len(sources) >= 2:
        held = min(sources, key=lambda s: hashlib.sha256(s.rel.encode("utf-8")).digest())
        train = ClipDataset([s.record for s in sources if s is not held], split=None, **common, **train_kw)
        val = ClipDataset([held.record], split=None, **common)
        return train, val, note + (f"validation: held out clip {held.rel} ({len(val)} windows), since the "
                                   "folder's hash split gave none (--val DIR chooses a folder)")
    (only,) = sources
    if only.num_frames < 2 * span:
        train = ClipDataset([only.record], split=None, **common, **train_kw)
        return train, None, note + (f"no validation: {only.rel} is the only clip and has {only.num_frames} "
                                    f"frames, fewer than two windows of {span} (pass --val DIR)")
    rec = only.record
    cut = rec.start + only.num_frames - span  # the last window of frames is validation, the rest training
    train = ClipDataset([dataclasses.replace(rec, end=cut)], split=None, **common, **train_kw)
    val = ClipDataset([dataclasses.replace(rec, start=cut, end=cut + span)], split=None, **common)
    return train, val, note + (f"validation: the last {span} frames of {only.rel} (frames {cut}..{cut + span - 1}), "
                               "trained on the frames before them (--val DIR chooses a folder)")


def check_run_dir(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse an --out that cannot take a run, before anything is built (nothing is written)."""
    out = Path(out) if resume else check_output_folder(out)  # a file there (or above) is a usage error
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


def _make_run_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()) and overwrite:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def parse_init(specs: list[str], part_names: list[str]) -> list[tuple[list[str] | None, str]]:
    """``["WEIGHTS", "PART=WEIGHTS"]`` -> [(None, WEIGHTS), ([PART], WEIGHTS)]; a part must exist."""
    out = []
    for spec in specs:
        part, sep, src = spec.partition("=")
        if sep and part in part_names:
            out.append(([part], src))
        elif sep and "/" not in part and not Path(spec).exists():
            import difflib
            close = difflib.get_close_matches(part, part_names, n=1)
            raise UsageError(f"--init {spec}: the model has no part {part!r}",
                             (f"did you mean {close[0]!r}? " if close else "") + f"parts: {', '.join(part_names)}")
        else:
            out.append((None, spec))
    return out


def _init_file(src: str) -> tuple[Path, list[str] | None]:
    """A run folder, a file or a manifest name -> the weights file (manifest files sha256-checked)
    and the parts it holds when a manifest entry says (``vpcli weights export --part``)."""
    path = Path(src).expanduser()
    if path.is_dir():
        for name in ("best.safetensors", "last.safetensors"):
            if (path / "checkpoints" / name).is_file():
                return path / "checkpoints" / name, None
        raise InputError(f"--init {src}: the run folder has no checkpoints/best.safetensors or last.safetensors",
                         "train it first, or pass a .safetensors file")
    from vpcli.weights import load_manifests, resolve
    if not path.exists():
        reg = load_manifests()
        if src in reg.names():
            entry = reg.get(src)
            return resolve(src), list(entry.parts) if entry.parts else None
    return resolve(src), None


def train(options: TrainOptions, *, callback: Callback | None = None) -> dict[str, Any]:
    """Train into the run folder ``options.out`` (or continue ``options.resume`` exactly)."""
    import torch
    import yaml

    from vpcli import registry
    from vpcli.config import load_yaml
    from vpcli.engine.inputs import InputFiller
    from vpcli.engine.run import config_differences, resolve_config
    from vpcli.engine.trainer import Trainer, TrainingError, load_weights
    from vpcli.io.atomic import write_text

    o = options
    overrides = o.all_overrides()
    resume = o.resume is not None
    run_dir = Path(o.resume) if resume else Path(o.out)
    check_run_dir(run_dir, resume=resume, overwrite=o.overwrite)
    if resume:
        saved = load_yaml(run_dir / "config.yaml")
        if o.method is not None and o.method != saved.get("method"):
            raise TrainingError(f"{run_dir} is a {saved.get('method')} run, not {o.method}",
                                "resume with the same --method, or start a new run with --out")
        free = ("train.steps=", "train.stage_steps.")  # what a resume may change: how long it trains
        kept = [x for x in overrides if x.startswith(free)]
        if o.config is not None or [x for x in overrides if x not in kept]:
            # What the run would become, against the saved config resolved the same way: with
            # --config the file/preset plus --set, without it the saved config plus --set (so only
            # the keys a --set really changes are named, not every preset default).
            base = resolve_config(None, None, [], base=saved).to_dict()
            wanted = (resolve_config(o.method or saved["method"], o.config, overrides) if o.config is not None
                      else resolve_config(None, None, overrides, base=saved)).to_dict()
            diff = [k for k in config_differences(base, wanted)
                    if not (k == "train.steps" or k.startswith("train.stage_steps"))]
            if diff:
                raise ConfigError(f"the config differs from the run in {run_dir}: {', '.join(diff)}",
                                  "resume without --config/--set (only train.steps may change), or start a new run")
        run_cfg = resolve_config(None, None, kept, base=saved)
    else:
        run_cfg = resolve_config(o.method, o.config, overrides)
    entry = registry.get("predictor", run_cfg.method)
    rank0 = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 touches the run folder
    torch.manual_seed(run_cfg.train.seed)  # model initialisation
    model = entry.builder(run_cfg.model_config())
    if not model.training_plan():
        raise ConfigError(f"{run_cfg.method} has nothing to train", "choose a trainable --method")
    if o.stage is not None:
        model.stage(o.stage)  # an unknown stage is an error naming the valid ones
    init_parts: list[str] = []
    for parts, src in parse_init(o.init, model.part_names()):
        file, held = _init_file(src)
        load_weights(model, file, parts or held)
        init_parts += parts or held or model.part_names()
    needs = frozenset(getattr(model, "inputs", frozenset({"rgb"}))) | frozenset(getattr(model, "training_inputs", ()))
    train_set, val_set, val_note = build_datasets(run_cfg, run_cfg.train.seed, needs)
    filler = InputFiller(needs, run_cfg.inputs, method=run_cfg.method, device=o.device, where=run_cfg.data.source)
    full = run_cfg.to_dict()
    trainer = Trainer(model, train_set, run_cfg.train, run_dir, val_set=val_set, full_config=full,
                      context_frames=run_cfg.data.context, device=o.device, callback=callback, inputs=filler,
                      init_parts=tuple(dict.fromkeys(init_parts)))
    if resume:
        trainer.load_checkpoint()  # before "start", which reports the step the run resumes from
    elif rank0:  # everything is built: only now does the run folder appear
        _make_run_dir(run_dir, o.overwrite)
        write_text(run_dir / "config.yaml", yaml.safe_dump(full, sort_keys=False))
    try:
        return _fit(trainer, o, callback, run_cfg, train_set, val_set, filler, run_dir, resume, val_note)
    except BaseException:
        # A fresh run that fails (or is stopped) before its first checkpoint is not a run: remove
        # it, so that the rerun is not refused as "already holds a run" with nothing to resume.
        if not resume and rank0 and not any(run_dir.glob("checkpoints/*_step*/state.pt")):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _fit(trainer, o: TrainOptions, callback, run_cfg, train_set, val_set, filler, run_dir: Path,
         resume: bool, val_note: str = "") -> dict[str, Any]:
    if callback is not None and trainer.info.is_main:
        callback("start", {"method": run_cfg.method, "steps": trainer.total, "run_dir": str(run_dir),
                           "train_clips": len(train_set), "val_clips": len(val_set) if val_set else 0,
                           "validation": val_note,
                           "resumed_from": trainer.step if resume else None, "stage": trainer.stage.name,
                           "stages": [s.name for s in trainer.plan], "inputs": filler.describe(),
                           "stage_totals": {s.name: run_cfg.train.stage_steps.get(s.name, run_cfg.train.steps)
                                            for s in trainer.plan}})
    try:
        summary = trainer.fit(resume=resume, stage=o.stage)
        if summary.get("status") == "interrupted":  # stopped by a signal, checkpoint saved: say which
            import signal
            summary["signal"] = signal.Signals(getattr(trainer, "stop_signal", signal.SIGINT)).name
        return summary
    finally:
        from vpcli.engine.distributed import shutdown
        shutdown(trainer.info)

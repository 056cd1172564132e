"""One training loop for every method.

The method supplies its training plan (:mod:`vpcli.trainable`: stages of named optimisation
steps, frozen parts, training-only modules, a per-iteration cache, the validation metric); the
engine owns the optimisers, learning-rate schedules and gradient clipping of every step
(``train.per_step.NAME``), scheduled sampling, seeding, validation, best-checkpoint selection,
logging, signals, NaN detection, data parallelism and exact resume.

Run folder::

    config.yaml                    the full resolved config
    stages.json                    the stages completed so far and the one in progress
    metrics.jsonl                  one JSON line per log step, per validation, per stage end
    checkpoints/000003_train_step0000120/   the newest training checkpoint (serial, stage, step),
                                   published as one folder
        model.safetensors          every module, training-only ones included
        state.pt                   optimisers, schedulers, RNG, position, stage (tensors and
                                   plain containers only: read with weights_only=True)
    checkpoints/last.safetensors   inference weights (no training-only modules) of the newest checkpoint
    checkpoints/best.safetensors   inference weights at the best validation score of the current stage
    samples/step_XXXXXXX.mp4       context | ground truth | prediction at each validation

A training checkpoint is written into a hidden temporary folder and renamed as a whole, so the
weights and the optimiser state always come from the same step, whenever the process is
killed; the model file's metadata and the state both record the step and resume checks that
they agree. Older step folders are removed once a newer one is complete.

Data parallel (torchrun): every optimisation step's parameters are wrapped in their own
``DistributedDataParallel`` (the other steps' parameters are ignored by it), so each step's
gradients are all-reduced in buckets that overlap its backward pass, also when one iteration
runs several steps over different parameters (adversarial methods: D, then G). A step's DDP
reduces only during its own backward: the gradients G's loss leaves on D's parameters are never
reduced, and D's step zeroes them before its own backward.
"""
from __future__ import annotations

import json
import math
import random
import re
import shutil
import signal
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset

from vpcli.engine import distributed as dist_util
from vpcli.engine.sampler import EpochBatchSampler
from vpcli.engine.schedules import LRSchedule, inverse_sigmoid
from vpcli.errors import ConfigError, VpcliError
from vpcli.io.atomic import atomic_dir, atomic_path, write_text
from vpcli.trainable import (
    IterationCache,
    Stage,
    Trainable,
    TrainState,
    TrainStep,
    all_step_names,
    check_plan,
    state_mismatch,
)


class TrainingError(VpcliError):
    """Training cannot go on (non-finite loss, incompatible resume state)."""


@dataclass
class OptimConfig:
    kind: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    momentum: float = 0.0

    def __post_init__(self):
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")

    def build(self, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        if self.kind == "adam":
            return torch.optim.Adam(params, lr=self.lr, betas=self.betas, eps=self.eps, weight_decay=self.weight_decay)
        if self.kind == "adamw":
            return torch.optim.AdamW(params, lr=self.lr, betas=self.betas, eps=self.eps, weight_decay=self.weight_decay)
        if self.kind == "rmsprop":
            return torch.optim.RMSprop(params, lr=self.lr, eps=self.eps, weight_decay=self.weight_decay,
                                       momentum=self.momentum)
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)


@dataclass
class StepConfig:
    """Per named step (``train.per_step.NAME``): overrides of ``train.optim`` and
    ``train.schedule``, its own gradient clipping, and how often it runs."""

    optim: dict[str, Any] = field(default_factory=dict)
    schedule: dict[str, Any] = field(default_factory=dict)
    grad_clip: float | None = None
    every: int | None = None

    def __post_init__(self):
        if self.every is not None and self.every < 1:
            raise ValueError(f"every must be >= 1, got {self.every}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be > 0 or null, got {self.grad_clip}")


@dataclass
class TrainConfig:
    steps: int = 1000                    # iterations per stage (see stage_steps)
    batch_size: int = 16                 # global batch; each of N processes takes batch_size / N
    optim: OptimConfig = field(default_factory=OptimConfig)
    # Per named step settings, e.g. {"d": {"optim": {"lr": 0.0002}, "every": 1}} (names checked
    # against the method's plan). `step_optim` is the older spelling of per_step.NAME.optim.
    per_step: dict[str, StepConfig] = field(default_factory=dict)
    step_optim: dict[str, dict] = field(default_factory=dict)
    stage_steps: dict[str, int] = field(default_factory=dict)   # stage -> iterations (default: steps)
    schedule: LRSchedule = field(default_factory=LRSchedule)
    grad_clip: float | None = None       # max global L2 norm per step; None = off
    scheduled_sampling_k: float = 0.0    # inverse-sigmoid decay constant; 0 = always teacher-force
    log_every: int = 10
    val_every: int = 0                   # 0 = no validation
    val_batches: int = 2
    checkpoint_every: int = 0            # 0 = at validations and at the end only
    best_metric: str | None = None       # default: val/ + the method's validation metric
    best_mode: Literal["min", "max"] | None = None
    num_workers: int = 0
    seed: int = 0
    amp: Literal["none", "bf16", "auto"] = "none"  # auto: bf16 where this machine runs it fast (vpcli.precision)

    def __post_init__(self):
        for name in ("steps", "batch_size", "log_every", "val_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be > 0 or null, got {self.grad_clip}")
        self.per_step = {k: v if isinstance(v, StepConfig) else StepConfig(**v) for k, v in self.per_step.items()}
        for k, v in self.stage_steps.items():
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"stage_steps.{k} must be an integer >= 1, got {v!r}")

    def step_config(self, name: str) -> StepConfig:
        sc = self.per_step.get(name, StepConfig())
        if name in self.step_optim:
            sc = StepConfig({**self.step_optim[name], **sc.optim}, sc.schedule, sc.grad_clip, sc.every)
        return sc

    def check_names(self, model: Trainable) -> None:
        """Step and stage names in this config must be the method's (a typo names the closest)."""
        import difflib
        steps = all_step_names(model)
        stages = [s.name for s in model.training_plan()]
        for section, names, valid in (("per_step", self.per_step, steps), ("step_optim", self.step_optim, steps),
                                      ("stage_steps", self.stage_steps, stages)):
            for name in names:
                if name not in valid:
                    close = difflib.get_close_matches(name, valid, n=1)
                    raise ConfigError(f"train.{section}.{name}: {model.name or type(model).__name__} has no "
                                      f"{'stage' if section == 'stage_steps' else 'training step'} {name!r}",
                                      (f"did you mean {close[0]!r}? " if close else "")
                                      + f"valid: {', '.join(valid) or '(none)'}")


Callback = Callable[[str, dict[str, Any]], None]


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy_key": torch.from_numpy(np_state[1].astype(np.int64)),
            "numpy_rest": [int(np_state[2]), int(np_state[3]), float(np_state[4])],
            "python": list(random.getstate()[1]), "python_gauss": random.getstate()[2]}


def _set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    pos, has_gauss, cached = s["numpy_rest"]
    np.random.set_state(("MT19937", s["numpy_key"].numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate((3, tuple(s["python"]), s["python_gauss"]))


def _batch_to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _inference_state(model: torch.nn.Module, parts=None) -> dict[str, torch.Tensor]:
    state = model.inference_state_dict(parts) if isinstance(model, Trainable) else model.state_dict()
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def save_weights(model: torch.nn.Module, path: Path, metadata: dict[str, str] | None = None, *,
                 parts: list[str] | None = None, full: bool = False) -> None:
    """Inference weights (no training-only modules; only ``parts`` when given) as safetensors;
    ``full`` saves every module (training checkpoints)."""
    tensors = ({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()} if full
               else _inference_state(model, parts))
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors, or a TrainingError saying the file is not one."""
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise TrainingError(f"{path} does not exist", "pass a checkpoint vpcli wrote") from None
    except Exception as e:  # safetensors raises its own error types for garbage, empty and cut files
        raise TrainingError(f"{path} is not a readable safetensors file ({type(e).__name__}: {e})",
                            "pass a .safetensors checkpoint written by vpcli; the file may be damaged") from None


def load_weights(model: torch.nn.Module, path: Path, parts: list[str] | None = None) -> None:
    """Load inference weights (all parts, or the named ones) from safetensors; names and shapes must
    match exactly (dtype may differ). Training-only modules are neither needed nor loaded."""
    state = read_safetensors(Path(path))
    if isinstance(model, Trainable):
        try:
            model.load_inference_state(state, parts, where=str(path))
        except VpcliError as e:
            raise TrainingError(e.message, e.hint) from None
        return
    own = model.state_dict()
    detail = state_mismatch(own, state, [k for k in state if k not in own])
    if detail:
        raise TrainingError(f"{path} does not fit this model ({detail})",
                            "use weights made by the same method and model config")
    model.load_state_dict(state)


class _StepModule(torch.nn.Module):
    """One optimisation step as a module, so that DDP wraps exactly that step's forward + backward."""

    def __init__(self, model: Trainable, step: TrainStep):
        super().__init__()
        self.model, self._loss = model, step.loss

    def forward(self, batch: dict[str, Any], state: TrainState):
        return self._loss(batch, state)


STEP_DIR = re.compile(r"(\d{6,})_[A-Za-z0-9_-]+_step(\d{7,})$")  # SERIAL_STAGE_stepSTEP


def _trains_channels_last(model, bf16: bool) -> bool:
    """Whether ``model`` trains in channels-last on this CPU: under bf16 where it sets
    ``train_channels_last_bf16``; in fp32 where it sets ``train_channels_last_fp32_avx512`` and the
    CPU has AVX-512 (on AVX2 channels-last fp32 training was 1.08-1.17x slower)."""
    if bf16:
        return bool(getattr(model, "train_channels_last_bf16", False))
    return bool(getattr(model, "train_channels_last_fp32_avx512", False)) and \
        torch.backends.cpu.get_cpu_capability().startswith("AVX512")


class Trainer:
    def __init__(self, model: Trainable, train_set: Dataset, cfg: TrainConfig, run_dir: str | Path, *,
                 val_set: Dataset | None = None, full_config: dict[str, Any] | None = None,
                 context_frames: int | None = None, device: str = "cpu", callback: Callback | None = None,
                 inputs: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                 init_parts: tuple[str, ...] = ()):
        """``inputs(batch)`` completes a batch with what the method needs that the data does not
        carry (labels from a segmenter, flow from an estimator: :mod:`vpcli.engine.inputs`).
        ``init_parts``: parts loaded from other weights (``--init``) before training; inference
        checkpoints hold them and the parts the run's stages train, never a part left at its
        random initialisation."""
        self.cfg, self.run_dir, self.callback = cfg, Path(run_dir), callback or (lambda e, r: None)
        self.info = dist_util.init_from_env(device)
        self.device = torch.device(f"cuda:{self.info.local_rank}" if device.startswith("cuda") and self.info.enabled
                                   else device)
        if cfg.batch_size % self.info.world:
            raise TrainingError(f"batch size {cfg.batch_size} is not divisible by {self.info.world} processes",
                                "choose a global batch size that is a multiple of --nproc-per-node")
        self.model = model.to(self.device)
        self.plan = check_plan(model)
        cfg.check_names(model)
        dist_util.broadcast_module(self.model, self.info)
        self.train_set, self.val_set = train_set, val_set
        self.full_config, self.context_frames = full_config or {}, context_frames
        self.fill_inputs = inputs or (lambda b: b)
        self.amp_bf16 = False  # what train.amp resolved to on this machine
        if cfg.amp != "none":
            from vpcli import precision
            chosen, warning = precision.resolve("auto" if cfg.amp == "auto" else "bf16", self.device.type,
                                                what="train.amp", instead="--set train.amp=auto or none")
            self.amp_bf16 = chosen == "bf16"
            if warning:
                self.callback("warning", {"message": warning})
        self.channels_last = self.device.type == "cpu" and _trains_channels_last(model, self.amp_bf16)
        if self.channels_last:
            # Before the optimisers exist, so their state takes the same layout; checkpoints are
            # saved contiguous (save_weights), and a resumed run converts the same way. fit()
            # hands the model back contiguous (same parameter objects), as it came.
            self.model = self.model.to(memory_format=torch.channels_last)
        metric, mode = model.validation_metric
        self.best_metric = cfg.best_metric or f"val/{metric}"
        self.best_mode = cfg.best_mode or mode
        self.sampler = EpochBatchSampler(len(train_set), cfg.batch_size // self.info.world, seed=cfg.seed,
                                         rank=self.info.rank, world=self.info.world)
        self.completed: list[str] = []
        self.init_parts = tuple(init_parts)
        self._resumed = False  # load_checkpoint() ran (fit(resume=True) then does not load again)
        self._stop = False
        self._begin_stage(self.plan[0].name if self.plan else "train")

    # --- stages ---------------------------------------------------------------------------------
    def _begin_stage(self, name: str) -> None:
        """Fresh position, optimisers and schedules for stage ``name``; its frozen parts frozen."""
        self.stage = self.model.stage(name) if self.plan else Stage(name, ())
        self.model.set_frozen(self.stage.frozen)
        self.steps: list[TrainStep] = list(self.stage.steps)
        self.total = self.cfg.stage_steps.get(name, self.cfg.steps)
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler] = {}
        self.step_cfg = {s.name: self.cfg.step_config(s.name) for s in self.steps}
        frozen = set(self.stage.frozen)
        for s in self.steps:
            sc = self.step_cfg[s.name]
            params = [p for p in s.params() if p.requires_grad]
            if not params:
                raise TrainingError(f"step {s.name!r} of stage {name!r} has no trainable parameters"
                                    + (f" (frozen: {', '.join(sorted(frozen))})" if frozen else ""),
                                    "the method's training plan is inconsistent")
            ocfg = OptimConfig(**{**vars(self.cfg.optim), **sc.optim})
            self.optimizers[s.name] = ocfg.build(params)
            sched = LRSchedule(**{**vars(self.cfg.schedule), **sc.schedule})
            self.schedulers[s.name] = sched.build(self.optimizers[s.name], self.total)
        self.step_modules = self._wrap_steps()
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.best: float | None = None

    def _wrap_steps(self) -> dict[str, torch.nn.Module]:
        """Each step's forward through its own DDP (multi-process) or directly (one process)."""
        mods: dict[str, torch.nn.Module] = {}
        for s in self.steps:
            mod = _StepModule(self.model, s)
            if self.info.enabled:
                mine = {id(p) for p in s.params()}
                ignore = [f"model.{n}" for n, p in self.model.named_parameters() if id(p) not in mine]
                ignore += [f"model.{n}" for n, _ in self.model.named_buffers()]
                torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(mod, ignore)
                ids = [self.info.local_rank] if self.device.type == "cuda" else None
                # Only a step that declares parameters its loss may leave unused pays for DDP's
                # per-iteration graph traversal (find_unused_parameters). static_graph is not used:
                # with several DDPs over one model its delayed reductions also fire in the other
                # steps' backward passes (measured: two-process GAN training no longer equals one).
                # Buffers are ignored above: each rank keeps its own statistics, as before.
                mod = torch.nn.parallel.DistributedDataParallel(mod, device_ids=ids,
                                                                find_unused_parameters=s.unused_params)
            mods[s.name] = mod
        return mods

    def trained_parts(self) -> list[str] | None:
        """The parts inference checkpoints hold: those loaded by ``--init`` and those some stage
        begun in this run trains (does not freeze); None for a one-part method (everything)."""
        names = self.model.part_names() if isinstance(self.model, Trainable) else []
        if len(names) < 2:
            return None
        done = set(self.init_parts)
        for st in self.plan:
            if st.name in self.completed or st.name == self.stage.name:
                done |= set(names) - set(st.frozen)
        return [p for p in names if p in done]

    def _write_stages(self) -> None:
        if self.info.is_main:
            write_text(self.run_dir / "stages.json", json.dumps(
                {"completed": self.completed, "current": self.stage.name,
                 "plan": [s.name for s in self.plan]}, indent=2) + "\n")

    # --- checkpoints ------------------------------------------------------------------------
    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def _step_dirs(self) -> list[Path]:
        if not self.ckpt_dir.is_dir():
            return []
        found = [p for p in self.ckpt_dir.iterdir() if p.is_dir() and STEP_DIR.match(p.name)]
        return sorted(found, key=lambda p: int(STEP_DIR.match(p.name).group(1)))

    def save_checkpoint(self) -> None:
        if not self.info.is_main:
            return
        meta = {"step": str(self.step), "stage": self.stage.name,
                "method": str(self.full_config.get("method", self.model.name))}
        state = {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                 "best": self.best, "rng": _rng_state(), "stage": self.stage.name, "completed": list(self.completed),
                 "init_parts": list(self.init_parts),
                 "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                 "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()}}
        # A counter that grows over the run's whole life (stages restart their step at 0).
        older = self._step_dirs()
        n = int(STEP_DIR.match(older[-1].name).group(1)) + 1 if older else 1
        final = self.ckpt_dir / f"{n:06d}_{self.stage.name}_step{self.step:07d}"
        with atomic_dir(final, overwrite=True) as tmp:
            save_weights(self.model, tmp / "model.safetensors", meta, full=True)
            torch.save(state, tmp / "state.pt")
        for old in older:
            shutil.rmtree(old, ignore_errors=True)
        save_weights(self.model, self.ckpt_dir / "last.safetensors", meta, parts=self.trained_parts())
        self._write_stages()

    def _remove_stale_temporaries(self) -> None:
        """Hidden half-written checkpoint folders a killed process left (never a published one)."""
        if self.info.is_main and self.ckpt_dir.is_dir():
            for p in self.ckpt_dir.iterdir():
                if p.is_dir() and p.name.startswith(".") and p.name.endswith(".part") and STEP_DIR.match(
                        p.name[1:].split(".", 1)[0]):
                    shutil.rmtree(p, ignore_errors=True)

    def _checkpoint_pair(self) -> tuple[Path, Path, bool]:
        """The newest consistent (weights, state) pair, and whether it is the step-folder layout."""
        for folder in reversed(self._step_dirs()):
            weights, state = folder / "model.safetensors", folder / "state.pt"
            if weights.is_file() and state.is_file():
                return weights, state, True
        weights, state = self.ckpt_dir / "last.safetensors", self.ckpt_dir / "last.state.pt"
        if weights.is_file() and state.is_file():  # the layout of vpcli <= 0.1 (a pair of files)
            return weights, state, False
        raise TrainingError(f"{self.run_dir} has no checkpoint to resume from",
                            f"expected a folder {self.ckpt_dir}/NNNNNN_STAGE_stepNNNNNNN with model.safetensors and state.pt")

    def load_checkpoint(self) -> None:
        weights, state_path, folder_layout = self._checkpoint_pair()
        self._remove_stale_temporaries()
        try:
            state = torch.load(state_path, weights_only=True)
        except Exception as e:
            raise TrainingError(f"{state_path} is not a vpcli training state file; nothing was loaded "
                                f"({type(e).__name__})", "resume a run folder that vpcli train wrote") from None
        if not isinstance(state, dict) or "step" not in state or "optimizers" not in state:
            raise TrainingError(f"{state_path} is not a vpcli training state file; nothing was loaded",
                                "resume a run folder that vpcli train wrote")
        with safe_open(str(weights), "pt") as f:
            w_step = (f.metadata() or {}).get("step")
        if w_step is not None and int(w_step) != int(state["step"]):
            raise TrainingError(f"{weights} holds step {w_step} but {state_path} step {state['step']}: the checkpoint "
                                "pair is inconsistent", "resume from a run folder whose checkpoint was written whole")
        stage = state.get("stage", self.plan[0].name if self.plan else "train")
        if stage != self.stage.name:
            self._begin_stage(stage)
        self.completed = list(state.get("completed", []))
        self.init_parts = tuple(state.get("init_parts", self.init_parts))
        tensors = read_safetensors(weights)
        if folder_layout:
            missing = [k for k in self.model.state_dict() if k not in tensors]
            if missing:
                raise TrainingError(f"{weights} does not fit this model (missing {missing[:2]})",
                                    "resume with the method and config that made the run")
            self.model.load_state_dict(tensors)
        else:
            load_weights(self.model, weights)
        if set(state["optimizers"]) != set(self.optimizers):
            raise TrainingError(f"{state_path} holds optimisers {sorted(state['optimizers'])}, this method has "
                                f"{sorted(self.optimizers)}", "resume with the method that made the run")
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in self.schedulers.items():
            s.load_state_dict(state["schedulers"][k])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.best = state["best"]
        _set_rng_state(state["rng"])
        self._resumed = True

    # --- logging ------------------------------------------------------------------------------
    def _log(self, event: str, record: dict[str, Any]) -> None:
        if not self.info.is_main:
            return
        if len(self.plan) > 1:
            record = {"stage": self.stage.name, **record}
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"event": event, **record}) + "\n")
        self.callback(event, record)

    # --- signals ------------------------------------------------------------------------------
    def _request_stop(self, signum, frame) -> None:
        self._stop = True
        self.stop_signal = signum  # which one (SIGINT, SIGTERM) decides the CLI's exit code: 130 / 143

    def _install_signals(self) -> dict[int, Any]:
        old = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                old[sig] = signal.signal(sig, self._request_stop)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return old

    # --- the loop -----------------------------------------------------------------------------
    def _loader(self) -> DataLoader:
        self.sampler.set_position(self.epoch, self.batch_in_epoch)
        if hasattr(self.train_set, "set_epoch"):  # per-epoch augmentation draws (random crops, ...)
            self.train_set.set_epoch(self.epoch)
        # The loader draws its workers' base seed from `generator`; giving it its own generator keeps
        # the global RNG (which the model's noise uses) untouched, so a resumed run stays exact.
        g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.epoch)
        return DataLoader(self.train_set, batch_sampler=self.sampler, num_workers=self.cfg.num_workers,
                          generator=g, pin_memory=self.device.type == "cuda")

    def _state(self, cache: IterationCache | None = None) -> TrainState:
        return TrainState(step=self.step, total_steps=self.total, epoch=self.epoch, stage=self.stage.name,
                          teacher_forcing=inverse_sigmoid(self.step, self.cfg.scheduled_sampling_k),
                          cache=cache or IterationCache(self.model.cache_keys))

    def _train_iteration(self, batch: dict[str, Any]) -> dict[str, float]:
        cfg = self.cfg
        state = self._state()
        amp = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.amp_bf16 else nullcontext()
        logs: dict[str, float] = {}
        self.model.train()
        for s in self.steps:
            sc = self.step_cfg[s.name]
            if self.step % (sc.every or s.every):
                continue
            opt = self.optimizers[s.name]
            opt.zero_grad(set_to_none=True)
            with amp:
                losses = self.step_modules[s.name](batch, state)
            prefix = "" if len(self.steps) == 1 else f"{s.name}/"
            for term, value in losses.items():
                v = float(value.detach())
                if not math.isfinite(v):
                    raise TrainingError(f"loss term {prefix}{term} is {v} at step {self.step}",
                                        "lower the learning rate or enable grad_clip; the last good checkpoint "
                                        f"is in {self.ckpt_dir}")
                logs[f"{prefix}{term}"] = v
            losses["loss"].backward()
            clip = sc.grad_clip if sc.grad_clip is not None else cfg.grad_clip
            if clip is not None:
                params = [p for g in opt.param_groups for p in g["params"]]
                logs[f"{prefix}grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, clip))
            opt.step()
            self.schedulers[s.name].step()
            logs[f"{prefix}lr"] = self.schedulers[s.name].get_last_lr()[0]
        state.cache.clear()
        if cfg.scheduled_sampling_k > 0:
            logs["teacher_forcing"] = state.teacher_forcing
        return logs

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        if self.val_set is None or len(self.val_set) == 0:
            return {}
        self.model.eval()
        loader = DataLoader(self.val_set, batch_size=max(1, self.cfg.batch_size // self.info.world),
                            shuffle=False, num_workers=0)
        state = self._state()
        sums: dict[str, float] = {}
        n = 0
        first = None
        for i, batch in enumerate(loader):
            if i >= self.cfg.val_batches:
                break
            batch = self.fill_inputs(_batch_to(batch, self.device))
            first = first or batch
            for k, v in self.model.validate(batch, state).items():
                sums[k] = sums.get(k, 0.0) + v
            n += 1
        record = {f"val/{k}": v / max(n, 1) for k, v in sums.items()}
        if first is not None and self.info.is_main:
            self._write_sample(first)
        return record

    def _write_sample(self, batch: dict[str, Any]) -> None:
        """context | ground truth | prediction for the first validation clip, if the model predicts frames."""
        c = self.context_frames
        rgb = batch.get("rgb")
        if (c is None or rgb is None or rgb.shape[1] <= c or not hasattr(self.model, "predict")
                or "frames" not in getattr(self.model, "outputs", ())):
            return
        context = {k: (v[:1, :c] if torch.is_tensor(v) and v.dim() >= 2 else v) for k, v in batch.items()}
        if torch.is_tensor(context.get("flow")):
            context["flow"] = context["flow"][:, :c - 1]
        try:
            g = torch.Generator(device=self.device).manual_seed(self.cfg.seed)
            steps = [r.frames[:, 0] for r in self.model.predict(context, rgb.shape[1] - c, 1, g)]
        except NotImplementedError:
            return
        from vpcli.io.composite import write_composite

        def to_u8(x: torch.Tensor) -> np.ndarray:  # (T, C, H, W) [0,1] -> (T, H, W, 3) uint8
            x = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x
        pred = torch.stack(steps, 1)[0]
        write_composite(self.run_dir / "samples" / f"step_{self.step:07d}.mp4", to_u8(rgb[0, :c]),
                        ground_truth=to_u8(rgb[0, c:]), predictions={self.model.name or "prediction": to_u8(pred)},
                        fps=4)

    def _maybe_best(self, record: dict[str, float]) -> None:
        value = record.get(self.best_metric)
        if value is None:
            return
        better = self.best is None or (value < self.best if self.best_mode == "min" else value > self.best)
        if better:
            self.best = value
            if self.info.is_main:
                save_weights(self.model, self.ckpt_dir / "best.safetensors",
                             {"step": str(self.step), "stage": self.stage.name, "metric": self.best_metric,
                              "mode": self.best_mode, self.best_metric: str(value)}, parts=self.trained_parts())

    def fit(self, resume: bool = False, stage: str | None = None) -> dict[str, Any]:
        """Train every stage of the plan in order (or only ``stage``) for its number of
        iterations; returns a summary. Stops cleanly (checkpoint saved) on SIGINT/SIGTERM."""
        if not self.plan:
            raise TrainingError(f"{self.model.name or type(self.model).__name__} has nothing to train",
                                "choose a trainable --method")
        if self.info.is_main:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        if resume and not self._resumed:  # the caller may have loaded it already
            self.load_checkpoint()
        if self.stage.name in self.completed and self.step < self.total:  # resumed with more steps
            self.completed.remove(self.stage.name)
        names = [s.name for s in self.plan]
        if stage is not None:
            self.model.stage(stage)  # unknown name -> error with the valid ones
            if stage in self.completed:
                raise TrainingError(f"stage {stage!r} of {self.run_dir} is already complete",
                                    "run the next stage, or start a new run with --out")
            todo = [stage]
        else:
            todo = [n for n in names if n not in self.completed]
        if not resume:
            # Seed after the model is built (its init used the caller's seed) so that the training
            # randomness is the same for a fresh run and for the state a resume restores.
            torch.manual_seed(self.cfg.seed + self.info.rank)
            np.random.seed(self.cfg.seed + self.info.rank)
            random.seed(self.cfg.seed + self.info.rank)
        old_handlers = self._install_signals()
        status, t0 = "finished", time.perf_counter()
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        try:
            for name in todo:
                if name != self.stage.name:
                    self._begin_stage(name)
                if self.info.is_main:
                    self._write_stages()
                status = self._run_stage()
                if status == "interrupted":
                    break
                self.completed.append(name)
                self._log("stage", {"completed": name, "step": self.step})
                self.save_checkpoint()
            dist_util.barrier(self.info)
        finally:
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
            if self.channels_last:
                self.model.to(memory_format=torch.contiguous_format)
        summary = {"status": status, "step": self.step, "epoch": self.epoch, "best": self.best,
                   "stage": self.stage.name, "completed_stages": list(self.completed),
                   "seconds": time.perf_counter() - t0, "run_dir": str(self.run_dir)}
        self._log("end", summary)
        return summary

    def _run_stage(self) -> str:
        cfg = self.cfg
        status, t_last, s_last = "finished", time.perf_counter(), self.step
        while self.step < self.total:
            for batch in self._loader():
                logs = self._train_iteration(self.fill_inputs(_batch_to(batch, self.device)))
                self.step += 1
                self.batch_in_epoch += 1
                if self.info.is_main:  # every step, for a progress display; metrics.jsonl keeps log_every
                    self.callback("step", {"step": self.step, "stage": self.stage.name, **logs})
                if self.step % cfg.log_every == 0 or self.step == self.total:
                    now = time.perf_counter()
                    rate = (self.step - s_last) / max(now - t_last, 1e-9)
                    t_last, s_last = now, self.step
                    self._log("train", {"step": self.step, "epoch": self.epoch, "steps_per_s": rate, **logs})
                if cfg.val_every and self.step % cfg.val_every == 0:
                    record = self.validate()
                    self._maybe_best(record)
                    self._log("val", {"step": self.step, **record})
                    self.save_checkpoint()
                elif cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.save_checkpoint()
                if dist_util.any_rank(self._stop, self.info):
                    status = "interrupted"
                    break
                if self.step >= self.total:
                    break
            else:
                self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                continue
            break
        if status == "interrupted":
            self.save_checkpoint()
        return status

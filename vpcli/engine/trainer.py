"""One training loop for every method.

The method supplies named optimisation steps (``Predictor.train_steps``); the engine owns the
optimisers, learning-rate schedules, gradient clipping, scheduled sampling, seeding, validation,
best-checkpoint selection, logging, signals, NaN detection and exact resume.

Run folder::

    config.yaml                 the full resolved config
    metrics.jsonl               one JSON line per log step and per validation
    checkpoints/last.safetensors, last.state.pt   weights; optimiser/scheduler/RNG state and position
    checkpoints/best.safetensors                  the best validation score so far
    samples/step_XXXXXXX.mp4    context | ground truth | prediction at each validation
"""
from __future__ import annotations

import json
import math
import random
import signal
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset

from vpcli.engine import distributed as dist_util
from vpcli.engine.sampler import EpochBatchSampler
from vpcli.engine.schedules import LRSchedule, inverse_sigmoid
from vpcli.errors import VpcliError
from vpcli.io.atomic import atomic_path
from vpcli.predictors.base import Predictor, TrainState


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
class TrainConfig:
    steps: int = 1000
    batch_size: int = 16                 # global batch; each of N processes takes batch_size / N
    optim: OptimConfig = field(default_factory=OptimConfig)
    # Per named step overrides of `optim`, e.g. {"d": {"lr": 0.0002}} for an adversarial method.
    step_optim: dict[str, dict] = field(default_factory=dict)
    schedule: LRSchedule = field(default_factory=LRSchedule)
    grad_clip: float | None = None       # max global L2 norm per step; None = off
    scheduled_sampling_k: float = 0.0    # inverse-sigmoid decay constant; 0 = always teacher-force
    log_every: int = 10
    val_every: int = 0                   # 0 = no validation
    val_batches: int = 2
    checkpoint_every: int = 0            # 0 = at validations and at the end only
    best_metric: str = "val/loss"
    best_mode: Literal["min", "max"] = "min"
    num_workers: int = 0
    seed: int = 0
    amp: Literal["none", "bf16"] = "none"

    def __post_init__(self):
        for name in ("steps", "batch_size", "log_every", "val_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be > 0 or null, got {self.grad_clip}")


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


def save_weights(model: torch.nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load a safetensors state dict; names and shapes must match exactly (dtype may differ)."""
    state, own = load_file(str(path)), model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
             if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        detail = "; ".join(f"{what} {items[:2]}" for what, items in
                           (("missing", missing), ("unexpected", unexpected), ("shape", wrong)) if items)
        raise TrainingError(f"{path} does not fit this model ({detail})",
                            "use weights made by the same method and model config")
    model.load_state_dict(state)


class Trainer:
    def __init__(self, model: Predictor, train_set: Dataset, cfg: TrainConfig, run_dir: str | Path, *,
                 val_set: Dataset | None = None, full_config: dict[str, Any] | None = None,
                 context_frames: int | None = None, device: str = "cpu", callback: Callback | None = None):
        self.cfg, self.run_dir, self.callback = cfg, Path(run_dir), callback or (lambda e, r: None)
        self.info = dist_util.init_from_env(device)
        self.device = torch.device(f"cuda:{self.info.local_rank}" if device.startswith("cuda") and self.info.enabled
                                   else device)
        if cfg.batch_size % self.info.world:
            raise TrainingError(f"batch size {cfg.batch_size} is not divisible by {self.info.world} processes",
                                "choose a global batch size that is a multiple of --nproc-per-node")
        self.model = model.to(self.device)
        dist_util.broadcast_module(self.model, self.info)
        self.train_set, self.val_set = train_set, val_set
        self.full_config, self.context_frames = full_config or {}, context_frames
        self.steps = model.train_steps()
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler] = {}
        for s in self.steps:
            ocfg = OptimConfig(**{**vars(cfg.optim), **cfg.step_optim.get(s.name, {})})
            self.optimizers[s.name] = ocfg.build(s.params())
            self.schedulers[s.name] = cfg.schedule.build(self.optimizers[s.name], cfg.steps)
        self.sampler = EpochBatchSampler(len(train_set), cfg.batch_size // self.info.world, seed=cfg.seed,
                                         rank=self.info.rank, world=self.info.world)
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self._resumed = False  # load_checkpoint() ran (fit(resume=True) then does not load again)
        self.best: float | None = None
        self._stop = False

    # --- checkpoints ------------------------------------------------------------------------
    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def save_checkpoint(self) -> None:
        if not self.info.is_main:
            return
        meta = {"step": str(self.step), "method": str(self.full_config.get("method", self.model.name))}
        save_weights(self.model, self.ckpt_dir / "last.safetensors", meta)
        state = {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                 "best": self.best, "rng": _rng_state(),
                 "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                 "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()}}
        with atomic_path(self.ckpt_dir / "last.state.pt") as tmp:
            torch.save(state, tmp)

    def load_checkpoint(self) -> None:
        weights, state_path = self.ckpt_dir / "last.safetensors", self.ckpt_dir / "last.state.pt"
        if not weights.exists() or not state_path.exists():
            raise TrainingError(f"{self.run_dir} has no checkpoint to resume from",
                                f"expected {weights} and {state_path}")
        load_weights(self.model, weights)
        state = torch.load(state_path, weights_only=True)
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
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"event": event, **record}) + "\n")
        self.callback(event, record)

    # --- signals ------------------------------------------------------------------------------
    def _request_stop(self, signum, frame) -> None:
        self._stop = True

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

    def _train_iteration(self, batch: dict[str, Any]) -> dict[str, float]:
        cfg = self.cfg
        state = TrainState(step=self.step, total_steps=cfg.steps, epoch=self.epoch,
                           teacher_forcing=inverse_sigmoid(self.step, cfg.scheduled_sampling_k))
        amp = (torch.autocast(self.device.type, dtype=torch.bfloat16) if cfg.amp == "bf16" else nullcontext())
        logs: dict[str, float] = {}
        self.model.train()
        for s in self.steps:
            opt = self.optimizers[s.name]
            opt.zero_grad(set_to_none=True)
            with amp:
                losses = self.model(batch, step=s.name, state=state)
            prefix = "" if len(self.steps) == 1 else f"{s.name}/"
            for term, value in losses.items():
                v = float(value.detach())
                if not math.isfinite(v):
                    raise TrainingError(f"loss term {prefix}{term} is {v} at step {self.step}",
                                        "lower the learning rate or enable grad_clip; the last good checkpoint "
                                        f"is in {self.ckpt_dir}")
                logs[f"{prefix}{term}"] = v
            losses["loss"].backward()
            params = s.params()
            dist_util.average_gradients(params, self.info)
            if cfg.grad_clip is not None:
                logs[f"{prefix}grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
            opt.step()
            self.schedulers[s.name].step()
            logs[f"{prefix}lr"] = self.schedulers[s.name].get_last_lr()[0]
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
        state = TrainState(step=self.step, total_steps=self.cfg.steps, epoch=self.epoch)
        sums: dict[str, float] = {}
        n = 0
        first = None
        for i, batch in enumerate(loader):
            if i >= self.cfg.val_batches:
                break
            batch = _batch_to(batch, self.device)
            first = first or batch
            for k, v in self.model.validate(batch, state).items():
                sums[k] = sums.get(k, 0.0) + v
            n += 1
        record = {f"val/{k}": v / max(n, 1) for k, v in sums.items()}
        if first is not None and self.info.is_main:
            self._write_sample(first)
        return record

    def _write_sample(self, batch: dict[str, Any]) -> None:
        """context | ground truth | prediction for the first validation clip, if the model predicts."""
        c = self.context_frames
        rgb = batch.get("rgb")
        if c is None or rgb is None or rgb.shape[1] <= c:
            return
        context = {k: (v[:1, :c] if torch.is_tensor(v) and v.dim() >= 2 else v) for k, v in batch.items()}
        try:
            g = torch.Generator(device=self.device).manual_seed(self.cfg.seed)
            steps = [x[:, 0] for x in self.model.predict(context, rgb.shape[1] - c, 1, g)]
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
        value = record.get(self.cfg.best_metric)
        if value is None:
            return
        better = self.best is None or (value < self.best if self.cfg.best_mode == "min" else value > self.best)
        if better:
            self.best = value
            if self.info.is_main:
                save_weights(self.model, self.ckpt_dir / "best.safetensors",
                             {"step": str(self.step), self.cfg.best_metric: str(value)})

    def fit(self, resume: bool = False) -> dict[str, Any]:
        """Train to ``cfg.steps``; returns a summary. Stops cleanly (checkpoint saved) on SIGINT/SIGTERM."""
        cfg = self.cfg
        if self.info.is_main:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            if not self._resumed:  # the caller may have loaded it already
                self.load_checkpoint()
        else:
            # Seed after the model is built (its init used the caller's seed) so that the training
            # randomness is the same for a fresh run and for the state a resume restores.
            torch.manual_seed(cfg.seed + self.info.rank)
            np.random.seed(cfg.seed + self.info.rank)
            random.seed(cfg.seed + self.info.rank)
        old_handlers = self._install_signals()
        status, t0, t_last, s_last = "finished", time.perf_counter(), time.perf_counter(), self.step
        try:
            while self.step < cfg.steps:
                for batch in self._loader():
                    logs = self._train_iteration(_batch_to(batch, self.device))
                    self.step += 1
                    self.batch_in_epoch += 1
                    if self.step % cfg.log_every == 0 or self.step == cfg.steps:
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
                    if self.step >= cfg.steps:
                        break
                else:
                    self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                    continue
                break
            self.save_checkpoint()
            dist_util.barrier(self.info)
        finally:
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
        summary = {"status": status, "step": self.step, "epoch": self.epoch, "best": self.best,
                   "seconds": time.perf_counter() - t0, "run_dir": str(self.run_dir)}
        self._log("end", summary)
        return summary

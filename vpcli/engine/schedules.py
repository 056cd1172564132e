"""Learning-rate and scheduled-sampling schedules used by the training engine."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch


@dataclass
class LRSchedule:
    """``constant``; ``step`` (x gamma every ``step_size`` steps, the papers' step decays);
    ``multistep`` (x gamma at each of ``milestones``); ``cosine`` to ``min_factor``; all with an
    optional linear ``warmup``."""

    kind: Literal["constant", "step", "multistep", "cosine"] = "constant"
    step_size: int = 0
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    min_factor: float = 0.0
    warmup: int = 0

    def __post_init__(self):
        if self.kind == "step" and self.step_size <= 0:
            raise ValueError(f"schedule kind 'step' needs step_size > 0, got {self.step_size}")
        if self.kind == "multistep" and not self.milestones:
            raise ValueError("schedule kind 'multistep' needs milestones")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma}")

    def factor(self, step: int, total: int) -> float:
        warm = min(1.0, (step + 1) / self.warmup) if self.warmup > 0 else 1.0
        if self.kind == "step":
            return warm * self.gamma ** (step // self.step_size)
        if self.kind == "multistep":
            return warm * self.gamma ** sum(step >= m for m in self.milestones)
        if self.kind == "cosine":
            t = min(1.0, step / max(1, total))
            return warm * (self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * t)))
        return warm

    def build(self, optimizer: torch.optim.Optimizer, total: int) -> torch.optim.lr_scheduler.LambdaLR:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: self.factor(s, total))


def inverse_sigmoid(step: int, k: float) -> float:
    """Scheduled sampling (Bengio et al. 2015): teacher-forcing probability k / (k + exp(step / k)).

    ``k`` >= 1 sets how slowly the model moves from ground-truth inputs to its own predictions.
    """
    if k <= 0:
        return 1.0
    return k / (k + math.exp(min(step / k, 700.0)))

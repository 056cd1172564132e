"""The Predictor contract every method implements (DESIGN.md, "Predictor contract").

A predictor is an ``nn.Module`` registered by name with a config dataclass. It declares the
inputs it needs (``rgb``, ``labels``, ``flow``), how it trains, and how it predicts:

* ``train_steps()`` lists the named optimisation steps of one training iteration. A plain
  method has one step, ``"model"``, over all parameters, whose loss is ``loss(batch, state)``.
  Adversarial methods list several (for example ``d``, ``m``, ``g``), each with its own
  parameters and loss; the engine owns the optimisers, clipping and schedules for each.
* ``forward(batch, step=..., state=...)`` dispatches to the step's loss so that the engine (and a
  distributed wrapper) calls every step through ``__call__``.
* ``predict(context, horizon, samples, generator)`` **yields** one future step at a time,
  a tensor ``(B, S, C, H, W)`` in [0, 1], so a horizon of thousands of frames runs in constant
  memory. The context is encoded once and shared by the ``S`` samples, which run as one batch.

Batches follow DESIGN.md: ``rgb`` float32 ``(B, T, C, H, W)`` in [0, 1], ``labels`` int64
``(B, T, H, W)``, ``flow`` float32 ``(B, T-1, 2, H, W)`` forward flow.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

Batch = dict[str, Any]
Losses = dict[str, torch.Tensor]


@dataclass
class TrainState:
    """What a loss may depend on besides the batch: progress and scheduled values."""

    step: int = 0
    total_steps: int = 1
    epoch: int = 0
    # Probability of feeding the ground truth (not the model's own output) at the next step;
    # the engine sets it from the inverse-sigmoid scheduled-sampling schedule (1.0 = off).
    teacher_forcing: float = 1.0
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainStep:
    """One named optimisation step: its parameters and the loss that trains them."""

    name: str
    params: Callable[[], list[nn.Parameter]]
    loss: Callable[[Batch, TrainState], Losses]


class Predictor(nn.Module):
    name: ClassVar[str] = ""
    inputs: ClassVar[frozenset[str]] = frozenset({"rgb"})

    def __init__(self, config: Any):
        super().__init__()
        self.config = config

    # --- training ----------------------------------------------------------------------------
    def loss(self, batch: Batch, state: TrainState) -> Losses:
        """Loss terms for the single-step case; must contain ``"loss"`` (the total)."""
        raise NotImplementedError(f"{type(self).__name__} defines no loss")

    def train_steps(self) -> list[TrainStep]:
        return [TrainStep("model", lambda: [p for p in self.parameters() if p.requires_grad], self.loss)]

    def forward(self, batch: Batch, step: str = "model", state: TrainState | None = None) -> Losses:
        state = state or TrainState()
        for s in self.train_steps():
            if s.name == step:
                return s.loss(batch, state)
        raise KeyError(f"{type(self).__name__} has no training step {step!r}")

    # --- inference ---------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, context: Batch, horizon: int, samples: int = 1,
                generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} cannot predict")

    def validate(self, batch: Batch, state: TrainState) -> dict[str, float]:
        """Validation numbers for one batch; by default the training loss terms."""
        return {k: float(v) for k, v in self(batch, self.train_steps()[0].name, state).items()}


def has_components(model) -> bool:
    """Whether the predictor's ``predict`` takes ``components=`` (a dict it refills at every step
    with that step's parts: flow, mask, the heads -- SLAMP and SLAMP-Baseline)."""
    try:
        return "components" in inspect.signature(model.predict).parameters
    except (TypeError, ValueError):
        return False

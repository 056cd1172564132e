"""Reference baselines: copy-last-frame (and its label-map twin), and a deterministic ConvLSTM predictor.

``copy-last`` is the floor every paper reports against. ``convlstm`` (Shi et al. 2015, small) is a
trainable deterministic predictor: encoder -> ConvLSTM stack -> decoder, trained with MSE on the
future frames, teacher forcing decayed by the engine's scheduled sampling.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from vpcli.nn.convlstm import ConvLSTM
from vpcli.predictors.base import Batch, Losses, Predictor, StepRecord, TrainState, TrainStep
from vpcli.predictors.base import check_class_groups, group_tables
from vpcli.registry import register


@dataclass
class CopyLastConfig:
    context: int = 2


@register("predictor", "copy-last", config_cls=CopyLastConfig, description="repeat the last context frame")
class CopyLast(Predictor):
    name = "copy-last"
    deterministic = True
    size_multiple = 1

    def train_steps(self) -> list[TrainStep]:
        return []

    @torch.no_grad()
    def predict(self, context: Batch, horizon: int, samples: int = 1,
                generator: torch.Generator | None = None, *, want_extras: bool = False) -> Iterator[StepRecord]:
        last = context["rgb"][:, -1]  # (B, C, H, W)
        out = last.unsqueeze(1).expand(-1, samples, -1, -1, -1)  # (B, S, C, H, W)
        for _ in range(horizon):
            yield StepRecord(frames=out)


@dataclass
class CopyLastLabelsConfig:
    context: int = 2
    num_classes: int = 19
    # Class-merging map as SADM's (the group of each id): the copied labels and the scored ground
    # truth are then each id's group, written as its smallest id -- the baseline of a model that
    # forecasts merged classes, scored the way that model is (`--set model.class_groups=[...]`).
    class_groups: list | None = None

    def __post_init__(self):
        self.class_groups = check_class_groups(self.class_groups, self.num_classes)


@register("predictor", "copy-last-labels", config_cls=CopyLastLabelsConfig,
          description="repeat the last context frame and its label map (the floor of label forecasting)")
class CopyLastLabels(CopyLast):
    """copy-last for methods that forecast label maps (HVP, SADM): the last context frame and its
    labels, unchanged, and so zero flow (the floor of SADM's flow EPE). Reads labels like those
    methods do (companions or a segmenter)."""

    name = "copy-last-labels"
    inputs = frozenset({"rgb", "labels"})
    outputs = frozenset({"frames", "labels", "flow"})

    def __init__(self, config: CopyLastLabelsConfig):
        super().__init__(config)
        to_group, to_label = group_tables(config.class_groups, config.num_classes)
        self.register_buffer("to_group", to_group, persistent=False)
        self.register_buffer("to_label", to_label, persistent=False)

    def scored_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Ground truth as this baseline writes it (identity without ``class_groups``)."""
        if self.config.class_groups is None:
            return labels
        return self.to_label[self.to_group[labels.clamp(0, 255)]]

    @torch.no_grad()
    def predict(self, context: Batch, horizon: int, samples: int = 1,
                generator: torch.Generator | None = None, *, want_extras: bool = False) -> Iterator[StepRecord]:
        last = context["rgb"][:, -1].unsqueeze(1).expand(-1, samples, -1, -1, -1)     # (B, S, C, H, W)
        labels = self.scored_labels(context["labels"][:, -1]).unsqueeze(1).expand(-1, samples, -1, -1)  # (B, S, H, W)
        still = last.new_zeros(1, 1, 2, 1, 1).expand(*last.shape[:2], 2, *last.shape[-2:])
        for _ in range(horizon):
            yield StepRecord(frames=last, labels=labels, flow=still)


@dataclass
class ConvLSTMConfig:
    channels: int = 3
    hidden: int = 32
    layers: int = 2
    context: int = 5

    def __post_init__(self):
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.hidden < 1 or self.layers < 1 or self.context < 1:
            raise ValueError(f"hidden, layers and context must be >= 1, got {self.hidden}, {self.layers}, {self.context}")


@register("predictor", "convlstm", config_cls=ConvLSTMConfig, description="deterministic ConvLSTM baseline")
class ConvLSTMPredictor(Predictor):
    name = "convlstm"
    deterministic = True
    validation_metric = ("mse", "min")  # MSE of the future frames (here also the whole loss)
    size_multiple = 2  # one stride-2 conv and its transpose: any even size (odd sizes are padded)

    def __init__(self, config: ConvLSTMConfig):
        super().__init__(config)
        c, h = config.channels, config.hidden
        self.encoder = nn.Sequential(nn.Conv2d(c, h, 4, 2, 1), nn.LeakyReLU(0.2))   # H/2
        self.rnn = ConvLSTM(h, h, config.layers)
        self.decoder = nn.ConvTranspose2d(h, c, 4, 2, 1)                            # back to H

    def _step(self, frame: torch.Tensor, states):
        out, states = self.rnn(self.encoder(frame), states)
        # Predict a residual on the input frame: learning "what changes" converges much faster.
        return (frame + self.decoder(out)).clamp(0, 1), states

    def loss(self, batch: Batch, state: TrainState) -> Losses:
        rgb = batch["rgb"]  # (B, T, C, H, W)
        c = self.config.context
        states, frame, losses = None, rgb[:, 0], []
        for t in range(1, rgb.shape[1]):
            pred, states = self._step(frame, states)
            if t >= c:
                losses.append(F.mse_loss(pred, rgb[:, t]))
            # Context frames are always observed; in the future, teacher forcing with probability p.
            use_gt = t < c or torch.rand(()) < state.teacher_forcing
            frame = rgb[:, t] if use_gt else pred.detach()
        mse = torch.stack(losses).mean()
        return {"loss": mse, "mse": mse}

    @torch.no_grad()
    def predict(self, context: Batch, horizon: int, samples: int = 1,
                generator: torch.Generator | None = None, *, want_extras: bool = False) -> Iterator[StepRecord]:
        rgb = context["rgb"]  # (B, C_t, C, H, W); deterministic: samples are copies
        states = None
        for t in range(rgb.shape[1]):
            pred, states = self._step(rgb[:, t], states)
        for _ in range(horizon):
            yield StepRecord(frames=pred.unsqueeze(1).expand(-1, samples, -1, -1, -1))
            pred, states = self._step(pred, states)

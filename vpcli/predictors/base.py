"""The Predictor contract every method implements (DESIGN.md, "Predictor contract").

A predictor is a registered :class:`~vpcli.trainable.Trainable` (parts, training-only modules,
a training plan of stages and named steps, a validation metric: see that module) that also
declares what it reads and what it makes, and predicts:

* ``inputs``: the context kinds it needs, from ``rgb`` ``(B, T, C, H, W)`` float in [0, 1],
  ``labels`` int64 ``(B, T, H, W)`` and ``flow`` float32 ``(B, T-1, 2, H, W)`` (forward flow
  ``flow[:, t]`` from frame t to t+1, pixels). The engine delivers every declared input the same
  way in train, predict and eval (companions beside the data, or a named segmenter / flow
  estimator run on the fly: :mod:`vpcli.engine.inputs`), or fails naming what is missing.
* ``training_inputs``: kinds read only by the training losses (delivered in train only).
* ``outputs``: which of :data:`OUTPUT_KINDS` its step records hold, and ``extras``: the named
  extra maps it reports (name -> :class:`Extra`: kind ``image``, ``mask`` or ``flow``, and what
  it is). The predict runner writes what a record holds, the evaluator scores it; neither
  knows method names.
* ``predict(context, horizon, samples, generator)`` **yields** one :class:`StepRecord` per
  future step, so a horizon of thousands of frames runs in constant memory. The context is
  encoded once and shared by the ``S`` samples, which run as one batch. Extras are computed
  only when asked for (``want_extras``), and asking changes nothing else.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch.nn import functional as F

from vpcli.io.labels import IGNORE_INDEX
from vpcli.trainable import Batch, ContractError, IterationCache, Losses, Stage, Trainable, TrainState, TrainStep

__all__ = ["Batch", "ContractError", "Extra", "INPUT_KINDS", "IterationCache", "Losses", "OUTPUT_KINDS",
           "Predictor", "Stage", "StepRecord", "TrainState", "TrainStep", "check_label_ids", "check_record", "one_hot"]

INPUT_KINDS = ("rgb", "labels", "flow")
OUTPUT_KINDS = ("frames", "labels", "probs", "flow")
EXTRA_KINDS = ("image", "mask", "flow")


@dataclass(frozen=True)
class Extra:
    """A named map a predictor reports beside its outputs: ``image`` (C channels in [0, 1]),
    ``mask`` (1 channel in [0, 1]) or ``flow`` (2 channels, pixels; ``description`` says which way).
    ``always``: `vpcli predict` writes it without ``--save-components`` (a result of the method,
    e.g. SADM's dis-occlusion mask, rather than an internal component)."""

    kind: str
    description: str
    always: bool = False

    def __post_init__(self):
        if self.kind not in EXTRA_KINDS:
            raise ValueError(f"extra kind must be one of {EXTRA_KINDS}, got {self.kind!r}")


@dataclass
class StepRecord:
    """One future time step of ``B`` clips x ``S`` samples.

    ``frames`` ``(B, S, C, H, W)`` in [0, 1]; ``labels`` int64 ``(B, S, H, W)`` class ids;
    ``probs`` ``(B, S, K, H, W)`` class probabilities; ``flow`` ``(B, S, 2, H, W)``: forward flow
    from the previous frame into this step's frame (what the data's ``flow[:, t-1]`` holds);
    ``extras`` name -> ``(B, S, c, H, W)`` as the predictor's ``extras`` declares them.
    """

    frames: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    probs: torch.Tensor | None = None
    flow: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def get(self, kind: str) -> torch.Tensor | None:
        return getattr(self, kind)

    def kinds(self) -> set[str]:
        return {k for k in OUTPUT_KINDS if getattr(self, k) is not None}


class Predictor(Trainable):
    inputs: ClassVar[frozenset[str]] = frozenset({"rgb"})
    # Inputs read only in training (HVP's flow, which supervises its flow head): train delivers
    # them like ``inputs``; predict and eval do not compute them.
    training_inputs: ClassVar[frozenset[str]] = frozenset()
    outputs: ClassVar[frozenset[str]] = frozenset({"frames"})
    extras: ClassVar[dict[str, Extra]] = {}

    # --- inference ---------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, context: Batch, horizon: int, samples: int = 1, generator: torch.Generator | None = None,
                *, want_extras: bool = False) -> Iterator[StepRecord]:
        raise NotImplementedError(f"{type(self).__name__} cannot predict")

    # True when every sample of a context is the same (no latent): `vpcli predict --samples N` says so
    # once and writes one sample; evaluation still scores N (identical) samples.
    deterministic: ClassVar[bool] = False
    # The sizes it runs at (`vpcli predict`, vpcli/engine/geometry.py): None -- only the size its
    # weights were trained at (clips are letterboxed into it); an integer m -- fully convolutional,
    # any size padded to a multiple of m (the clip runs at its own resolution).
    size_multiple: ClassVar[int | None] = None
    # Named alternatives to ``frames`` that `vpcli eval --head NAME` can score instead: head name ->
    # an ``image`` extra (SLAMP's appearance and motion heads, App. D Table 7). ``fused`` is frames.
    heads: ClassVar[dict[str, str]] = {}

    def label_classes(self) -> int | None:
        """Label classes of the labels it reads or makes (None when it has none)."""
        return getattr(self.config, "num_classes", None)


def one_hot(labels: torch.Tensor, k: int) -> torch.Tensor:
    """``(N, H, W)`` int64 ids -> ``(N, K, H, W)`` float one-hot; the ignore id 255 is all zeros."""
    valid = labels != IGNORE_INDEX
    return F.one_hot(torch.where(valid, labels, 0), k).permute(0, 3, 1, 2).float() * valid[:, None]


def check_class_groups(groups, classes: int) -> list[int] | None:
    """Validate a class-merging map (the group of each of ``classes`` label ids, groups numbered
    0..K-1 with none unused) and return it as ints; None stays None (one group per id)."""
    if groups is None:
        return None
    out = [int(g) for g in groups]
    if len(out) != classes or min(out) < 0:
        raise ValueError(f"class_groups must give a group >= 0 for each of the {classes} label ids, got {groups!r}")
    if sorted(set(out)) != list(range(max(out) + 1)):
        raise ValueError(f"class_groups must use every group 0..{max(out)}, got {sorted(set(out))}")
    return out


def group_tables(groups: list[int] | None, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lookup tables of a class-merging map over ids 0..255: ``to_group[id]`` is the id's group
    (255 and ids past ``classes`` -> 255), ``to_label[group]`` the smallest id of the group, the id
    a model that forecasts groups writes. ``to_label[to_group[labels]]`` is the ground truth as such
    a model sees it, which `vpcli eval` scores against (merged classes count as one)."""
    groups = list(range(classes)) if groups is None else groups
    k = max(groups) + 1
    to_group = torch.full((256,), IGNORE_INDEX, dtype=torch.long)
    to_group[:classes] = torch.tensor(groups)
    rep = [min(i for i, g in enumerate(groups) if g == j) for j in range(k)]
    to_label = torch.tensor(rep + [IGNORE_INDEX] * (256 - k))
    return to_group, to_label


def check_label_ids(labels: torch.Tensor, classes: int, knob: str) -> None:
    """Refuse label ids outside ``0..classes-1`` (255 = ignore is allowed), naming the first few and
    the model config key (``knob``) that sets the class count."""
    bad = (labels != IGNORE_INDEX) & ((labels < 0) | (labels >= classes))
    if bool(bad.any()):
        from vpcli.errors import InputError
        ids = sorted(set(labels[bad].unique().tolist()))[:5]
        raise InputError(f"labels hold class ids {ids} outside this model's {classes} classes "
                         f"(0..{classes - 1}, 255 = ignore)",
                         "segment with a segmenter of the model's classes (`vpcli weights list` shows each one's "
                         f"task), or train a model with model.{knob} set to the labels' classes")


def check_record(record: Any, model: Predictor, step: int, *, batch: int, samples: int,
                 size: tuple[int, int], channels: int | None, want_extras: bool) -> StepRecord:
    """The record a predictor yielded at ``step``, checked against what it declares; a
    :class:`ContractError` names the method, the step and what is wrong."""
    who = f"{model.name or type(model).__name__}.predict"
    if not isinstance(record, StepRecord):
        raise ContractError(f"{who} yielded a {type(record).__name__} at step {step}, not a StepRecord",
                            "the predictor breaks the Predictor contract (vpcli.predictors.base)")
    have = record.kinds()
    if have != set(model.outputs):
        raise ContractError(f"{who} yielded {sorted(have)} at step {step} but declares outputs "
                            f"{sorted(model.outputs)}", "the predictor breaks the Predictor contract")
    b, s, (h, w) = batch, samples, size
    expect = {"frames": (b, s, channels, h, w) if channels else None, "labels": (b, s, h, w), "flow": (b, s, 2, h, w)}
    for kind in have:
        t = record.get(kind)
        want = expect.get(kind)
        if kind == "probs":
            want = (b, s, t.shape[2], h, w)
        if want is not None and tuple(t.shape) != want:
            raise ContractError(f"{who} yielded {kind} of shape {tuple(t.shape)} at step {step}; expected {want}",
                                "the predictor breaks the Predictor contract")
    if record.labels is not None and record.labels.dtype != torch.int64:
        raise ContractError(f"{who} yielded labels of dtype {record.labels.dtype} at step {step}; expected int64",
                            "the predictor breaks the Predictor contract")
    if want_extras:
        if set(record.extras) != set(model.extras):
            raise ContractError(f"{who} yielded extras {sorted(record.extras)} at step {step} but declares "
                                f"{sorted(model.extras)}", "the predictor breaks the Predictor contract")
        for name, t in record.extras.items():
            if tuple(t.shape[:2]) != (b, s) or tuple(t.shape[-2:]) != (h, w):
                raise ContractError(f"{who} yielded extra {name!r} of shape {tuple(t.shape)} at step {step}; "
                                    f"expected ({b}, {s}, c, {h}, {w})", "the predictor breaks the Predictor contract")
    return record

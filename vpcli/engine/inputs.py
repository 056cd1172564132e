"""The inputs a predictor declares (``rgb``, ``labels``, ``flow``), delivered the same way in
train, predict and eval.

Each non-RGB input has a source (the run config's ``inputs`` section, recorded in every
checkpoint's config so that ``vpcli predict`` on a plain MP4 uses what the model was trained
with; ``--labels-from`` / ``--flow-from`` override it):

``companion``   files beside the data, as ``vpcli segment`` / ``vpcli flow`` write them
                (``X.labels/``, ``X.labels.npz``, ``X.flow.npz``, ``X.flow/``; a synth-street
                sequence's own ``labels/`` and ``flow_forward.npz``)
a segmenter     labels: a DeepLabV3+ manifest name or weights file, run on every frame
a flow method   flow: ``dis``, ``farneback``, ``pwcnet`` or ``pwcnet:WEIGHTS``, run on every
                consecutive frame pair (forward flow, frame t -> t+1)

A declared input that is neither in the batch nor computable is an :class:`InputError` naming
the input, where it was looked for and how to produce it -- never a silent drop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from vpcli.errors import InputError, UsageError

COMPANION = "companion"
FLOW_METHODS = ("dis", "farneback", "pwcnet")


@dataclass
class InputConfig:
    """Where the non-RGB inputs come from (run config section ``inputs``)."""

    labels: str = COMPANION
    flow: str = COMPANION

    def __post_init__(self):
        method = self.flow.split(":", 1)[0]
        if self.flow != COMPANION and method not in FLOW_METHODS:
            raise ValueError(f"flow must be 'companion' or one of {', '.join(FLOW_METHODS)} (pwcnet:WEIGHTS), "
                             f"got {self.flow!r}")
        if not self.labels:
            raise ValueError("labels must be 'companion' or a segmenter's weights (manifest name or file)")

    def with_overrides(self, labels_from: str | None = None, flow_from: str | None = None) -> InputConfig:
        try:
            return InputConfig(labels=labels_from or self.labels, flow=flow_from or self.flow)
        except ValueError as e:
            raise UsageError(f"--flow-from / --labels-from: {e}",
                             "use --flow-from companion|dis|farneback|pwcnet and --labels-from companion|NAME") from None


HOW_TO = {
    "labels": "run `vpcli segment CLIP --out DIR` and keep DIR/<name>/labels beside the clip as <name>.labels/, "
              "or pass --labels-from NAME to segment on the fly (e.g. deeplabv3plus-mobilenet-synthstreet)",
    "flow": "run `vpcli flow CLIP --out DIR` and keep DIR/<name>/flow_forward.npz beside the clip as "
            "<name>.flow.npz, or pass --flow-from dis (or farneback, pwcnet) to compute it on the fly",
}


def companions_wanted(needs: frozenset[str], cfg: InputConfig) -> tuple[str, ...]:
    """The companions a dataset must load for a method: the inputs it needs whose source is a companion."""
    return tuple(k for k in ("labels", "flow") if k in needs and getattr(cfg, k) == COMPANION)


class InputFiller:
    """Completes a batch ``{"rgb": (B, T, C, H, W), ...}`` with the inputs ``needs`` lists.

    Inputs already in the batch (companions) are kept; the others are computed by the configured
    segmenter / flow estimator, or raise :class:`InputError` when their source is ``companion``.
    """

    def __init__(self, needs: frozenset[str], cfg: InputConfig, *, method: str = "the method", device: str = "cpu",
                 where: str = "the data"):
        self.needs, self.cfg, self.method, self.device, self.where = frozenset(needs), cfg, method, device, where
        self._segmenter = None
        self._flow = None

    def describe(self) -> dict[str, str]:
        """What meta.json records: the source of every needed input."""
        return {k: ("given" if k == "rgb" else getattr(self.cfg, k)) for k in sorted(self.needs)}

    def missing(self, kind: str, where: str | None = None) -> InputError:
        return InputError(f"{self.method} needs {kind} but {where or self.where} has none "
                          f"(inputs.{kind}: companion)", HOW_TO[kind])

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        if "rgb" not in batch:
            raise InputError(f"{self.method} needs rgb frames but the batch has none", "pass clips with frames")
        for kind in ("labels", "flow"):
            if kind not in self.needs or kind in batch:
                continue
            if getattr(self.cfg, kind) == COMPANION:
                raise self.missing(kind)
            batch = {**batch, kind: (self.labels(batch["rgb"]) if kind == "labels" else self.flow(batch["rgb"]))}
        return batch

    # --- on the fly ----------------------------------------------------------------------------
    def labels(self, rgb: torch.Tensor) -> torch.Tensor:
        """``(B, T, C, H, W)`` in [0, 1] -> int64 ``(B, T, H, W)`` from the configured segmenter."""
        if self._segmenter is None:
            from vpcli.engine.segment_runner import load_segmenter
            self._segmenter = load_segmenter(self.cfg.labels, device=self.device, channels_last=False)
        model = self._segmenter.model
        b, t, c, h, w = rgb.shape
        x = rgb.reshape(b * t, c, h, w).float()
        if c == 1:  # greyscale clip: the segmenter reads RGB
            x = x.expand(-1, 3, -1, -1)
        with torch.no_grad():
            out = model.predict_labels(x.to(next(model.parameters()).device))  # (B*T, H, W)
        return out.to(rgb.device).view(b, t, h, w)

    def flow(self, rgb: torch.Tensor) -> torch.Tensor:
        """``(B, T, C, H, W)`` in [0, 1] -> forward flow ``(B, T-1, 2, H, W)`` from the configured method."""
        if self._flow is None:
            from vpcli.engine.flow_runner import build_estimator
            method, _, weights = self.cfg.flow.partition(":")
            self._flow = build_estimator(method, device=self.device, weights=weights or None)
        b, t, c, h, w = rgb.shape
        if t < 2:
            return rgb.new_zeros((b, 0, 2, h, w))
        x = rgb.float()
        if c == 1:
            x = x.expand(-1, -1, 3, -1, -1)
        a = x[:, :-1].reshape(b * (t - 1), 3, h, w)  # (B*(T-1), 3, H, W)
        z = x[:, 1:].reshape(b * (t - 1), 3, h, w)
        flow = self._flow.estimate(a, z)  # torch in, torch out (estimators move frames where they run)
        return flow.to(rgb.device, torch.float32).view(b, t - 1, 2, h, w)

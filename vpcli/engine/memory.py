"""Refuse a prediction that cannot fit in memory, before the clip is decoded (issue 15).

A fully convolutional predictor runs at the clip's own resolution, so a 4K clip, or many
``--samples`` (one batch), can need more memory than the machine has; without a check the process
grows until the kernel kills it, after minutes, with a half-written temporary folder. Here the need
is measured, not guessed:

1. **Probe.** The predictor (and the segmenter / flow method that fill its inputs, when they run on
   the fly) runs two steps on a blank context at a small size with the clip's aspect ratio, under
   :class:`PeakTensorBytes`, which counts the bytes of every tensor the operators allocate while it
   is alive and keeps the peak. Weights loaded during the probe (a segmenter loaded on first use)
   are still alive at the end; they are counted once, not scaled.
2. **Scale.** Activations grow with the pixels and the samples (one batch), so the peak above the
   persistent part is scaled by the work size's pixels over the probe's, and by the samples: the
   probe runs the samples asked for up to 4, and half as many, and extends the line through the
   two. A clip at or below :data:`PROBE_PIXELS` is probed at its own size (nothing is scaled),
   and runs of at most :data:`SKIP_PIXELS` pixels x samples are not probed at all (every bundled
   model needs well under 1 GiB there).
3. **Budget.** What the machine can give (:func:`vpcli.engine.options.available_memory`:
   ``MemAvailable``, or the cgroup's limit minus its usage when that is lower), or
   ``VPCLI_MEMORY_LIMIT`` (``4G``, ``512M``, bytes; ``none`` turns the check off; segment's and
   flow's checks read it too). The run is refused when the estimate exceeds
   :data:`HEADROOM` of it, with the largest ``--size`` (and, for fixed-size weights, the most
   ``--samples``) that fits -- a fix that exists.
4. **Encoders.** Every MP4 stream predict writes holds an in-process libx264 encoder whose
   look-ahead buffers grow with the frames written, up to about :data:`ENCODER_BYTES_PER_PIXEL`
   per pixel of the stream after :data:`ENCODER_FULL_AFTER` frames (measured with ``VideoWriter``
   and its 10-frame look-ahead, each case in its own process: 35 / 67 / 130 / 131 B per pixel
   after 3 / 10 / 20-30 / 100 frames of 256x512 noise, 156 for a lone writer, 99 and 82 at 512x1024
   and 1024x2048), so predict adds :func:`encoder_bytes` for its streams: at 512x1024 about
   80 MiB per stream for a long horizon. Streams are written at the clip's size: ``--size`` does
   not shrink them.

What the probe cannot see beyond that: memory that is not a tensor (OpenCV's DIS buffers, the
decoder, Python objects) -- a few frames' worth, covered by the headroom.
"""
from __future__ import annotations

import dataclasses
import math
import os
import weakref
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from vpcli.engine import options
from vpcli.engine.options import MEMORY_ENV as ENV
from vpcli.engine.options import gib, parse_bytes
from vpcli.errors import InputError, VpcliError

PROBE_PIXELS = 128 * 128     # probe area (pixels) for larger work sizes
SKIP_PIXELS = 256 * 512      # work pixels x samples at or below which no probe runs
HEADROOM = 0.8               # the share of the budget a prediction may plan to use
ENCODER_BYTES_PER_PIXEL = 160  # a libx264 stream's buffers once its look-ahead is full (docstring, 4.)
ENCODER_FULL_AFTER = 25      # frames


class PeakTensorBytes(TorchDispatchMode):
    """Counts the storage bytes of tensors allocated by operators while active; ``peak`` is the
    most alive at once, ``live`` what is still alive. Outputs that share an input's storage (views,
    in-place results) are not new memory and are not counted."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._alive: set[int] = set()

    def _free(self, ptr: int, n: int) -> None:
        if ptr in self._alive:
            self._alive.discard(ptr)
            self.live -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        given = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                 if isinstance(t, torch.Tensor) and t.device.type != "meta"}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            storage = t.untyped_storage()
            ptr, n = storage.data_ptr(), storage.nbytes()
            if n == 0 or ptr in given or ptr in self._alive:
                continue
            self._alive.add(ptr)
            self.live += n
            self.peak = max(self.peak, self.live)
            weakref.finalize(t, self._free, ptr, n)
        return out


def available_bytes(device: str = "cpu") -> tuple[int | None, str]:
    """(bytes a new allocation can take, where that figure comes from); (None, why) = no limit known."""
    budget = options.available_memory(device)  # looked up here, so that tests can stand in a machine
    if ENV in os.environ:
        return budget, f"{ENV}={os.environ[ENV]}"
    if budget is None:
        return None, "no memory figure on this system"
    return budget, "free memory (MemAvailable, or the cgroup's limit less its usage)"


def encoder_bytes(stream_pixels: float, frames: int) -> int:
    """Memory of H.264 streams of ``stream_pixels`` pixels in all after ``frames`` frames."""
    return int(stream_pixels * ENCODER_BYTES_PER_PIXEL * min(1.0, (frames + 3) / ENCODER_FULL_AFTER))


@dataclasses.dataclass(frozen=True)
class Estimate:
    bytes: int                 # memory the prediction is expected to need at its peak
    persistent: int            # part of it that does not grow with size or samples (weights loaded on first use)
    per_pixel_sample: float    # bytes per work pixel per sample
    per_pixel: float           # bytes per work pixel, shared by the samples
    probe: tuple[int, int]     # the size probed (H, W)

    def at(self, work: tuple[int, int], samples: int) -> float:
        px = work[0] * work[1]
        return self.persistent + px * (self.per_pixel + self.per_pixel_sample * samples)


def _probe_size(work: tuple[int, int], multiple: int | None) -> tuple[int, int]:
    h, w = work
    if multiple is None or h * w <= 2 * PROBE_PIXELS:
        return h, w
    m = max(1, int(multiple))
    s = math.sqrt(PROBE_PIXELS / (h * w))
    return (min(h, max(m, round(h * s / m) * m)), min(w, max(m, round(w * s / m) * m)))


def _blank_context(model, context: int, size: tuple[int, int]) -> dict[str, torch.Tensor]:
    h, w = size
    channels = int(getattr(model.config, "channels", 3) or 3)
    batch: dict[str, torch.Tensor] = {"rgb": torch.zeros(1, context, channels, h, w)}
    if "labels" in model.inputs:
        batch["labels"] = torch.zeros(1, context, h, w, dtype=torch.long)
    if "flow" in model.inputs:
        batch["flow"] = torch.zeros(1, context - 1, 2, h, w)
    return batch


def _peak(model, context: int, size: tuple[int, int], samples: int, fill: Callable | None,
          computed: frozenset[str], autocast) -> tuple[int, int]:
    with PeakTensorBytes() as meter, torch.no_grad(), autocast:
        batch = _blank_context(model, context, size)
        if fill is not None and computed & set(batch):  # the segmenter / flow method run on the fly
            batch = fill({k: v for k, v in batch.items() if k not in computed})
        gen = torch.Generator().manual_seed(0)
        records = model.predict(batch, 2, samples, gen)
        try:
            for record in records:
                del record
        finally:
            close = getattr(records, "close", None)
            if close is not None:
                close()
        del batch, records
    return meter.peak, meter.live


def estimate(model, *, context: int, work: tuple[int, int], samples: int, fill: Callable | None = None,
             computed: frozenset[str] = frozenset(), precision: str = "fp32") -> Estimate:
    """Probe ``model`` and scale to ``work`` x ``samples``. ``fill`` is the input filler
    (:class:`vpcli.engine.inputs.InputFiller`); ``computed`` the inputs it computes on the fly
    (labels, flow), which the probe then computes too; the others get blank companions."""
    probe = _probe_size(work, getattr(model, "size_multiple", None))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    was_training = model.training
    model.eval()
    # Samples are one batch; the peak may sit in a phase they share (segmenting the context) at one
    # sample and in one they do not (the rollout) at several, so it is measured at ``hi`` = the
    # samples asked for (up to 4) and the slope taken from ``lo`` = half of that.
    hi = min(samples, 4)
    lo = max(1, hi // 2)
    try:
        p_hi, kept = _peak(model, context, probe, hi, fill, computed, autocast)
        p_lo = _peak(model, context, probe, lo, fill, computed, autocast)[0] if lo < hi else p_hi
    finally:
        model.train(was_training)
    px = probe[0] * probe[1]
    g_hi, g_lo = max(0, p_hi - kept), max(0, p_lo - kept)
    slope = max(0.0, (g_hi - g_lo) / (hi - lo)) if hi > lo else g_hi / hi
    shared = max(0.0, g_hi - slope * hi)
    est = Estimate(bytes=0, persistent=kept, per_pixel_sample=slope / px, per_pixel=shared / px, probe=probe)
    return dataclasses.replace(est, bytes=int(est.at(work, samples)))


def _largest_size(est: Estimate, budget: float, work: tuple[int, int], samples: int, m: int) -> tuple[int, int] | None:
    """The largest work size with the aspect ratio of ``work`` (multiples of ``m``) that fits."""
    per_px = est.per_pixel + est.per_pixel_sample * samples
    room = budget - est.persistent
    if per_px <= 0 or room <= 0:
        return None
    s = min(1.0, math.sqrt(room / per_px / (work[0] * work[1])))
    h, w = (max(m, int(work[0] * s) // m * m), max(m, int(work[1] * s) // m * m))
    return (h, w) if est.at((h, w), samples) <= budget else None


def check_predict_memory(model, *, context: int, work: tuple[int, int], samples: int, fill: Callable | None = None,
                         computed: frozenset[str] = frozenset(), precision: str = "fp32", what: str = "the model",
                         writers: tuple[int, int] = (0, 0)) -> dict[str, Any] | None:
    """Raise :class:`InputError` when predicting at ``work`` with ``samples`` needs more memory than
    this machine (or ``VPCLI_MEMORY_LIMIT``) gives; returns what was measured (None when not probed).
    ``writers`` = (bytes of the output streams shared by the samples, bytes per sample)."""
    budget, source = available_bytes()
    w_fixed, w_sample = writers
    if budget is None or (work[0] * work[1] * samples <= SKIP_PIXELS and w_fixed + w_sample * samples < 2 ** 28):
        return None
    try:
        est = estimate(model, context=context, work=work, samples=samples, fill=fill, computed=computed,
                       precision=precision)
    except VpcliError:
        raise   # e.g. the on-the-fly segmenter's weights are missing: the run would fail the same way
    except Exception as e:  # noqa: BLE001 - a probe that cannot run must not stop a run that can
        return {"skipped": f"the probe failed ({type(e).__name__}: {e}); no check was made"}
    tensors = est.bytes
    est = dataclasses.replace(est, persistent=est.persistent + w_fixed, bytes=est.bytes + w_fixed + w_sample * samples)
    facts = {"estimate_bytes": est.bytes, "tensor_bytes": tensors, "encoder_bytes": w_fixed + w_sample * samples,
             "persistent_bytes": est.persistent,
             "bytes_per_pixel": est.per_pixel + est.per_pixel_sample * samples, "budget_bytes": budget,
             "budget_from": source, "probe": list(est.probe), "work": list(work), "samples": samples}
    allowed = HEADROOM * budget
    if est.bytes <= allowed:
        return facts
    multiple = getattr(model, "size_multiple", None)
    fixes = []
    if multiple is not None:
        size = _largest_size(est, allowed - w_sample * samples, work, samples, max(1, int(multiple)))
        if size is not None:
            fixes.append(f"--size {size[0]}x{size[1]} (about {gib(est.at(size, samples) + w_sample * samples)})")
    if samples > 1:
        per = est.per_pixel_sample * work[0] * work[1] + w_sample
        n = int((allowed - est.at(work, 0)) // per) if per > 0 else 0
        if n >= 1:
            fixes.append(f"--samples {n}")
    fixes.append(f"more memory ({ENV}=none skips this check)")
    raise InputError(f"predicting {work[0]}x{work[1]} with {what} and {samples} sample(s) needs about "
                     f"{gib(est.bytes)}, more than {int(HEADROOM * 100)}% of the {gib(budget)} {source}",
                     "use " + ", or ".join(fixes))


__all__ = ["ENV", "Estimate", "PeakTensorBytes", "available_bytes", "check_predict_memory", "estimate",
           "parse_bytes"]

"""The engine behind `vpcli predict`: read each clip's context, predict, stream the future to disk.

Per input, ``OUT/<name>/`` holds::

    sample_000.mp4 ...       one video per stochastic sample, holding ONLY the predicted future
                             frames (horizon frames; the layout `vpcli eval --pred` matches:
                             NAME/sample_K is sample K of NAME)
    context.mp4              the context frames (after any channel conversion; at the output
                             size), so context + sample_K is the full clip
    grid.mp4                 with --grid: context | sample 0 | sample 1 | ... (at most 8 samples)
                             side by side; green borders mark real frames, red predicted ones
    sample_000.labels/       predicted label maps (methods whose step records hold labels): one
                             palette PNG per step (pixel index = class id), the companion layout
                             `vpcli eval` and the data layer read beside ``sample_000``
    labels_sample_000.mp4    the same labels colourised
    frames_labels_sample_000.mp4  methods that predict frames and labels (HVP): frames | labels
                             side by side
    sample_000.probs/        class probabilities, when records hold them: one float16 ``(K, H, W)``
                             ``.npy`` per step
    sample_000.flow/         predicted forward flow (records holding flow): one Middlebury .flo per
                             step, flow from the previous frame into this one
    flow_sample_000.mp4      that flow as a colour wheel
    NAME_sample_000.mp4      with --save-components: every extra map the method declares
                             (``Predictor.extras``) as a video by its kind -- image, mask (grey),
                             flow (colour wheel). SLAMP: flow, mask, pixel, warped, average
    meta.json                input, method, weights (name, path, sha256), seed, samples, horizon,
                             context indices, inputs and where they came from, conversions,
                             outputs, timings, versions

Context: the last ``C`` frames of the clip, or ``C`` frames from ``start``; ``C`` is the
weights' ``data.context`` unless ``context`` is given. Only those frames are kept in memory.

Streaming: the predictor yields one step record (:class:`vpcli.predictors.base.StepRecord`:
frames ``(1, S, C, H, W)``, labels, flow, extras) at a time and each is written to the ``S``
sample writers (and the grid / extras writers) before the next is computed, so a horizon of
thousands of frames runs in constant memory: no list of predictions is kept. The runner writes
whatever a record holds; it knows no method by name.

Inputs: a method that declares ``labels`` or ``flow`` inputs gets them for the context frames
from the clip's companions or from the segmenter / flow method its config names (``inputs``
section; ``--labels-from`` / ``--flow-from`` override), as in training (:mod:`vpcli.engine.inputs`). The flow colour wheel is normalised by the largest magnitude seen so far in that
sample (the clip-wide maximum is not known before the first frame has to be written).

Randomness: one ``torch.Generator`` seeded with ``seed`` per input, so a clip's samples depend
only on the seed, the weights and the context (not on the other inputs or on --shard). The N
samples are one batch from a context encoded once (the Predictor contract). Clips run one at a
time (``batch_size`` is accepted for uniformity with the other commands and is 1 here).

``lossless=True`` writes the sample and context videos as ``libx264rgb -qp 0``: the frames read
back are exactly ``round(255 * prediction)``.

Mismatches between a clip and the weights: a greyscale clip for an RGB model is repeated on
three channels, an RGB clip for a greyscale model becomes ITU-R BT.601 luma
(``0.299 R + 0.587 G + 0.114 B``), each with a one-line warning recorded in meta.json. Any
resolution runs (:mod:`vpcli.engine.geometry`): a fully convolutional model at the clip's own
size padded to its multiple, a fixed-size one on the clip fitted into its size (``fit``:
letterbox by default, crop, stretch); every output is written at the clip's size (``crop``: the
cropped region's), with one warning line and ``geometry`` in meta.json saying what was done.

The output folder is assembled under a temporary name and renamed when complete
(:func:`vpcli.io.atomic.atomic_dir`): a failure leaves nothing behind.
"""
from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vpcli.engine.options import DeviceOptions, check_model_overrides
from vpcli.errors import InputError, UsageError, VideoError
from vpcli.engine.geometry import FITS, MIN_SIDE
from vpcli.io.sources import check_positive_int, parse_size
from vpcli.io.video import is_greyscale  # re-exported: predict's greyscale test
from vpcli.precision import PRECISIONS  # fp32, bf16, auto

Callback = Callable[[str, dict[str, Any]], None]
GRID_MAX_SAMPLES = 8
# ITU-R BT.601 luma weights (what OpenCV's and PIL's RGB -> grey use too).
LUMA_601 = np.array([0.299, 0.587, 0.114], np.float32)


class PredictWarning(UserWarning):
    """Something predict adapted (channel conversion, ignored option) that the user should know."""


# --------------------------------------------------------------------------------------------
# Small helpers


def to_uint8(frames) -> np.ndarray:
    """``float (N, C, H, W)`` in [0, 1] -> ``uint8 (N, H, W, C)`` (rounded, as the writers store it)."""
    import torch
    x = (frames.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()  # N,C,H,W -> N,H,W,C


def _rgb(frame: np.ndarray) -> np.ndarray:
    """``(H, W, 1)`` or ``(H, W, 3)`` uint8 -> ``(H, W, 3)``."""
    return np.repeat(frame, 3, axis=2) if frame.shape[2] == 1 else frame


def luma_601(frames: np.ndarray) -> np.ndarray:
    """``uint8 (T, H, W, 3)`` RGB -> ``uint8 (T, H, W, 1)`` ITU-R BT.601 luma, rounded."""
    y = frames.astype(np.float32) @ LUMA_601  # T,H,W
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)[..., None]


def context_range(num_frames: int, context: int, start: int | None, path: Path, method: str) -> tuple[int, int]:
    """``[s, e)`` of the context frames; errors say how many frames are needed and how many there are."""
    if num_frames < context:
        raise VideoError(f"{path} has {num_frames} frame{'s' * (num_frames != 1)} but {method} needs {context} "
                         f"context frames",
                         f"pass a clip with at least {context} frames, or fewer context frames with --context")
    if start is None:
        return num_frames - context, num_frames
    if start + context > num_frames:
        raise VideoError(f"{path} has {num_frames} frames: --start {start} with {context} context frames needs "
                         f"{start + context}", f"use --start {num_frames - context} or less")
    return start, start + context


class _Feed:
    """A one-item-at-a-time iterator: lets composite_frames (which pulls) run from pushed frames."""

    def __init__(self) -> None:
        self.value: np.ndarray | None = None

    def __iter__(self):
        return self

    def __next__(self) -> np.ndarray:
        if self.value is None:
            raise StopIteration
        v, self.value = self.value, None
        return v


def _versions() -> dict[str, str]:
    import av
    import torch
    return {"torch": torch.__version__, "numpy": np.__version__, "av": av.__version__}


def _warn(callback: Callback | None, message: str, sink: list[str]) -> None:
    sink.append(message)
    if callback is not None:
        callback("warning", {"message": message})
    else:
        warnings.warn(message, PredictWarning, stacklevel=3)


# --------------------------------------------------------------------------------------------
# One clip


def first_frame(path: Path) -> np.ndarray:
    """The first frame of a clip, ``uint8 (1, H, W, 3)`` (to tell greyscale clips from RGB ones)."""
    from vpcli.io.video import iter_frames
    with contextlib.closing(iter_frames(path, start=0, end=1)) as frames:
        return np.stack(list(frames))


def clip_geometry(source: tuple[int, int], model, cfg, weights_info: dict[str, Any], *,
                  size: tuple[int, int] | None = None, fit: str = "letterbox"):
    """How a clip of ``source`` (H, W) maps onto ``model`` (see :mod:`vpcli.engine.geometry`)."""
    from vpcli.engine import geometry
    if weights_info.get("kind") is None:  # parameter-free: any size
        multiple, trained = 1, None
    else:
        multiple, trained = getattr(model, "size_multiple", None), tuple(int(v) for v in cfg.data.size)
    what = weights_info.get("name") or f"the {cfg.method} weights"
    return geometry.plan(source, multiple=multiple, trained=trained, size=size, fit=fit, what=what)


def load_context(path: Path, *, context: int, start: int | None, model, cfg, weights_info: dict[str, Any],
                 size: tuple[int, int] | None = None, fit: str = "letterbox", callback: Callback | None = None,
                 warnings_sink: list[str] | None = None,
                 check_geometry: Callable[[Any], Any] | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read and adapt a clip's context frames -> (the model's ``uint8 (C, h, w, channels)``, the
    clip's own ``(C, H, W, 3)``, what was done; ``facts["geometry"]`` maps between the two).

    Raises before decoding when the clip is too short or too small, or when ``check_geometry``
    (given the geometry) raises -- predict's memory check; what it returns is ``facts["memory"]``.
    """
    from vpcli.io.video import iter_frames, probe
    sink = warnings_sink if warnings_sink is not None else []
    info = probe(path)
    s, e = context_range(info.num_frames, context, start, path, cfg.method)
    want_channels = getattr(model.config, "channels", None)
    facts: dict[str, Any] = {"indices": [s, e], "source_size": [info.height, info.width], "conversions": []}
    geo = clip_geometry((info.height, info.width), model, cfg, weights_info, size=size, fit=fit)
    facts["geometry"] = geo
    if not geo.identity:
        what = weights_info.get("name") or cfg.method
        why = ("--size" if size is not None else f"{what} needs a multiple of {model.size_multiple}"
               if geo.mode == "pad" else f"{what} takes {geo.work[0]}x{geo.work[1]}")
        line = geo.describe(why)
        facts["conversions"].append(line)
        _warn(callback, f"{path}: {line}", sink)
    if check_geometry is not None:
        checked = check_geometry(geo)
        if checked is not None:
            facts["memory"] = checked
    with contextlib.closing(iter_frames(path, start=s, end=e)) as frames:
        source_ctx = np.stack(list(frames))  # C,H,W,3: only the context frames are held
    ctx = geo.frames_to_model(source_ctx) if not geo.identity else source_ctx
    if len(source_ctx) != e - s:
        raise VideoError(f"{path} decoded {len(source_ctx)} of the {e - s} context frames {s}..{e - 1}",
                         "the file may be damaged; re-encode it with vpcli data convert")
    grey = is_greyscale(source_ctx)
    if want_channels == 1:
        if not grey:
            _warn(callback, f"{path} is RGB but the {cfg.method} weights take greyscale: converted to ITU-R BT.601 "
                            "luma (0.299 R + 0.587 G + 0.114 B)", sink)
            facts["conversions"].append("RGB -> grey (ITU-R BT.601 luma)")
        ctx, source_ctx = luma_601(ctx), luma_601(source_ctx)  # exact for grey clips (the weights sum to 1)
    elif want_channels == 3 and grey:
        _warn(callback, f"{path} is greyscale but the {cfg.method} weights take RGB: the grey channel is repeated "
                        "on R, G and B", sink)
        facts["conversions"].append("grey -> RGB (channel repeated)")
    facts["fps"] = info.fps
    facts["source"] = {"kind": info.kind, "frames": info.num_frames, "height": info.height, "width": info.width,
                       "fps": round(info.fps, 3), "codec": info.codec}
    return ctx, source_ctx, facts


def _encoder_memory(model, out_hw: tuple[int, int], context: int, horizon: int, samples: int, grid: bool,
                    save_components: bool) -> tuple[int, int]:
    """(bytes, bytes per sample) of the H.264 streams predict_clip opens (the layout of
    :class:`_RecordWriter`), at the clip's size (:func:`vpcli.engine.memory.encoder_bytes`)."""
    from vpcli.engine.memory import encoder_bytes
    px = out_hw[0] * out_hw[1]
    kinds = set(model.outputs)
    per = (("frames" in kinds) + ("labels" in kinds) * (1 + 2 * ("frames" in kinds)) + ("flow" in kinds)
           + sum(1 for e in model.extras.values() if save_components or e.always))
    fixed = encoder_bytes(px, context)                                               # context.mp4
    if grid and "frames" in kinds:
        fixed += encoder_bytes(px * (min(samples, GRID_MAX_SAMPLES) + 1), context + horizon)
    return fixed, encoder_bytes(px * per, horizon)


class _RecordWriter:
    """Writes the step records of one clip's ``S`` samples into the temporary output folder:
    frames, labels, flow and the extras named in ``extras`` (names the model declares), by kind."""

    def __init__(self, tmp: Path, model, samples: int, *, extras: Collection[str], writer: Callable[..., Any],
                 outputs: list[str], geometry=None):
        self.tmp, self.model, self.samples = tmp, model, samples
        self.extras = list(extras)
        self.geo = None if geometry is None or geometry.identity else geometry  # model -> clip pixels
        self.open, self.outputs = writer, outputs
        self.palette = getattr(model, "palette", None)
        self.video: dict[str, Any] = {}
        self.flow_norm: dict[str, float] = {}
        self.steps = 0
        kinds = set(model.outputs)
        for k in range(samples):
            if "frames" in kinds:
                self.video[f"sample_{k:03d}"] = writer(f"sample_{k:03d}.mp4", exact=True)
            if "labels" in kinds:
                (tmp / f"sample_{k:03d}.labels").mkdir()
                outputs.append(f"sample_{k:03d}.labels/")
                self.video[f"labels_sample_{k:03d}"] = writer(f"labels_sample_{k:03d}.mp4")
                if "frames" in kinds:
                    self.video[f"frames_labels_sample_{k:03d}"] = writer(f"frames_labels_sample_{k:03d}.mp4")
            if "probs" in kinds:
                (tmp / f"sample_{k:03d}.probs").mkdir()
                outputs.append(f"sample_{k:03d}.probs/")
            if "flow" in kinds:
                (tmp / f"sample_{k:03d}.flow").mkdir()
                outputs.append(f"sample_{k:03d}.flow/")
                self.video[f"flow_sample_{k:03d}"] = writer(f"flow_sample_{k:03d}.mp4")
            for name in self.extras:
                self.video[f"{name}_sample_{k:03d}"] = writer(f"{name}_sample_{k:03d}.mp4")

    def _flow_video(self, key: str, flows) -> None:
        """(S, 2, H, W) -> colour wheels normalised by the largest magnitude so far in each sample."""
        from vpcli.io.flow import flow_to_color
        f = flows.float().cpu().numpy()
        if self.geo is not None:
            f = self.geo.flow_to_source(f)
        for k in range(self.samples):
            name = f"{key}_sample_{k:03d}"
            self.flow_norm[name] = max(self.flow_norm.get(name, 0.0), float(np.sqrt((f[k] ** 2).sum(0)).max()))
            self.video[name].write(flow_to_color(f[k], max_flow=self.flow_norm[name] or 1.0))

    def write(self, record) -> np.ndarray | None:
        """Write one step record (batch 1); returns the frames ``uint8 (S, H, W, C)`` when it has them."""
        import torch

        from vpcli.io.flow import write_flo
        from vpcli.io.labels import colorize, write_label_png
        frames = None
        geo = self.geo
        if record.frames is not None:
            frames = to_uint8(record.frames[0])  # S,H,W,C
            frames = frames if geo is None else geo.frames_to_source(frames)
            for k in range(self.samples):
                self.video[f"sample_{k:03d}"].write(frames[k])
        if record.labels is not None:
            labels = record.labels[0].cpu().numpy()  # S,H,W
            labels = labels if geo is None else geo.labels_to_source(labels)
            for k in range(self.samples):
                write_label_png(self.tmp / f"sample_{k:03d}.labels" / f"{self.steps:05d}.png", labels[k], self.palette)
                colour = colorize(labels[k], self.palette)
                self.video[f"labels_sample_{k:03d}"].write(colour)
                if frames is not None:  # frames | labels, grey frames as RGB
                    rgb = np.repeat(frames[k], 3, axis=-1) if frames[k].shape[-1] == 1 else frames[k]
                    self.video[f"frames_labels_sample_{k:03d}"].write(np.concatenate([rgb, colour], axis=1))
        if record.probs is not None:
            probs = record.probs[0].to("cpu", torch.float32).numpy()  # S,K,H,W
            probs = (probs if geo is None else geo.maps_to_source(probs)).astype(np.float16)  # halves the files
            for k in range(self.samples):
                np.save(self.tmp / f"sample_{k:03d}.probs" / f"{self.steps:05d}.npy", probs[k])
        if record.flow is not None:
            flows = record.flow[0]  # S,2,H,W
            f = flows.float().cpu().numpy()
            f = f if geo is None else geo.flow_to_source(f)
            for k in range(self.samples):
                write_flo(self.tmp / f"sample_{k:03d}.flow" / f"{self.steps:05d}.flo", f[k])
            self._flow_video("flow", flows)
        for name in self.extras:
            value = record.extras[name][0]  # S,c,H,W
            if self.model.extras[name].kind == "flow":
                self._flow_video(name, value)
            else:
                img = to_uint8(value)  # S,H,W,c
                img = img if geo is None else geo.frames_to_source(img)
                for k in range(self.samples):
                    self.video[f"{name}_sample_{k:03d}"].write(img[k])
        self.steps += 1
        return frames


def context_inputs(path: Path, model, filler, rgb, facts: dict[str, Any]):
    """The context batch for ``model``: ``rgb`` plus its declared labels / flow over the context
    frames, from the clip's companions (mapped like the frames, ``facts["geometry"]``) or computed
    by ``filler``."""
    import torch

    from vpcli.data.clips import clip_companions, flow_at, labels_at
    from vpcli.engine.inputs import COMPANION
    batch: dict[str, Any] = {"rgb": rgb}
    extra = [k for k in ("labels", "flow") if k in model.inputs]
    if not extra:
        return batch
    s, e = facts["indices"]
    idx = np.arange(s, e)
    src_hw = tuple(facts["source_size"])
    comp = clip_companions(path)
    for kind in extra:
        if getattr(filler.cfg, kind) != COMPANION:
            continue  # computed below, on the frames the model sees
        if kind not in comp:
            raise filler.missing(kind, str(path))
        if kind == "labels":
            lab = labels_at(comp, idx, src_hw)
            lab = facts["geometry"].labels_to_model(lab)
            batch["labels"] = torch.from_numpy(np.ascontiguousarray(lab)).long()[None].to(rgb.device)
        else:
            fl = flow_at(comp, idx, src_hw)
            fl = facts["geometry"].flow_to_model(fl)
            batch["flow"] = torch.from_numpy(np.ascontiguousarray(fl)).float()[None].to(rgb.device)
        facts.setdefault("inputs_from", {})[kind] = str(comp[kind])
    return filler(batch)


def predict_clip(path: Path, out_dir: Path, model, cfg, weights_info: dict[str, Any], *, horizon: int,
                 samples: int = 1, seed: int = 0, start: int | None = None, context: int | None = None,
                 size: tuple[int, int] | None = None, fit: str = "letterbox", grid: bool = False,
                 save_components: bool = False, lossless: bool = False,
                 precision: str = "fp32", device: str = "cpu", overwrite: bool = False,
                 callback: Callback | None = None, extra_meta: dict[str, Any] | None = None,
                 filler=None) -> dict[str, Any]:
    """Predict ``horizon`` steps x ``samples`` for one clip into ``out_dir`` (layout: module docstring)."""
    import torch

    from vpcli.engine.inputs import InputFiller
    from vpcli.io.atomic import atomic_dir, check_overwrite
    from vpcli.io.composite import composite_frames
    from vpcli.io.runmeta import run_meta, write_meta
    from vpcli.io.video import VideoWriter
    from vpcli.predictors.base import check_record

    path, out_dir = Path(path), Path(out_dir)
    check_overwrite(out_dir, overwrite)  # before decoding anything
    filler = filler or InputFiller(model.inputs, cfg.inputs, method=cfg.method, device=device)
    t_start = time.perf_counter()
    n_ctx = context if context is not None else int(cfg.data.context)
    notes: list[str] = []

    def check_memory(geo):  # before the clip is decoded (vpcli.engine.memory)
        if torch.device(device).type != "cpu":
            return None
        from vpcli.engine.inputs import COMPANION
        from vpcli.engine.memory import check_predict_memory
        computed = frozenset(k for k in ("labels", "flow") if k in model.inputs and getattr(filler.cfg, k) != COMPANION)
        return check_predict_memory(model, context=n_ctx, work=geo.work, samples=samples, fill=filler,
                                    computed=computed, precision=precision,
                                    writers=_encoder_memory(model, geo.out, n_ctx, horizon, samples, grid,
                                                            save_components),
                                    what=weights_info.get("name") or cfg.method)

    ctx, source_ctx, facts = load_context(path, context=n_ctx, start=start, model=model, cfg=cfg,
                                          weights_info=weights_info, size=size, fit=fit, callback=callback,
                                          warnings_sink=notes, check_geometry=check_memory)
    fps = facts["fps"]
    geo = facts["geometry"]
    c_len, h, w, ch = ctx.shape  # what the model sees
    out_h, out_w = geo.out       # what is written
    if callback:
        callback("input", {"input": str(path), "out": str(out_dir), "frames": horizon, "samples": samples})
    # Canonical strides (not a permuted view): convolution kernels pick their path from the
    # strides, so a view would give results 1e-6 away from the same context built the usual way.
    rgb = torch.from_numpy(np.ascontiguousarray(ctx.transpose(0, 3, 1, 2))).float().div(255)[None].to(device)
    batch = context_inputs(path, model, filler, rgb, facts)
    t_decode = time.perf_counter() - t_start
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")
    timings = {"decode": t_decode, "predict": 0.0, "write": 0.0}
    outputs: list[str] = []
    makes_frames = "frames" in model.outputs
    with atomic_dir(out_dir, overwrite=overwrite) as tmp, contextlib.ExitStack() as stack:
        def writer(name: str, exact: bool = False) -> VideoWriter:
            outputs.append(name)
            return stack.enter_context(VideoWriter(tmp / name, fps, lossless=exact and lossless))

        tic = time.perf_counter()
        ctx_writer = writer("context.mp4", exact=True)
        shown_ctx = source_ctx if geo.out == geo.source else geo.frames_to_source(ctx)  # crop: what the model saw
        for f in shown_ctx:
            ctx_writer.write(f)
        # every extra with --save-components; without it the ones the method marks "always"
        extras = [n for n, e in model.extras.items() if save_components or e.always]
        records = _RecordWriter(tmp, model, samples, extras=extras, writer=writer,
                                outputs=outputs, geometry=geo)
        grid_frames = feeds = None
        if grid and makes_frames:
            shown = min(samples, GRID_MAX_SAMPLES)
            feeds = [_Feed() for _ in range(shown)]
            grid_frames = composite_frames([_rgb(f) for f in shown_ctx], feeds,
                                           captions=["context"] + [f"sample {k}" for k in range(shown)])
            grid_writer = writer("grid.mp4")
            for _ in range(c_len):  # the context phase of the composite
                grid_writer.write(next(grid_frames))
        timings["write"] += time.perf_counter() - tic

        steps = 0
        with torch.inference_mode(), autocast:
            it = iter(model.predict(batch, horizon, samples, gen, want_extras=bool(extras)))
            while steps < horizon:
                tic = time.perf_counter()
                record = next(it, None)
                timings["predict"] += time.perf_counter() - tic
                if record is None:
                    break
                tic = time.perf_counter()
                check_record(record, model, steps, batch=1, samples=samples, size=(h, w), channels=ch,
                             want_extras=bool(extras))
                frames = records.write(record)
                if grid_frames is not None:
                    for k, feed in enumerate(feeds):
                        feed.value = _rgb(frames[k])
                    grid_writer.write(next(grid_frames))
                steps += 1
                timings["write"] += time.perf_counter() - tic
                if callback:
                    callback("progress", {"input": str(path), "done": steps, "total": horizon})
        if steps < horizon:
            raise InputError(f"{cfg.method}.predict yielded {steps} steps for a horizon of {horizon}",
                             "the predictor breaks the Predictor contract")
        if grid_frames is not None:
            grid_frames.close()
        tic = time.perf_counter()
        stack.close()  # flush and publish every video inside the temporary folder
        timings["write"] += time.perf_counter() - tic
        seconds = time.perf_counter() - t_start
        fps_pred = steps * samples / max(timings["predict"], 1e-9)
        record = {"output": str(out_dir), "method": cfg.method, "samples": samples, "frames": steps,
                  "context": facts["indices"], "height": out_h, "width": out_w, "seconds": round(seconds, 3),
                  "predicted_frames_per_s": round(fps_pred, 2), "warnings": notes}
        meta = run_meta(
            command="predict", input=str(path), source=facts["source"], method=cfg.method, weights=weights_info,
            model=cfg.to_dict().get("model", {}),
            seed=seed, samples=samples, horizon=horizon,
            context={"frames": c_len, "indices": list(range(*facts["indices"])),
                     "start": facts["indices"][0], "chosen_by": "--start" if start is not None else "last frames of the clip"},
            first_predicted_frame=facts["indices"][1],  # sample_K frame t is frame first + t of the input (vpcli eval)
            inputs={**filler.describe(), **facts.get("inputs_from", {})},
            predicted=sorted(model.outputs), extras={n: {"kind": model.extras[n].kind,
                                                         "description": model.extras[n].description} for n in extras},
            size=[out_h, out_w], model_size=[h, w], geometry=geo.as_meta(), channels=ch,
            source_size=facts["source_size"], conversions=facts["conversions"],
            memory_check=facts.get("memory", "not probed (small, a device other than the CPU, or "
                                             "VPCLI_MEMORY_LIMIT=none)"),
            warnings=notes, fps=fps, lossless=lossless, precision=precision, grid=grid and makes_frames,
            save_components=save_components, device=device, batch_size=1,
            outputs=sorted(outputs) + ["meta.json"],
            layout="sample_K.* hold only the predicted future steps; context.mp4 the context frames",
            flow_convention=("predicted flow (sample_K.flow/): forward flow from the previous frame into each "
                             "predicted frame, (u, v) pixels; colour wheels normalised by the largest magnitude "
                             "so far in the sample"),
            timings={k: round(v, 4) for k, v in {**timings, "total": seconds}.items()},
            predicted_frames_per_s=round(fps_pred, 2), versions=_versions(), **(extra_meta or {}))
        write_meta(tmp, meta)
    if callback:
        callback("done", {"input": str(path), **record})
    return record


# --------------------------------------------------------------------------------------------
# Many clips: what `vpcli.api.predict` dispatches to


def _default_for_each(items: Sequence[Any], fn: Callable[[Any], dict[str, Any]]) -> list[dict[str, Any]]:
    return [fn(item) for item in items]  # raise on the first failure


@dataclass(frozen=True, kw_only=True)
class PredictOptions(DeviceOptions):
    """Everything `vpcli predict` takes besides inputs, output and callbacks (declared once, here).

    ``method`` defaults to the weights' method, or ``slamp`` when no weights are given.
    ``labels_from`` / ``flow_from`` override where the method's label / flow inputs come from
    (default: the weights' config, see :mod:`vpcli.engine.inputs`).
    """

    method: str | None = None
    weights: str | None = None
    horizon: int = 30
    samples: int = 1
    start: int | None = None
    context: int | str | None = None  # N, or weights (run, file, name) whose context length to take
    size: str | tuple[int, int] | None = None  # --size HxW: a working resolution (vpcli.engine.geometry)
    fit: str = "letterbox"                     # --fit letterbox|crop|stretch for fixed-size weights
    resize: bool = False                       # the old flag: --fit stretch
    overrides: tuple[str, ...] = ()            # --set model.KEY=VALUE on the weights' model config
    grid: bool = False
    save_components: bool = False
    lossless: bool = False
    precision: str = "fp32"
    batch_size: int = 1
    labels_from: str | None = None
    flow_from: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int(self.horizon, "--horizon")
        check_positive_int(self.samples, "--samples")
        if self.start is not None and (isinstance(self.start, bool) or not isinstance(self.start, int)
                                       or self.start < 0):
            raise UsageError(f"--start must be an integer >= 0, got {self.start!r}",
                             "omit --start to use the last frames of the clip")
        if isinstance(self.context, str) and self.context.strip().lstrip("+-").isdigit():
            object.__setattr__(self, "context", int(self.context))  # a frozen dataclass
        if self.context is not None and not isinstance(self.context, str):
            check_positive_int(self.context, "--context")
        if self.precision not in PRECISIONS:
            raise UsageError(f"unknown precision {self.precision!r}", f"choose one of {', '.join(PRECISIONS)}")
        object.__setattr__(self, "overrides", check_model_overrides(self.overrides))
        if self.fit not in FITS:
            raise UsageError(f"--fit must be one of {', '.join(FITS)}, got {self.fit!r}",
                             "letterbox keeps the whole frame, crop the centre, stretch changes the aspect ratio")
        if self.size is not None:
            parse_size(self.size, "--size", min_side=MIN_SIDE)  # a bad --size: exit 2 before anything loads


def context_length(context: int | str | None, cfg, weights_info: dict[str, Any]) -> int | None:
    """``--context``: None (the weights' length), N, or weights whose ``data.context`` to take
    (so that a parameter-free baseline sees the frames the method it is compared with sees)."""
    if not isinstance(context, str):
        return context
    from vpcli.engine.loading import context_of
    return context_of(context)


def predict(inputs: Sequence[str | Path], out: str | Path, options: PredictOptions | None = None, *,
            callback: Callback | None = None,
            for_each: Callable[[Sequence[Any], Callable[[Any], dict[str, Any]]], Any] | None = None) -> Any:
    """Predict the future of every input clip into ``out/<name>/`` (see the module docstring).

    Options are checked and the predictor is loaded once, before any input is touched (usage
    errors exit 2). ``for_each(items, fn)`` runs ``fn`` over the ``(path, name)`` items and its
    result is returned: the CLI passes ``vpcli.cli.common.run_per_input`` (keep going after a
    failed input, summarise, return the exit code); the default raises the first error and
    returns the records. ``callback(event, record)`` gets ``start``, ``input``, ``progress``,
    ``warning`` and ``done`` events.
    """
    from vpcli.engine.inputs import InputFiller
    from vpcli.engine.loading import default_weights_line, load_predictor
    from vpcli.io.sources import collect_inputs

    o = options or PredictOptions()
    from vpcli.engine.options import MEMORY_ENV, parse_bytes
    if MEMORY_ENV in os.environ:  # a bad VPCLI_MEMORY_LIMIT is a usage error before anything loads
        parse_bytes(os.environ[MEMORY_ENV])
    method = o.method if (o.weights is not None or o.method is not None) else "slamp"
    # Without --weights the method's manifest entries are the defaults: the first one for RGB clips
    # is loaded now (usage errors before any input), a greyscale clip gets the first one for grey
    # clips (loaded when the first grey clip comes).
    model, cfg, winfo = load_predictor(method, o.weights, device=o.device, channels=3, overrides=list(o.overrides))
    loaded = {3: (model, cfg, winfo)}
    announced: set[str] = set()
    made_for: dict[str, str] = {}  # default weights name -> its one line (what its works_on says)
    context = context_length(o.context, cfg, winfo)
    from vpcli import precision as _precision
    run_precision, precision_warning = _precision.resolve(o.precision, o.device)
    size = parse_size(o.size, "--size", min_side=MIN_SIDE) if o.size is not None else None
    if size is not None:  # fixed-size weights and another --size: a usage error before any input
        clip_geometry(size, model, cfg, winfo, size=size)

    def for_clip(path: Path):
        if not winfo.get("default") or getattr(model.config, "channels", 3) != 3:
            return model, cfg, winfo
        if not is_greyscale(first_frame(path)):
            return loaded[3]
        if 1 not in loaded:
            loaded[1] = load_predictor(method, None, device=o.device, channels=1, overrides=list(o.overrides))
        return loaded[1]

    if o.save_components and not model.extras:
        raise UsageError(f"--save-components: {cfg.method} reports no extra maps to save",
                         "drop --save-components (see `vpcli predict --help` for the methods that have them)")
    input_cfg = cfg.inputs.with_overrides(o.labels_from, o.flow_from)
    fillers: dict[int, Any] = {}
    notes: list[str] = []
    if precision_warning:
        _warn(callback, precision_warning, notes)
    if o.batch_size != 1:
        _warn(callback, f"--batch-size {o.batch_size}: predict runs one clip per forward pass (the samples of a clip "
                        "are one batch); using 1", notes)
    items = collect_inputs(list(inputs), recursive=o.recursive, shard=o.shard)
    out = Path(out)
    if callback:
        callback("start", {"method": cfg.method, "inputs": len(items), "out": str(out), "weights": winfo})

    def one(item: tuple[Path, str]) -> dict[str, Any]:
        path, name = item
        model, cfg, winfo = for_clip(path)
        if id(model) not in fillers:  # one per model: an on-the-fly segmenter / flow net loads once
            fillers[id(model)] = InputFiller(model.inputs, input_cfg, method=cfg.method, device=o.device)
        clip_notes = list(notes)

        def note(msg: str) -> None:  # in this clip's meta.json; on stderr once per run, not once per clip
            clip_notes.append(msg)
            if msg not in announced:
                announced.add(msg)
                _warn(callback, msg, [])

        if winfo.get("kind") is None and o.context is None:
            note(f"{cfg.method} has no context length of its own: using {cfg.data.context} frames; pass "
                 "--context N, or --context WEIGHTS to take the context of the method it is compared with")
        if winfo.get("default"):
            if winfo["name"] not in made_for:  # the manifests are read once per default model, not per clip
                made_for[winfo["name"]] = default_weights_line(winfo)
            note(made_for[winfo["name"]])
        samples = o.samples
        if getattr(model, "deterministic", False) and samples > 1:
            samples = 1
            note(f"{cfg.method} is deterministic: --samples {o.samples} would give {o.samples} identical "
                 "samples; writing one")
        return predict_clip(path, out / name, model, cfg, winfo, horizon=o.horizon, samples=samples, seed=o.seed,
                            start=o.start, context=context, size=size, fit="stretch" if o.resize else o.fit,
                            grid=o.grid,
                            save_components=o.save_components, lossless=o.lossless, precision=run_precision,
                            device=o.device, overwrite=o.overwrite, callback=callback, filler=fillers[id(model)],
                            extra_meta={"name": name, "notes": clip_notes} if clip_notes else {"name": name})

    return (for_each or _default_for_each)(items, one)


__all__ = ["PredictOptions", "PredictWarning", "context_length", "context_range", "is_greyscale", "luma_601", "predict",
           "predict_clip", "to_uint8"]

"""The engine behind `vpcli flow`: stream each clip's frames, estimate flow pair by pair, write.

Per input, ``OUT/<name>/`` holds (directions as asked)::

    forward/00000.flo ...        one Middlebury .flo per frame pair, flow t -> t+1
    backward/00000.flo ...       flow t+1 -> t (index t), with --direction backward|both
    flow_forward.npz             key "flow", float32 (T-1, 2, H, W)   (flow_backward.npz likewise)
    flow_forward.mp4             colour wheel, one normalisation (the clip's largest magnitude)
    occlusion.npz                with --occlusion: keys "forward" (pixels of t not visible in t+1)
    occlusion.mp4                and "backward" (pixels of t+1 not visible in t), bool (T-1, H, W);
                                 the video shows forward | backward, white = occluded
    meta.json                    inputs, method and parameters, weights, timings

Frames are decoded as a stream and processed in batches of ``batch_size`` pairs as they arrive,
so memory does not grow with the clip: flow is appended to a scratch file in the output's
temporary folder and the ``.npz`` and ``.mp4`` are written from a memory map of it at the end
(the colour wheel needs the clip's largest magnitude before its first frame). The folder is
assembled under a temporary name and renamed when complete (vpcli.io.atomic.atomic_dir).

The ``.npz`` files are stored, not deflated: float flow hardly compresses and deflating it costs
more than estimating it with DIS (the same choice as vpcli.data.synth_street).
"""
from __future__ import annotations

import contextlib
import time
import warnings as _warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vpcli.engine.options import DeviceOptions, check_memory
from vpcli.errors import UsageError, VideoError
from vpcli.io.sources import collect_inputs, parse_size

DIRECTIONS = ("forward", "backward", "both")
Callback = Callable[[str, dict[str, Any]], None]
# The smallest frame side a backend works on: OpenCV's DIS refuses frames under 12 pixels (it
# wants 8 on both sides and 12 on one); Farneback and PWC-Net (which pads) take any size.
MIN_SIDE = {"dis": 12}
# Peak memory per pixel of one frame pair and direction, measured at 1024x1024 with batch 4:
# DIS and Farneback ~30 bytes, PWC-Net (fp32) ~320 bytes; rounded up for the frames held.
BYTES_PER_PIXEL = {"dis": 40, "farneback": 40, "pwcnet": 400}
# Plausibility (any backend): a vector is "far" when it moves more than a third of the frame
# (|u| / W, |v| / H as one normalised length) or is not finite; a pair whose vectors are mostly
# far is implausible for real video, where consecutive frames overlap. The first bundled PWC-Net
# answered 50-420 px for a 2 px motion at 256x384 (issue 16): this is the line that says so.
FAR_FRACTION = 1 / 3
IMPLAUSIBLE_SHARE = 0.5


class FlowWarning(UserWarning):
    """Implausible flow, when :func:`flow_clip` runs without a callback (library use)."""


def far_share(flows: np.ndarray) -> np.ndarray:
    """Per pair of ``flows`` ``(N, 2, H, W)``: the share of vectors longer than :data:`FAR_FRACTION`
    of the frame (normalised by W for u and H for v), non-finite vectors counted as far."""
    flows = np.asarray(flows, dtype=np.float32)
    h, w = flows.shape[-2:]
    rel = np.hypot(flows[:, 0] / w, flows[:, 1] / h)  # (N, H, W)
    far = ~(rel <= FAR_FRACTION)  # NaN compares False: counted as far
    return far.reshape(len(flows), -1).mean(1)


def implausible_flow_message(direction: str, shares: list[float], max_flow: float, hw: tuple[int, int],
                             method: str) -> str | None:
    """One line when some pairs' flow is implausible for the frame size (see :func:`far_share`), else None."""
    bad = [s for s in shares if s > IMPLAUSIBLE_SHARE]
    if not bad:
        return None
    h, w = hw
    hint = "try --method dis" if method != "dis" else "check the input"
    return (f"{direction} flow looks implausible for {h}x{w} (HxW) frames: on {len(bad)} of {len(shares)} pairs "
            f"most vectors ({max(bad):.0%} at worst) move more than a third of the frame (largest "
            f"{max_flow:.0f} px); the estimate is probably wrong ({hint})")


def check_flow_memory(method: str, hw: tuple[int, int], batch_size: int, directions: int, device: str) -> None:
    """Refuse (UsageError) a frame size x batch that cannot fit in the free memory of ``device``."""
    h, w = hw
    need = BYTES_PER_PIXEL.get(method, 400) * h * w * batch_size * directions
    check_memory(need, device if method == "pwcnet" else "cpu",
                 f"{method} flow at {h}x{w} with --batch-size {batch_size}",
                 "lower --batch-size, or pass a smaller --size HxW")


# --------------------------------------------------------------------------------------------
# Building the estimator


def build_estimator(method: str = "dis", *, device: str = "cpu", weights: str | None = None,
                    preset: str | None = None, precision: str | None = None):
    """The registered flow backend ``method`` with the options that apply to it.

    Unknown methods, and options given to a backend that has no use for them, are usage errors
    (exit 2) naming the valid choices.
    """
    from vpcli import registry
    valid = registry.names("flow")
    if method not in valid:
        import difflib
        close = difflib.get_close_matches(method, valid, n=1)
        raise UsageError(f"unknown flow method {method!r}",
                         (f"did you mean {close[0]!r}? " if close else "") + f"valid methods: {', '.join(valid)}")
    kwargs: dict[str, Any] = {"device": device}
    if preset is not None:
        if method != "dis":
            raise UsageError(f"--preset applies to --method dis only, not {method}", "drop --preset")
        kwargs["preset"] = preset
    if weights is not None:
        if method != "pwcnet":
            raise UsageError(f"--weights applies to --method pwcnet only, not {method} (which needs no weights)",
                             "drop --weights")
        kwargs["weights"] = weights
    if precision is not None:
        if method != "pwcnet":
            raise UsageError(f"--precision applies to --method pwcnet only, not {method}", "drop --precision")
        kwargs["precision"] = precision
    return registry.create("flow", method, **kwargs)


# --------------------------------------------------------------------------------------------
# Streaming computation (no files): what the benchmark times


def iter_pair_flows(frames: Iterable[np.ndarray], estimator, *, batch_size: int = 8, forward: bool = True,
                    backward: bool = False, timings: dict[str, float] | None = None,
                    source: str = "input") -> Iterator[tuple[int, np.ndarray | None, np.ndarray | None]]:
    """Stream ``frames`` (``uint8 (H, W, 3)`` each) and yield ``(t0, fwd, bwd)`` per batch:
    ``fwd[i]`` is flow ``t0+i -> t0+i+1`` and ``bwd[i]`` flow ``t0+i+1 -> t0+i`` (``(n, 2, H, W)``
    float32, or None when not asked). Only ``batch_size + 1`` frames are held at a time.

    Forward and backward pairs of a batch go to the estimator in one call (one batch for a
    network). ``timings`` (if given) accumulates ``decode`` and ``estimate`` seconds.
    """
    if batch_size < 1:
        raise UsageError(f"batch size must be >= 1, got {batch_size}", "pass batch_size=1 or more")
    t = timings if timings is not None else {}
    t.setdefault("decode", 0.0)
    t.setdefault("estimate", 0.0)
    held: list[np.ndarray] = []  # frames t0 .. t0 + n (the last one starts the next batch)
    t0 = 0
    first_shape = None
    it = iter(frames)
    while True:
        tic = time.perf_counter()
        frame = next(it, None)
        t["decode"] += time.perf_counter() - tic
        if frame is not None:
            if first_shape is None:
                first_shape = frame.shape
            elif frame.shape != first_shape:
                raise VideoError(f"frame {t0 + len(held)} of {source} is {frame.shape[0]}x{frame.shape[1]} (HxW) but frame 0 "
                                 f"is {first_shape[0]}x{first_shape[1]}",
                                 "all frames of a clip must have one size (or pass --size HxW to resize them)")
            held.append(frame)
        if len(held) >= 2 and (frame is None or len(held) == batch_size + 1):
            stack = np.stack(held)  # (n+1, H, W, 3)
            a, b = stack[:-1], stack[1:]
            n = len(a)
            tic = time.perf_counter()
            if forward and backward:
                both = estimator.estimate(np.concatenate([a, b]), np.concatenate([b, a]))
                fwd, bwd = both[:n], both[n:]
            elif forward:
                fwd, bwd = estimator.estimate(a, b), None
            else:
                fwd, bwd = None, estimator.estimate(b, a)
            t["estimate"] += time.perf_counter() - tic
            yield t0, fwd, bwd
            t0 += n
            held = held[-1:]
        if frame is None:
            return


# --------------------------------------------------------------------------------------------
# Writing one direction


class _FlowSink:
    """Writes one direction: .flo per pair now; scratch file -> .npz and colour-wheel .mp4 at the end."""

    def __init__(self, folder: Path, direction: str):
        from vpcli.io.flow import flo_bytes
        self._flo_bytes = flo_bytes
        self.folder = folder
        self.direction = direction
        (folder / direction).mkdir()
        self.scratch = folder / f".{direction}.scratch.f32"
        self._fh = open(self.scratch, "wb")
        self.count = 0
        self.shape: tuple[int, int] | None = None
        self.max_flow = 0.0
        self.far_shares: list[float] = []  # per pair, for the plausibility warning

    def add(self, flows: np.ndarray) -> None:
        from vpcli.io.flow import max_magnitude
        flows = np.ascontiguousarray(flows, dtype=np.float32)
        self.shape = flows.shape[2:]
        self.far_shares.extend(float(x) for x in far_share(flows))
        for f in flows:
            (self.folder / self.direction / f"{self.count:05d}.flo").write_bytes(self._flo_bytes(f))
            self.count += 1
        self._fh.write(flows.tobytes())
        self.max_flow = max(self.max_flow, max_magnitude(flows))

    def finish(self, fps: float) -> dict[str, Any]:
        from vpcli.io.flow import write_flow_video
        self._fh.close()
        h, w = self.shape
        flows = np.memmap(self.scratch, np.float32, "r", shape=(self.count, 2, h, w))
        npz = self.folder / f"flow_{self.direction}.npz"
        with open(npz, "wb") as f:
            np.savez(f, flow=flows)  # stored (see the module docstring); streams from the memory map
        video = self.folder / f"flow_{self.direction}.mp4"
        write_flow_video(video, flows, fps=fps, max_flow=self.max_flow or 1.0)
        del flows
        self.scratch.unlink()
        return {"flo": f"{self.direction}/", "npz": npz.name, "video": video.name,
                "max_flow": round(self.max_flow, 4)}

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._fh.close()


class _OcclusionSink:
    def __init__(self, folder: Path):
        self.folder = folder
        self.scratch = {d: folder / f".occ_{d}.scratch.u8" for d in ("forward", "backward")}
        self._fh = {d: open(p, "wb") for d, p in self.scratch.items()}
        self.count = 0
        self.shape: tuple[int, int] | None = None
        self.fraction = {"forward": 0.0, "backward": 0.0}

    def add(self, occ_f: np.ndarray, occ_b: np.ndarray) -> None:
        self.shape = occ_f.shape[1:]
        for d, occ in (("forward", occ_f), ("backward", occ_b)):
            self._fh[d].write(np.ascontiguousarray(occ, dtype=np.uint8).tobytes())
            self.fraction[d] += float(occ.mean()) * len(occ)
        self.count += len(occ_f)

    def finish(self, fps: float) -> dict[str, Any]:
        from vpcli.io.video import VideoWriter
        for fh in self._fh.values():
            fh.close()
        h, w = self.shape
        maps = {d: np.memmap(p, np.uint8, "r", shape=(self.count, h, w)) for d, p in self.scratch.items()}
        with open(self.folder / "occlusion.npz", "wb") as f:
            np.savez_compressed(f, forward=maps["forward"].view(bool), backward=maps["backward"].view(bool))
        sep = np.full((h, 2), 128, np.uint8)
        with VideoWriter(self.folder / "occlusion.mp4", fps=fps) as writer:
            for of, ob in zip(maps["forward"], maps["backward"]):
                writer.write(np.hstack([of * 255, sep, ob * 255]))  # forward | backward, white = occluded
        del maps
        for p in self.scratch.values():
            p.unlink()
        return {"npz": "occlusion.npz", "video": "occlusion.mp4",
                "fraction": {d: round(v / max(self.count, 1), 5) for d, v in self.fraction.items()}}

    def close(self) -> None:
        for fh in self._fh.values():
            with contextlib.suppress(OSError):
                fh.close()


# --------------------------------------------------------------------------------------------
# One clip


def flow_clip(path: Path, out_dir: Path, estimator, *, direction: str = "forward", occlusion: bool = False,
              batch_size: int = 8, size: tuple[int, int] | None = None, overwrite: bool = False,
              callback: Callback | None = None, extra_meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Estimate and write the flow of one clip into ``out_dir`` (layout in the module docstring)."""
    from vpcli.io.runmeta import run_meta, video_info, write_meta
    from vpcli.io.atomic import atomic_dir, check_overwrite
    from vpcli.io.video import iter_frames, probe
    from vpcli.preprocess.occlusion import ALPHA1, ALPHA2, forward_backward_occlusion

    if direction not in DIRECTIONS:
        raise UsageError(f"unknown direction {direction!r}", f"choose one of {', '.join(DIRECTIONS)}")
    path, out_dir = Path(path), Path(out_dir)
    check_overwrite(out_dir, overwrite)  # before decoding anything
    info = probe(path)
    if info.num_frames < 2:
        raise VideoError(f"{path} has {info.num_frames} frame; optical flow needs at least 2 frames",
                         "pass a clip with two or more frames")
    want_fwd = direction in ("forward", "both")
    want_bwd = direction in ("backward", "both")
    need_fwd, need_bwd = want_fwd or occlusion, want_bwd or occlusion
    name = getattr(estimator, "name", "")
    hw = tuple(size) if size is not None else (info.height, info.width)
    if min(hw) < MIN_SIDE.get(name, 1):
        m = MIN_SIDE[name]
        raise VideoError(f"{path} is {hw[0]}x{hw[1]} (HxW) but {name} flow needs frames at least {m} pixels a side",
                         f"pass --size HxW to resize the frames (e.g. --size {max(m, hw[0])}x{max(m, hw[1])}), or "
                         "use --method farneback")
    check_flow_memory(name, hw, batch_size, 1 + (need_fwd and need_bwd), str(getattr(estimator, "device", "cpu")))
    total = info.num_frames - 1
    timings = {"decode": 0.0, "estimate": 0.0, "write": 0.0}
    start = time.perf_counter()
    if callback:
        callback("input", {"input": str(path), "out": str(out_dir), "pairs": total})
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        sinks = {d: _FlowSink(tmp, d) for d, w in (("forward", want_fwd), ("backward", want_bwd)) if w}
        occ = _OcclusionSink(tmp) if occlusion else None
        shape = None
        try:
            frames = iter_frames(path, size=size)
            with contextlib.closing(frames):
                for t0, fwd, bwd in iter_pair_flows(frames, estimator, batch_size=batch_size, forward=need_fwd,
                                                    backward=need_bwd, timings=timings, source=str(path)):
                    tic = time.perf_counter()
                    shape = (fwd if fwd is not None else bwd).shape[2:]
                    if "forward" in sinks:
                        sinks["forward"].add(fwd)
                    if "backward" in sinks:
                        sinks["backward"].add(bwd)
                    if occ is not None:
                        occ.add(*forward_backward_occlusion(fwd, bwd))
                    timings["write"] += time.perf_counter() - tic
                    if callback:
                        callback("progress", {"input": str(path), "done": t0 + len(fwd if fwd is not None else bwd),
                                              "total": total})
            pairs = next(iter(sinks.values())).count if sinks else 0
            if shape is None or pairs == 0:  # the header promised frames that did not decode
                raise VideoError(f"{path} decoded fewer than 2 frames; optical flow needs at least 2 frames",
                                 "pass a clip with two or more frames")
            tic = time.perf_counter()
            outputs = {d: s.finish(info.fps) for d, s in sinks.items()}
            if occ is not None:
                outputs["occlusion"] = occ.finish(info.fps)
            timings["write"] += time.perf_counter() - tic
        finally:
            for s in sinks.values():
                s.close()
            if occ is not None:
                occ.close()
        seconds = time.perf_counter() - start
        h, w = shape
        warnings = [m for m in (implausible_flow_message(d, s.far_shares, s.max_flow, (int(h), int(w)), name)
                                for d, s in sinks.items()) if m]
        record = {"output": str(out_dir), "method": estimator.name, "direction": direction, "frames": pairs + 1,
                  "pairs": pairs, "height": int(h), "width": int(w), "seconds": round(seconds, 3),
                  "estimate_pairs_per_s": round(pairs * (int(need_fwd) + int(need_bwd)) / max(timings["estimate"], 1e-9), 2)}
        meta = run_meta(
            command="flow", input=str(path), source=video_info(path), method=estimator.name,
            parameters=estimator.describe(), direction=direction, occlusion=occlusion,
            occlusion_check=({"alpha1": ALPHA1, "alpha2": ALPHA2, "outside_is_occluded": True,
                              "reference": "Sundaram et al. ECCV 2010; thresholds of UnFlow (Meister et al. AAAI 2018)"}
                             if occlusion else None),
            size=list(size) if size else None, frames=pairs + 1, pairs=pairs, height=int(h), width=int(w),
            fps=info.fps, batch_size=batch_size, outputs=outputs,
            flow_convention="float32 (u, v) pixels, x right, y down; forward[t]: t -> t+1, backward[t]: t+1 -> t",
            timings={k: round(v, 4) for k, v in {**timings, "total": seconds}.items()},
            warnings=warnings, versions=_versions(), **(extra_meta or {}))
        write_meta(tmp, meta)
    for message in warnings:  # one line each, self-contained (the renderer prints the message as is)
        if callback:
            callback("warning", {"input": str(path), "message": f"{path}: {message}"})
        else:
            _warnings.warn(f"{path}: {message}", FlowWarning, stacklevel=2)
    if callback:
        callback("done", {"input": str(path), **record})
    return record


def _versions() -> dict[str, str]:
    import sys

    import cv2
    out = {"numpy": np.__version__, "opencv": cv2.__version__}
    if "torch" in sys.modules:
        out["torch"] = sys.modules["torch"].__version__
    return out


# --------------------------------------------------------------------------------------------
# Many clips: what `vpcli.api.estimate_flow` dispatches to


def _default_for_each(items: Sequence[Any], fn: Callable[[Any], dict[str, Any]]) -> list[dict[str, Any]]:
    return [fn(item) for item in items]  # raise on the first failure


@dataclass(frozen=True, kw_only=True)
class FlowOptions(DeviceOptions):
    """Every option of `vpcli flow` (inputs and output folder aside), checked on construction.

    ``size`` may be given as ``"HxW"``; it is stored as the pair ``(H, W)``. The
    backend options (``preset``, ``weights``, ``precision``) are checked against ``method`` by
    :func:`build_estimator`, which knows the registered backends.
    """

    method: str = "dis"
    direction: str = "forward"
    occlusion: bool = False
    size: tuple[int, int] | None = None
    preset: str | None = None
    weights: str | None = None
    precision: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.direction not in DIRECTIONS:
            raise UsageError(f"unknown --direction {self.direction!r}", f"choose one of {', '.join(DIRECTIONS)}")
        # frozen: normalise once, here (a size the backend cannot take is refused now, not by OpenCV later)
        object.__setattr__(self, "size", parse_size(self.size, min_side=MIN_SIDE.get(self.method, 1)))


def estimate_flow(inputs: Sequence[str | Path], out: str | Path, options: FlowOptions | None = None, *,
                  callback: Callback | None = None,
                  for_each: Callable[[Sequence[Any], Callable[[Any], dict[str, Any]]], Any] | None = None) -> Any:
    """Optical flow for every input clip into ``out/<name>/`` (see the module docstring).

    Options are checked (usage errors, exit 2) and the backend is built once, before any input
    is touched. ``for_each(items, fn)`` runs ``fn`` over the ``(path, name)`` items and its result
    is returned: the CLI passes ``vpcli.cli.common.run_per_input`` (keep going after a failed
    input, summarise, return the exit code). The default runs them in order, raises the first
    error and returns the list of records. ``callback(event, record)`` reports ``start``,
    ``input``, ``progress`` and ``done`` events.
    """
    import sys

    o = options if options is not None else FlowOptions()
    if o.size is not None:
        check_flow_memory(o.method, o.size, o.batch_size, 1 + (o.direction == "both" or o.occlusion), o.device)
    estimator = build_estimator(o.method, device=o.device, weights=o.weights, preset=o.preset, precision=o.precision)
    if "torch" in sys.modules:  # every backend is deterministic; the seed is recorded, and set for torch
        sys.modules["torch"].manual_seed(o.seed)
    items = collect_inputs(list(inputs), recursive=o.recursive, shard=o.shard)
    out = Path(out)
    if callback:
        callback("start", {"method": o.method, "inputs": len(items), "out": str(out)})

    def one(item: tuple[Path, str]) -> dict[str, Any]:
        path, name = item
        return flow_clip(path, out / name, estimator, direction=o.direction, occlusion=o.occlusion,
                         batch_size=o.batch_size, size=o.size, overwrite=o.overwrite, callback=callback,
                         extra_meta={"name": name, "seed": o.seed, "device": o.device})

    return (for_each or _default_for_each)(items, one)

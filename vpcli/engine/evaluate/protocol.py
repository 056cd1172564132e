"""The papers' protocol for a predictor (SVG, SLAMP, HVP): best of N samples per test sequence.

For every batch of test sequences the context is encoded once and ``samples`` futures are drawn
as one batch through ``Predictor.predict``; per-frame metrics are computed for every sample as
the steps are yielded. The generator of a batch is seeded by (seed, batch start), so the best and
worst sequences can be re-predicted exactly for the comparison videos.
"""
from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vpcli.engine.evaluate.aggregate import Aggregator, FeatureSet, SequenceRef
from vpcli.engine.evaluate.folders import EvalWarning
from vpcli.engine.evaluate.metrics import MetricRunner
from vpcli.engine.evaluate.outputs import _to_uint8
from vpcli.errors import DataFormatError, InputError, UsageError, VpcliError

if TYPE_CHECKING:
    from vpcli.engine.evaluate.options import Callback

DEFAULT_NUM_SEQUENCES = 100  # synthetic sources: test sequences when num_sequences is not given


@dataclass
class LoadedModel:
    model: Any
    config: Any            # RunConfig
    weights: dict[str, Any]
    size_from_config: bool


def load_predictor(method: str | None, weights: str | None, overrides: list[str], device: str, *,
                   channels: int | None = None) -> LoadedModel:
    """Build the predictor and its RunConfig from a run folder, a checkpoint, a manifest name, or
    nothing (see :func:`vpcli.engine.loading.load_predictor`, shared with `vpcli predict`).
    ``channels`` (the data's, 1 or 3) picks the method's default weights when none are given."""
    from vpcli.engine.loading import load_predictor as load
    model, cfg, info = load(method, weights, device=device, overrides=overrides, channels=channels)
    return LoadedModel(model, cfg, info, info["kind"] is not None)


def _seed_for(seed: int, start: int) -> int:
    digest = hashlib.sha256(f"vpcli-eval:{seed}:{start}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2**63)


def _take(batch_items: list[dict], key: str) -> torch.Tensor:
    return torch.stack([it[key] for it in batch_items])


def _context_batch(items: list[dict], context: int, filler, device: str) -> dict[str, torch.Tensor]:
    """The context of a batch of test sequences with the inputs the method declares: companions the
    dataset loaded (labels over the context frames, flow between them) or computed by ``filler``."""
    out = {"rgb": _take(items, "rgb")[:, :context].to(device)}  # B,C_t,C,H,W
    if "labels" in filler.needs and "labels" in items[0] and filler.cfg.labels == "companion":
        out["labels"] = _take(items, "labels")[:, :context].to(device)
    if "flow" in filler.needs and "flow" in items[0] and filler.cfg.flow == "companion":
        out["flow"] = _take(items, "flow")[:, :max(context - 1, 0)].to(device)
    return filler(out)


def _sequence_name(item: dict) -> str:
    meta = item.get("meta", {})
    sid = str(meta.get("sequence_id", meta.get("index", "")))
    start = int(meta.get("start", 0))
    return sid if start == 0 else f"{sid}@{start}"


# --head NAME scores one of the image extras a predictor declares in ``Predictor.heads`` instead of
# its frames (SLAMP: static, dynamic, average -- App. D, Table 7). The rollout is the model's own
# (its frames are fed back); only what is scored changes.
HEADS = {"fused": "the method's predicted frames (default)"}


def check_head(model, method: str, head: str) -> None:
    """``head`` must be ``fused`` or one the predictor declares."""
    import difflib
    valid = ["fused", *getattr(model, "heads", {})]
    if head not in valid:
        close = difflib.get_close_matches(head, valid, n=1)
        raise UsageError(f"{method} has no head {head!r} to score",
                         (f"did you mean {close[0]!r}? " if close else "") + f"heads of {method}: {', '.join(valid)}")


def _predict_steps(model, ctx: dict, horizon: int, samples: int, seed: int, device: str,
                   head: str = "fused") -> Iterator:
    """The predictor's step records for one batch, drawn from a generator seeded by (seed, batch
    start): the same seed and batch size give the same samples, so a batch can be re-predicted
    exactly. ``head`` other than ``fused`` puts that head's extra in place of the frames."""
    from dataclasses import replace
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    if head == "fused":
        return iter(model.predict(ctx, horizon, samples, gen))
    extra = model.heads[head]
    return (replace(r, frames=r.extras[extra].clamp(0, 1), extras={})
            for r in model.predict(ctx, horizon, samples, gen, want_extras=True))


def _evaluate_model(loaded: LoadedModel, dataset, indices: list[int], metrics: list[MetricRunner], agg: Aggregator,
                    fvd: FeatureSet | None, *, context: int, horizon: int, samples: int, batch_size: int,
                    seed: int, device: str, callback: Callback, head: str = "fused", filler=None) -> None:
    with torch.inference_mode():
        _evaluate_model_batches(loaded, dataset, indices, metrics, agg, fvd, context=context, horizon=horizon,
                                samples=samples, batch_size=batch_size, seed=seed, device=device, callback=callback,
                                head=head, filler=filler)


# What each metric kind scores: the step record's field, and the ground truth of future step t
# (frame context + t) in a dataset item -- the frame itself, its labels, or the flow into it
# (the item's flow[i] runs from frame i to i + 1).
_SCORED = {"frame": ("frames", "rgb", 0), "label": ("labels", "labels", 0), "flow": ("flow", "flow", -1)}


def _evaluate_model_batches(loaded: LoadedModel, dataset, indices: list[int], metrics: list[MetricRunner],
                            agg: Aggregator, fvd: FeatureSet | None, *, context: int, horizon: int, samples: int,
                            batch_size: int, seed: int, device: str, callback: Callback, head: str = "fused",
                            filler=None) -> None:
    from vpcli.predictors.base import check_record
    scored = [m for m in metrics if m.kind in _SCORED]
    model = loaded.model
    total, done = len(indices), 0
    for b0 in range(0, total, batch_size):
        batch_idx = indices[b0:b0 + batch_size]
        items = [dataset[i] for i in batch_idx]
        rgb = _take(items, "rgb")  # B,T,C,H,W
        ctx = _context_batch(items, context, filler, device)
        wanted = {_SCORED[m.kind][1] for m in scored}
        truth = {key: (rgb if key == "rgb" else _take(items, key)).to(device) for key in wanted}
        if "labels" in truth and hasattr(model, "scored_labels"):  # merged classes are scored as their group
            truth["labels"] = model.scored_labels(truth["labels"])
        n_b, c, h, w = rgb.shape[0], *rgb.shape[2:]
        vals = {m.name: torch.full((n_b, samples, horizon), float("nan")) for m in scored}
        caps = {m.name: torch.zeros((n_b, samples, horizon), dtype=torch.bool) for m in scored if m.name == "psnr"}
        first_sample = [] if fvd is not None else None
        steps = 0
        for t, rec in enumerate(_predict_steps(model, ctx, horizon, samples, _seed_for(seed, b0), device, head)):
            if t >= horizon:
                break
            check_record(rec, model, t, batch=n_b, samples=samples, size=(h, w), channels=c, want_extras=False)
            for m in scored:
                field, key, shift = _SCORED[m.kind]
                pred = rec.get(field)  # B,S,...
                gt = truth[key][:, context + t + shift]  # B,...
                pred = pred.reshape(n_b * samples, 1, *pred.shape[2:])  # (B*S),1,...
                gt = gt[:, None].expand(n_b, samples, *gt.shape[1:]).reshape(n_b * samples, 1, *gt.shape[1:])
                try:
                    v, cap = m.per_frame(pred, gt)
                except DataFormatError as e:
                    names = ", ".join(_sequence_name(it) for it in items)
                    raise type(e)(f"{m.name} at future step {t + 1} of sequence(s) {names}: {e.message}",
                                  e.hint) from None
                vals[m.name][:, :, t] = v.view(n_b, samples)
                if cap is not None:
                    caps[m.name][:, :, t] = cap.view(n_b, samples)
            if first_sample is not None:
                first_sample.append(rec.frames[:, 0].to("cpu"))
            steps += 1
        if steps < horizon:
            raise VpcliError(f"{loaded.config.method}.predict yielded {steps} steps for a horizon of {horizon}",
                             "the predictor breaks the Predictor contract")
        if fvd is not None:
            fake = torch.cat([rgb[:, :context], torch.stack(first_sample, dim=1)], dim=1)  # B,C_t+H,C,H,W
            fvd.add(fake, rgb[:, :context + horizon])
        for j, item in enumerate(items):
            name = _sequence_name(item)
            values = {m: v[j].numpy().astype(np.float64) for m, v in vals.items()}
            capped = {m.name: (caps[m.name][j].numpy() if m.name in caps else None) for m in scored}
            ref = {"batch": batch_idx, "pos": j, "seed": _seed_for(seed, b0), "index": batch_idx[j], "head": head}
            record = agg.add(name, values, capped, ref)
            callback("sequence", {"index": done, "total": total, **record})
            done += 1


def _make_test_set(cfg, *, data: str | None, split: str, num_sequences: int | None, size, size_given: bool,
                   from_config: bool, companions: tuple[str, ...] = ()):
    from vpcli.data.clips import make_dataset
    d = cfg.data
    source = data or d.source
    synthetic = source.startswith("synthetic:")
    kwargs: dict[str, Any] = {"context": d.context, "future": d.future, "frame_step": d.frame_step}
    if companions:  # ground truth of label / flow metrics, and inputs whose source is a companion
        kwargs["companions"] = companions
    if size_given or from_config:
        kwargs["size"] = tuple(size if size_given else d.size)
    if from_config or synthetic:
        kwargs["channels"] = d.channels
    if synthetic:
        kwargs["num_clips"] = num_sequences or DEFAULT_NUM_SEQUENCES
        kwargs["split"] = "test" if split == "all" else split
    else:
        kwargs["split"] = None if split == "all" else split
    # The test set does not depend on --seed (which drives the sampling only): seed 0.
    try:
        dataset = make_dataset(source, seed=0, **kwargs)
    except InputError as e:
        if synthetic or split == "all":
            raise
        raise InputError(f"{source}, {split} split: {e.message}",
                         f"a small folder's hash split may put no clip in '{split}': pass --split all to use every "
                         f"clip; {e.hint}") from None
    _warn_stretch(dataset, size_given)
    n = len(dataset) if num_sequences is None else min(num_sequences, len(dataset))
    if n == 0:
        raise InputError(f"{source} has no {split} sequences of {d.context + d.future} frames",
                         "use --split all, a shorter --context/--horizon, or longer clips")
    return source, dataset, list(range(n))


def _warn_stretch(dataset, size_given: bool) -> None:
    """One warning when clips are resized to another aspect ratio (eval scores at the weights' size,
    or --size, by stretching: the papers' protocol is their training resolution, but a stretched
    clip is not the clip the user has)."""
    summary = dataset.summary() if hasattr(dataset, "summary") else {}
    h, w = (summary.get("size") or (0, 0))[:2]
    if not h or not w:
        return
    stretched = []
    for res in (summary.get("resolutions") or {}):
        sh, sw = (int(v) for v in res.split("x"))
        if abs((sw / sh) / (w / h) - 1) > 0.01:
            stretched.append(res)
    if stretched:
        where = "--size" if size_given else "the weights' training size"
        warnings.warn(f"clips of {', '.join(sorted(stretched))} are scored at {h}x{w} ({where}), which changes their "
                      f"aspect ratio; pass --size HxW with their aspect (for fully convolutional weights), or "
                      f"clips cropped to {w / h:.3g}:1", EvalWarning, stacklevel=3)


def _recreate_model_sample(loaded: LoadedModel, dataset, ref: SequenceRef, *, context: int, horizon: int,
                           samples: int, device: str, filler=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Re-predict the batch of one sequence with its seed and keep only the chosen sample's frames."""
    items = [dataset[i] for i in ref.data["batch"]]
    ctx = _context_batch(items, context, filler, device)
    pos, k = ref.data["pos"], ref.sample
    with torch.inference_mode():
        steps = _predict_steps(loaded.model, ctx, horizon, samples, ref.data["seed"], device,
                               ref.data.get("head", "fused"))
        frames = [r.frames[pos, k].cpu() for _, r in zip(range(horizon), steps)]
    rgb = items[pos]["rgb"]
    return _to_uint8(rgb[:context]), _to_uint8(rgb[context:context + horizon]), _to_uint8(torch.stack(frames))


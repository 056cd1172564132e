"""The entry points: check the options, run one mode under recorded warnings, publish the folder."""
from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import torch

from vpcli.engine.evaluate.aggregate import Aggregator, FeatureSet, _clean, check_fvd_count
from vpcli.engine.evaluate.folders import (
    DATA_KIND,
    EvalWarning,
    _evaluate_folders,
    _folder_comparison,
    match_folders,
    resolve_offsets,
)
from vpcli.engine.evaluate.metrics import build_metrics
from vpcli.engine.evaluate.options import Callback, EvalOptions
from vpcli.engine.evaluate.outputs import _protocol_text, _versions, _write_comparison, write_plots, write_results
from vpcli.engine.evaluate.protocol import (
    _evaluate_model,
    _make_test_set,
    _recreate_model_sample,
    check_head,
    load_predictor,
)
from vpcli.errors import UsageError, WeightsError


def evaluate(*, callback: Callback | None = None, **options: Any) -> dict[str, Any]:
    """:func:`run_evaluation` with the fields of :class:`EvalOptions` as keywords."""
    return _evaluate(EvalOptions(**options), callback, stacklevel=3)


def run_evaluation(options: EvalOptions, *, callback: Callback | None = None) -> dict[str, Any]:
    """Evaluate predictions on disk (``pred``/``gt``) or a predictor (``method``/``weights``/``data``).

    Writes ``out/results.json``, ``results.csv``, ``plot_<metric>.png`` per per-frame metric and
    ``best.mp4``/``worst.mp4`` comparison videos; returns the results.json content plus ``out``.
    ``callback(event, record)`` receives ``start``, one ``sequence`` per sequence, and ``end``.
    Warnings (``--align`` adjustments, small FVD sets) are listed in results.json and re-issued
    once each when the evaluation ends, also when it fails. A metric whose weights cannot be had
    is left out and listed under ``missing`` (metric, reason, how to enable it) while the others
    are computed; when none can be, its :class:`WeightsError` is raised.
    """
    return _evaluate(options, callback, stacklevel=3)


def _evaluate(options: EvalOptions, callback: Callback | None, *, stacklevel: int) -> dict[str, Any]:
    from vpcli.io.atomic import check_overwrite

    callback = callback or (lambda event, record: None)
    check_overwrite(Path(options.out), options.overwrite)  # refuse before any work
    recorded: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                results = _run(caught, options, callback)
            finally:
                recorded = list(caught)
    finally:
        for category, message in _unique_warnings(recorded):  # outside the recording block: the CLI prints them
            warnings.warn(message, category, stacklevel=stacklevel)  # at the caller of the public function
    callback("end", results)
    return results


def _run(caught: list, o: EvalOptions, callback: Callback) -> dict[str, Any]:
    from vpcli.io.atomic import atomic_dir
    from vpcli.io.runmeta import run_meta
    from vpcli.metrics import get_metric

    t0 = time.perf_counter()
    names, hw, out = o.metric_names, o.hw, Path(o.out)
    metric_kw = {"device": o.device, "metric_weights": o.weights_by_metric, "untrained_metrics": o.untrained_metrics,
                 "lpips_net": o.lpips_net, "num_classes": o.num_classes, "miou_classes": o.miou_classes,
                 "seed": o.seed}
    loaded = dataset = plan = None
    missing: list[dict[str, str]] = []
    if o.folder_mode:
        kinds = {DATA_KIND[get_metric(n).kind] for n in names}
        plan = resolve_offsets(match_folders(Path(o.pred), Path(o.gt), kinds), o.gt_offset)
        n_seq = len(plan.pairs)
        if "fvd" in names:
            n_rgb = sum(1 for k in plan.pairs.values() if "rgb" in k)
            check_fvd_count(n_rgb, n_rgb)
        metrics = _available_metrics(names, missing, metric_kw)
        offsets = sorted(set(plan.offsets.values()))
        first_step = offsets[0] + 1 if len(offsets) == 1 else 1  # frame numbers, or future steps when they differ
        samples_per = sorted({len(s) for k in plan.pairs.values() for _, s in k.values()})
        inputs = {"mode": "folders", "pred": str(o.pred), "gt": str(o.gt),
                  "gt_offset": o.gt_offset if o.gt_offset is not None else "from meta.json",
                  "gt_offset_from": plan.offset_source, "gt_offsets": plan.offsets,
                  "made_by": {n: m.command for n, m in plan.made_by.items()},
                  "align": o.align, "sequences": n_seq, "samples_per_sequence": samples_per,
                  "ignored": plan.ignored, "device": o.device}
        protocol = _protocol_text("folders", n=n_seq, fvd=any(m.kind == "video_set" for m in metrics),
                                  gt_offset=offsets[0] if plan.offset_source != "meta.json" else None,
                                  curve_steps=len(offsets) > 1)
        ctx_len = hor = 0
    else:
        overrides = []
        if o.context is not None:
            from vpcli.engine.loading import context_of
            overrides.append(f"data.context={context_of(o.context) if isinstance(o.context, str) else o.context}")
        if o.horizon is not None:
            overrides.append(f"data.future={o.horizon}")
        if hw is not None:
            overrides.append(f"data.size=[{hw[0]}, {hw[1]}]")
        channels = None
        if o.weights is None and o.data is not None:  # default weights for the data's channels, as predict picks
            from vpcli.data.clips import native_channels
            channels = native_channels(o.data)
        loaded = load_predictor(o.method, o.weights, [*overrides, *o.overrides], o.device, channels=channels)
        if loaded.weights.get("default"):
            from vpcli.engine.loading import default_weights_line
            callback("warning", {"message": default_weights_line(loaded.weights)})
        cfg = loaded.config
        check_head(loaded.model, cfg.method, o.head)
        model = loaded.model
        samples = o.samples
        if getattr(model, "deterministic", False) and samples > 1:  # N identical rollouts: score one
            warnings.warn(f"{cfg.method} is deterministic: its {samples} samples would be identical; scoring one",
                          EvalWarning, stacklevel=2)
            samples = 1
        field_of = {"frame": "frames", "video_set": "frames", "label": "labels", "flow": "flow"}
        for n in names:  # a metric scores what the method predicts, or it is a usage error
            want = field_of[get_metric(n).kind]
            if want not in model.outputs:
                raise UsageError(f"{n} scores predicted {want}, and {cfg.method} predicts "
                                 f"{', '.join(sorted(model.outputs))}",
                                 "choose metrics for what the method predicts, or evaluate files on disk with "
                                 "--pred DIR --gt DIR")
        from vpcli.engine.inputs import InputFiller, companions_wanted
        input_cfg = cfg.inputs.with_overrides(o.labels_from, o.flow_from)
        filler = InputFiller(model.inputs, input_cfg, method=cfg.method, device=o.device,
                             where=o.data or cfg.data.source)
        truth = {"labels" for n in names if get_metric(n).kind == "label"} | {
            "flow" for n in names if get_metric(n).kind == "flow"}
        companions = tuple(k for k in ("labels", "flow") if k in truth or k in companions_wanted(model.inputs,
                                                                                              input_cfg))
        source, dataset, indices = _make_test_set(cfg, data=o.data, split=o.split, num_sequences=o.num_sequences,
                                                  size=hw, size_given=hw is not None,
                                                  from_config=loaded.size_from_config, companions=companions)
        ctx_len, hor = cfg.data.context, cfg.data.future
        n_seq = len(indices)
        if "fvd" in names:
            check_fvd_count(n_seq, n_seq)
        metrics = _available_metrics(names, missing, metric_kw)
        first_step = ctx_len + 1
        first = dataset[indices[0]]["rgb"]
        inputs = {"mode": "predictor", "method": cfg.method, "weights": loaded.weights, "data": source,
                  "split": o.split, "sequences": n_seq, "context": ctx_len, "horizon": hor, "samples": samples,
                  "frame_step": cfg.data.frame_step, "size": list(first.shape[-2:]), "channels": int(first.shape[1]),
                  "seed": o.seed, "batch_size": o.batch_size, "device": o.device, "head": o.head,
                  # SLAMP: BatchNorm statistics (eval | batch-per-sample, the authors' protocol)
                  "batchnorm": getattr(getattr(loaded.model, "config", None), "batchnorm", None),
                  "inputs_from": filler.describe(),
                  "dataset": _plain(dataset.summary()) if hasattr(dataset, "summary") else None}
        protocol = _protocol_text("model", samples=samples, context=ctx_len, horizon=hor, n=n_seq,
                                  fvd=any(m.kind == "video_set" for m in metrics))

    names = [m.name for m in metrics]  # what is computed; the others are in `missing`
    callback("start", {"mode": inputs["mode"], "sequences": n_seq, "metrics": names, "out": str(out)})
    fvd_runner = next((m for m in metrics if m.kind == "video_set"), None)
    fvd = FeatureSet(fvd_runner) if fvd_runner is not None else None
    with atomic_dir(out, overwrite=o.overwrite) as tmp:
        agg = Aggregator(metrics, tmp / "results.csv", first_step)
        try:
            if o.folder_mode:
                with torch.inference_mode():
                    _evaluate_folders(plan, metrics, agg, fvd, align=o.align, device=o.device, callback=callback)
            else:
                _evaluate_model(loaded, dataset, indices, metrics, agg, fvd, context=ctx_len, horizon=hor,
                                samples=samples, batch_size=o.batch_size, seed=o.seed, device=o.device,
                                callback=callback, head=o.head, filler=filler)
        finally:
            agg.close()
        by_name = agg.summary()
        if fvd is not None:
            by_name["fvd"] = fvd.compute()
        results_metrics = {n: by_name[n] for n in names if n in by_name}
        files = ["results.json", "results.csv"]
        if o.plots:
            files += write_plots(tmp, results_metrics)
        extremes: dict[str, Any] = {}
        if agg.best is not None:
            for label, ref in (("best", agg.best), ("worst", agg.worst)):
                extremes[label] = {"sequence": ref.name, "metric": agg.primary.name, "value": _clean(ref.value),
                                   "sample": ref.sample}
                if not o.videos:
                    continue
                if o.folder_mode:
                    ctx_f, gt_f, pred_f = _folder_comparison(ref, o.align)
                else:
                    ctx_f, gt_f, pred_f = _recreate_model_sample(loaded, dataset, ref, context=ctx_len, horizon=hor,
                                                                 samples=samples, device=o.device, filler=filler)
                _write_comparison(tmp / f"{label}.mp4", ctx_f, gt_f, pred_f, ref.sample)
                files.append(f"{label}.mp4")
                extremes[label]["video"] = f"{label}.mp4"
        results = run_meta(command="eval", protocol=protocol, metrics=results_metrics, inputs=inputs,
                           sequences=agg.sequences, extremes=extremes, files=files, versions=_versions(),
                           seconds=round(time.perf_counter() - t0, 3),
                           warnings=_unique([str(w.message) for w in caught]), missing=missing)
        write_results(tmp, results)
    results["out"] = str(out)
    return results


def _available_metrics(names: list[str], missing: list[dict[str, str]], metric_kw: dict[str, Any]) -> list:
    """The metrics that can be built; the others go to ``missing``. None at all: the first one's error."""
    metrics = build_metrics(names, missing=missing, **metric_kw)
    if not metrics:  # nothing to report: the first metric's own error, as without the others
        build_metrics([missing[0]["metric"]], **metric_kw)
        raise WeightsError(missing[0]["reason"], missing[0]["enable"])  # pragma: no cover - the line above raises
    return metrics


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _unique_warnings(recorded: list[warnings.WarningMessage]) -> list[tuple[type, str]]:
    seen = dict.fromkeys((w.category, str(w.message)) for w in recorded)
    return list(seen)


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return str(x)

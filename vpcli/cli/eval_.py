"""`vpcli eval`: flags -> `vpcli.api.EvalOptions` -> `vpcli.api.evaluate` (engine: vpcli.engine.evaluate)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from vpcli.cli.common import (
    Device,
    Json,
    Overwrite,
    Seed,
)

_FOLDERS = "Predictions on disk"
_MODEL = "Best-of-N protocol for a predictor"
_METRICS = "Metrics"


def evaluate(
    pred: Annotated[Optional[Path], typer.Option(
        help="Folder of predictions (or one clip): vpcli predict's NAME/sample_000.mp4 ... are samples of NAME; "
             "vpcli segment / flow output folders NAME/ are the label maps / flow of NAME.",
        rich_help_panel=_FOLDERS)] = None,
    gt: Annotated[Optional[Path], typer.Option(
        help="Folder of ground truth (or one clip), matched to --pred by name: NAME.mp4, NAME/ frames, NAME.npz, "
             "or a folder vpcli wrote (data convert NAME/video.mp4, synth-street, segment, flow).",
        rich_help_panel=_FOLDERS)] = None,
    gt_offset: Annotated[Optional[int], typer.Option(
        min=0, help="Compare prediction frame t with ground-truth frame N + t (default: the first predicted frame "
                    "from the prediction's meta.json, else 0). Refused if it would score context frames.",
        show_default=False, rich_help_panel=_FOLDERS)] = None,
    align: Annotated[bool, typer.Option(
        "--align", help="Truncate both to the shorter length and resize predictions to the ground truth's "
                        "size (with a warning) instead of failing. Not needed for vpcli's own predictions: "
                        "their meta.json says which frames they are, and same-aspect ones are scored at their size.",
        rich_help_panel=_FOLDERS)] = False,
    method: Annotated[Optional[str], typer.Option(
        help="Predictor to evaluate (copy-last, convlstm, slamp, ...).", rich_help_panel=_MODEL)] = None,
    weights: Annotated[Optional[str], typer.Option(
        help="Run folder of `vpcli train`, a checkpoint beside its config.yaml, or a manifest name; "
             "omit for parameter-free methods.", rich_help_panel=_MODEL)] = None,
    data: Annotated[Optional[str], typer.Option(
        help="Test data: a folder of clips or synthetic:NAME (default: the weights' data source).",
        rich_help_panel=_MODEL)] = None,
    samples: Annotated[int, typer.Option(
        min=1, help="Samples per sequence (one batch); the best per sequence and metric is kept.",
        rich_help_panel=_MODEL)] = 100,
    context: Annotated[Optional[str], typer.Option(
        metavar="N|WEIGHTS", help="Context frames (default: the weights' config), or weights whose context length "
                                  "to take, so a baseline is scored on the frames the method it is compared with is.",
        rich_help_panel=_MODEL)] = None,
    horizon: Annotated[Optional[int], typer.Option(
        min=1, help="Future frames to predict and score (default: the weights' config).",
        rich_help_panel=_MODEL)] = None,
    num_sequences: Annotated[Optional[int], typer.Option(
        min=1, help="Evaluate at most this many test sequences (synthetic sources: default 100).",
        rich_help_panel=_MODEL)] = None,
    head: Annotated[str, typer.Option(
        help="What is scored of the rollout: fused (the predicted frames) or a head the method declares -- "
             "SLAMP: static (appearance head), dynamic (warped-frame head), average (of the two, no mask), "
             "its Table 7.", rich_help_panel=_MODEL)] = "fused",
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", metavar="model.KEY=VALUE", help="Set a value of the weights' model config for this run, e.g. "
                                                 "model.batchnorm=eval for the SLAMP authors' checkpoints (which "
                                                 "default to their batch-per-sample protocol). Repeatable.",
        show_default=False, rich_help_panel=_MODEL)] = None,
    labels_from: Annotated[Optional[str], typer.Option(
        "--labels-from", metavar="companion|NAME", help="Where a method that reads labels gets them (default: the "
                                                        "weights' config).", rich_help_panel=_MODEL,
        show_default=False)] = None,
    flow_from: Annotated[Optional[str], typer.Option(
        "--flow-from", metavar="companion|dis|farneback|pwcnet", help="Where a method that reads flow gets it "
                                                                      "(default: the weights' config).",
        rich_help_panel=_MODEL, show_default=False)] = None,
    split: Annotated[str, typer.Option(
        help="Split of --data to use: train, val, test or all.", rich_help_panel=_MODEL)] = "test",
    size: Annotated[Optional[str], typer.Option(
        metavar="HxW", help="Frame size, e.g. 64x64 (default: the weights' config).",
        rich_help_panel=_MODEL)] = None,
    metric: Annotated[str, typer.Option(
        help="Comma-separated: psnr, ssim, ms-ssim, lpips, csim, mse, mae, bce (frames), miou (labels), epe "
             "(flow), fvd (videos).",
        rich_help_panel=_METRICS)] = "psnr,ssim",
    metric_weights: Annotated[Optional[list[str]], typer.Option(
        metavar="METRIC=WEIGHTS", help="Weights for lpips, csim or fvd: a file or manifest name (repeatable).",
        rich_help_panel=_METRICS)] = None,
    untrained_metrics: Annotated[bool, typer.Option(
        "--untrained-metrics", help="Random-init networks for lpips/csim/fvd: a smoke test, values not "
                                    "comparable (recorded in results.json).", rich_help_panel=_METRICS)] = False,
    lpips_net: Annotated[str, typer.Option(help="LPIPS backbone: alex or vgg.", rich_help_panel=_METRICS)] = "alex",
    num_classes: Annotated[int, typer.Option(min=1, help="Classes of the label maps (miou).",
                                             rich_help_panel=_METRICS)] = 19,
    miou_classes: Annotated[Optional[str], typer.Option(
        help="Classes averaged by miou: all (present), hvp-moving (HVP's 8 moving classes) or ids 11,12,13.",
        rich_help_panel=_METRICS)] = None,
    out: Annotated[Path, typer.Option("--out", "-o",
                                      help="Output folder (refused if it exists, unless --overwrite).")] = Path("eval"),
    batch_size: Annotated[int, typer.Option(
        "--batch-size", min=1, help="Sequences per predict call (each with --samples samples).")] = 8,
    device: Device = "cpu", seed: Seed = 0, json: Json = False,
    overwrite: Overwrite = False,
) -> None:
    """Score predictions: mean, 95% CI and per-frame curves of each metric, best of N samples.

    Writes results.json, results.csv (one row per sequence and metric), plot_<metric>.png and
    best.mp4 / worst.mp4 (context | ground truth | best sample) to --out, and prints a table
    (--json: one JSON line per sequence, then a summary line).

    Folders: clips are matched by name (videos, frame folders, .npz stacks of 'frames', 'labels'
    or 'flow', and the folders vpcli writes: data convert, synth-street, segment, flow);
    NAME/sample_K.* are samples of NAME, scored from the first frame their meta.json names.
    Predictor: --batch-size sequences per predict call, each with --samples samples.

    A metric whose weights are not available (lpips, csim, fvd offline) is left out: the others
    are written, the missing ones listed in results.json with how to enable them, exit 1.

    Example: vpcli predict clips/ --start 0 --horizon 10 --samples 5 --out preds/, then
    vpcli eval --pred preds/ --gt clips/ --metric psnr,ssim --out eval/

    Example: vpcli eval --method slamp --weights slamp-movingdigits --data synthetic:moving-digits
    --num-sequences 16 --samples 10 --metric psnr,ssim --out eval/
    """
    from vpcli import api
    from vpcli.cli.render_eval import EvalRenderer, print_missing, print_summary

    options = api.EvalOptions(
        pred=pred, gt=gt, gt_offset=gt_offset, align=align, method=method, weights=weights, data=data,
        samples=samples, context=context, horizon=horizon, num_sequences=num_sequences, split=split, size=size,
        head=head, labels_from=labels_from, flow_from=flow_from, overrides=set_ or [], metric=metric, metric_weights=metric_weights, untrained_metrics=untrained_metrics,
        lpips_net=lpips_net, num_classes=num_classes, miou_classes=miou_classes, out=out, batch_size=batch_size,
        device=device, seed=seed, overwrite=overwrite)
    renderer = EvalRenderer(json)
    try:
        results = api.evaluate(options, callback=renderer)
    finally:
        renderer.stop()
    print_summary(results, as_json=json)
    if results.get("missing"):
        print_missing(results)
        raise typer.Exit(1)

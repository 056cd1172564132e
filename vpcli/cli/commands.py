"""The pipeline subcommands: segment, flow, train, predict, eval.

Each is parse -> `vpcli.api` call -> render. The api is imported inside the command so that
`vpcli --help` never imports torch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from vpcli.cli.common import (
    BatchSize,
    Device,
    Inputs,
    Json,
    OutDir,
    Overwrite,
    Seed,
    Shard,
)


def segment(
    inputs: Inputs,
    out: OutDir = Path("segments"),
    weights: Annotated[Optional[str], typer.Option(help="Manifest name or path of segmentation weights.")] = None,
    size: Annotated[Optional[str], typer.Option(metavar="HxW", help="Resize frames to HxW before inference.")] = None,
    batch_size: BatchSize = 8, device: Device = "cpu", seed: Seed = 0, shard: Shard = None,
    json: Json = False, overwrite: Overwrite = False,
) -> None:
    """Semantic segmentation (DeepLabV3+): palette PNGs, labels.npz and an overlay MP4 per input.

    Example: vpcli segment clips/ --out segs/ --size 256x512
    """
    from vpcli import api
    api.segment(inputs=inputs, out=out, weights=weights, size=size, batch_size=batch_size,
                device=device, seed=seed, shard=shard, json=json, overwrite=overwrite)


def flow(
    inputs: Inputs,
    out: OutDir = Path("flow"),
    method: Annotated[str, typer.Option(help="Backend: dis (default, no weights), farneback, pwcnet.")] = "dis",
    direction: Annotated[str, typer.Option(help="forward, backward or both.")] = "forward",
    occlusion: Annotated[bool, typer.Option(help="Also write forward-backward occlusion masks.")] = False,
    batch_size: BatchSize = 8, device: Device = "cpu", seed: Seed = 0, shard: Shard = None,
    json: Json = False, overwrite: Overwrite = False,
) -> None:
    """Optical flow: one Middlebury .flo per frame pair, flow.npz and a colour-wheel MP4 per input.

    Example: vpcli flow clip.mp4 --out flow/ --method dis --direction both --occlusion
    """
    from vpcli import api
    api.estimate_flow(inputs=inputs, out=out, method=method, direction=direction, occlusion=occlusion,
                      batch_size=batch_size, device=device, seed=seed, shard=shard, json=json,
                      overwrite=overwrite)


def train(
    method: Annotated[Optional[str], typer.Option(help="Predictor to train (see `vpcli train --list`).")] = None,
    data: Annotated[Optional[str], typer.Option(help="Folder of clips, or synthetic:moving-digits / synthetic:synth-street.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder (config, metrics, checkpoints).")] = Path("run"),
    config: Annotated[Optional[str], typer.Option(help="Preset name or YAML file.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", metavar="KEY=VALUE", help="Override a config value, e.g. train.lr=0.001.")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue the run in this folder exactly.")] = None,
    init: Annotated[Optional[str], typer.Option(help="Fine-tune from this manifest entry or weights file.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Override the config's global batch size.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Override the config's seed.")] = None,
    list_: Annotated[bool, typer.Option("--list", help="List methods and presets, then exit.")] = False,
    device: Device = "cpu", json: Json = False, overwrite: Overwrite = False,
) -> None:
    """Train a predictor; config.yaml, metrics.jsonl, checkpoints/ and samples/ go to the run folder.

    Ctrl-C (or SIGTERM) saves a checkpoint; --resume RUN continues exactly. Under
    `torchrun --nproc-per-node N -m vpcli train ...` it trains data-parallel.

    Example: vpcli train --config convlstm-mmnist-tiny --out runs/tiny --set train.steps=40
    """
    from vpcli import api
    if list_:
        from vpcli import registry
        from vpcli.engine.run import list_presets
        typer.echo("methods: " + ", ".join(registry.names("predictor")))
        typer.echo("presets: " + ", ".join(list_presets()))
        return
    from vpcli.cli.render import TrainRenderer
    summary = api.train(method=method, data=data, out=out, config=config, overrides=set_ or [], resume=resume,
                        init=init, batch_size=batch_size, device=device, seed=seed, callback=TrainRenderer(json),
                        overwrite=overwrite)
    if summary["status"] == "interrupted":
        raise typer.Exit(130)


def predict(
    inputs: Inputs,
    method: Annotated[str, typer.Option(help="slamp, slamp-baseline, hvp, sadm, lmvp.")] = "slamp",
    horizon: Annotated[int, typer.Option(min=1, help="Number of future frames to predict.")] = 30,
    samples: Annotated[int, typer.Option(min=1, help="Stochastic samples, computed as one batch.")] = 1,
    weights: Annotated[Optional[str], typer.Option(help="Manifest name or checkpoint path.")] = None,
    start: Annotated[Optional[int], typer.Option(help="First context frame (default: the last frames of the clip).")] = None,
    resize: Annotated[bool, typer.Option(help="Resize inputs to the checkpoint's resolution.")] = False,
    save_components: Annotated[bool, typer.Option(help="Also write flow and mask videos.")] = False,
    out: OutDir = Path("predictions"),
    batch_size: BatchSize = 1, device: Device = "cpu", seed: Seed = 0, shard: Shard = None,
    json: Json = False, overwrite: Overwrite = False,
) -> None:
    """Predict future frames of each input clip.

    Example: vpcli predict clip.mp4 --method slamp --horizon 30 --samples 5 --out preds/
    """
    from vpcli import api
    api.predict(inputs=inputs, method=method, horizon=horizon, samples=samples, weights=weights,
                start=start, resize=resize, save_components=save_components, out=out,
                batch_size=batch_size, device=device, seed=seed, shard=shard, json=json,
                overwrite=overwrite)


def evaluate(
    pred: Annotated[Optional[Path], typer.Option(help="Folder of predictions.")] = None,
    gt: Annotated[Optional[Path], typer.Option(help="Folder of ground truth, matched by name.")] = None,
    metric: Annotated[str, typer.Option(help="Comma-separated: psnr,ssim,msssim,lpips,fvd,miou,...")] = "psnr,ssim",
    method: Annotated[Optional[str], typer.Option(help="Evaluate a predictor with the best-of-N protocol.")] = None,
    weights: Annotated[Optional[str], typer.Option(help="Weights for --method.")] = None,
    data: Annotated[Optional[str], typer.Option(help="Test data for --method.")] = None,
    samples: Annotated[int, typer.Option(min=1, help="Samples per sequence for best-of-N.")] = 100,
    out: OutDir = Path("eval"),
    batch_size: BatchSize = 8, device: Device = "cpu", seed: Seed = 0, json: Json = False,
    overwrite: Overwrite = False,
) -> None:
    """Evaluate predictions: results.json, results.csv and per-time-step plots.

    Example: vpcli eval --pred preds/ --gt clips/ --metric psnr,ssim,lpips --out eval/
    """
    from vpcli import api
    api.evaluate(pred=pred, gt=gt, metric=metric, method=method, weights=weights, data=data,
                 samples=samples, out=out, batch_size=batch_size, device=device, seed=seed, json=json,
                 overwrite=overwrite)


def register(app: typer.Typer) -> None:
    for fn in (segment, flow, train, predict):
        app.command(fn.__name__)(fn)
    app.command("eval")(evaluate)

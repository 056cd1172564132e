"""`vpcli train`: thin CLI over `vpcli.api`."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from vpcli.cli.common import (
    Device,
    Json,
    Overwrite,
)


def train(
    method: Annotated[Optional[str], typer.Option(help="Predictor to train (see `vpcli train --list`).")] = None,
    data: Annotated[Optional[str], typer.Option(help="Folder of clips, or synthetic:moving-digits / synthetic:synth-street.")] = None,
    val: Annotated[Optional[str], typer.Option(
        "--val", metavar="DIR", help="Folder of validation clips (default: the data's val split; a small folder "
                                     "holds out one clip, a single clip its last window).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder (config, metrics, checkpoints).")] = Path("run"),
    config: Annotated[Optional[str], typer.Option(help="Preset name or YAML file.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", metavar="KEY=VALUE", help="Override a config value, e.g. train.lr=0.001.")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue the run in this folder exactly.")] = None,
    init: Annotated[Optional[list[str]], typer.Option(
        metavar="[PART=]WEIGHTS", help="Start from these weights (run folder, file or manifest name); PART=WEIGHTS "
                                       "loads one part (e.g. dynamics=runs/stage1). Repeatable.")] = None,
    stage: Annotated[Optional[str], typer.Option(help="Run only this stage of the method's training plan "
                                                      "(default: every stage not yet completed).")] = None,
    labels_from: Annotated[Optional[str], typer.Option(
        "--labels-from", metavar="companion|NAME", help="Where label inputs come from: companion files, or a "
                                                        "segmenter run on the fly (recorded in the run's config).")] = None,
    flow_from: Annotated[Optional[str], typer.Option(
        "--flow-from", metavar="companion|dis|farneback|pwcnet", help="Where flow inputs come from: companion "
                                                                      "files, or a flow method run on the fly.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Override the config's global batch size.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Override the config's seed.")] = None,
    list_: Annotated[bool, typer.Option("--list", help="List methods and presets, then exit.")] = False,
    device: Device = "cpu", json: Json = False, overwrite: Overwrite = False,
) -> None:
    """Train a predictor; config.yaml, metrics.jsonl, checkpoints/ and samples/ go to the run folder.

    Ctrl-C (or SIGTERM) saves a checkpoint; --resume RUN continues exactly. Under
    `torchrun --nproc-per-node N -m vpcli train ...` it trains data-parallel.

    Example: vpcli train --config convlstm-mmnist-tiny --out runs/tiny --set train.steps=40, then
    vpcli eval --weights runs/tiny --data synthetic:moving-digits --num-sequences 8 --metric psnr,ssim --out eval/
    """
    from vpcli import api
    if list_:
        from vpcli import registry
        from vpcli.engine.run import list_presets
        typer.echo("methods: " + ", ".join(registry.names("predictor")))
        typer.echo("presets: " + ", ".join(list_presets()))
        return
    from vpcli.cli.render import TrainRenderer
    options = api.TrainOptions(out=out, method=method, data=data, val=val, config=config, overrides=set_ or [],
                               resume=resume, init=init or [], stage=stage, labels_from=labels_from,
                               flow_from=flow_from, batch_size=batch_size, device=device, seed=seed,
                               overwrite=overwrite)
    renderer = TrainRenderer(json)
    try:
        summary = api.train(options, callback=renderer)
    finally:
        renderer.stop()  # also when training fails: the terminal is left clean
    if summary["status"] == "interrupted":  # a checkpoint was saved; 128 + the signal's number
        raise typer.Exit(143 if summary.get("signal") == "SIGTERM" else 130)

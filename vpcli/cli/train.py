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

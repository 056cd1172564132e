"""`vpcli predict`: thin CLI over `vpcli.api`."""
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

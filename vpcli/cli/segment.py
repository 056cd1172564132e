"""`vpcli segment`: thin CLI over `vpcli.api`."""
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

"""`vpcli flow`: thin CLI over `vpcli.api`."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

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

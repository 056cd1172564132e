"""`vpcli flow`: thin CLI over `vpcli.api`."""
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
    Recursive,
    Seed,
    Shard,
)


def flow(
    inputs: Inputs,
    out: OutDir = Path("flow"),
    method: Annotated[str, typer.Option(help="Backend: dis (default; fast, CPU, no weights), farneback (CPU), pwcnet (bundled slim model trained here on synthetic data, or --weights; --device).")] = "dis",
    direction: Annotated[str, typer.Option(help="forward (t -> t+1), backward (t+1 -> t) or both.")] = "forward",
    occlusion: Annotated[bool, typer.Option(help="Also write occlusion masks from the forward-backward consistency check.")] = False,
    size: Annotated[Optional[str], typer.Option(metavar="HxW", help="Resize frames to HxW first (flow is then in those pixels).")] = None,
    preset: Annotated[Optional[str], typer.Option(help="DIS preset: ultrafast, fast or medium (default).")] = None,
    weights: Annotated[Optional[str], typer.Option(help="PWC-Net weights: manifest name (default pwcnet-slim-synth, trained here) or file.")] = None,
    precision: Annotated[Optional[str], typer.Option(help="PWC-Net precision: fp32 (default) or bf16.")] = None,
    batch_size: BatchSize = 8, device: Device = "cpu", seed: Seed = 0, shard: Shard = None,
    recursive: Recursive = False, json: Json = False, overwrite: Overwrite = False,
) -> None:
    """Optical flow per input: OUT/<name>/forward/00000.flo ..., flow_forward.npz (T-1,2,H,W),
    a colour-wheel flow_forward.mp4, meta.json; backward/ too with --direction both; occlusion.npz
    and occlusion.mp4 with --occlusion.

    Example: vpcli flow clip.mp4 --out flow/ --method dis --direction both --occlusion
    """
    from vpcli import api
    from vpcli.cli.render import FlowRenderer

    options = api.FlowOptions(method=method, direction=direction, occlusion=occlusion, size=size, preset=preset,
                              weights=weights, precision=precision, batch_size=batch_size, device=device, seed=seed,
                              shard=shard, recursive=recursive, overwrite=overwrite)
    progress = FlowRenderer(json)
    try:
        code = api.estimate_flow(inputs, out, options, callback=progress, for_each=progress.for_each)
    finally:
        progress.stop()  # also on a failure or Ctrl-C: the terminal is left clean
    raise typer.Exit(code)

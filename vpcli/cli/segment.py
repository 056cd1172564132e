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
    Recursive,
    Seed,
    Shard,
)


def segment(
    inputs: Inputs,
    out: OutDir = Path("segments"),
    weights: Annotated[Optional[str], typer.Option(
        help="Manifest name, .safetensors file or checkpoint folder of DeepLabV3+ weights "
             "(default: the bundled deeplabv3plus-mobilenet-synthstreet).")] = None,
    size: Annotated[Optional[str], typer.Option(
        metavar="HxW", help="Run the model at exactly HxW (default: frames larger than the weights' training "
                            "size are shrunk to fit it, keeping the aspect ratio). Labels are resized back "
                            "to the frame size with nearest neighbour.")] = None,
    palette: Annotated[Optional[str], typer.Option(
        help="auto (the weights' own classes), cityscapes, or a JSON/YAML file with one RGB colour per class; "
             "its class count must match the weights.")] = None,
    precision: Annotated[str, typer.Option(
        help="fp32, or bf16 autocast (faster where the CPU/GPU has bf16 units; ~1% of labels may differ).")] = "fp32",
    alpha: Annotated[float, typer.Option(min=0.0, max=1.0, help="Opacity of the label colours in overlay.mp4.")] = 0.5,
    batch_size: BatchSize = 8, device: Device = "cpu", seed: Seed = 0, shard: Shard = None,
    recursive: Recursive = False, json: Json = False, overwrite: Overwrite = False,
) -> None:
    """Semantic segmentation (DeepLabV3+): palette PNGs, labels.npz, an overlay MP4 and meta.json per input.

    Writes OUT/<name>/labels/00000.png ..., labels.npz, overlay.mp4 and meta.json.

    Example: vpcli segment clips/ --out segs/ --size 256x512
    """
    from vpcli import api
    from vpcli.cli.render import SegmentRenderer
    options = api.SegmentOptions(weights=weights, size=size, palette=palette, precision=precision, alpha=alpha,
                                 batch_size=batch_size, device=device, seed=seed, shard=shard, recursive=recursive,
                                 overwrite=overwrite)
    progress = SegmentRenderer(json)
    try:
        code = api.segment(inputs, out, options, callback=progress, for_each=progress.for_each)
    finally:
        progress.stop()  # also on a failure or Ctrl-C: the terminal is left clean
    raise typer.Exit(code)

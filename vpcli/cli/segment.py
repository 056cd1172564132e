"""`vpcli segment`: thin CLI over `vpcli.api`."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

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
    err_console,
    run_per_input,
)


class _Progress:
    """One line per finished input on stderr (nothing with --json: records go to stdout)."""

    def __init__(self, quiet: bool):
        self.quiet, self.console = quiet, err_console()

    def __call__(self, event: str, record: dict[str, Any]) -> None:
        if self.quiet:
            return
        if event == "start":
            self.console.print(f"segmenting {record['inputs']} input(s) with {record['weights']} "
                               f"({record['classes']} classes, {record['device']}) -> {record['out']}")
        elif event == "done":
            h, w = record["inference_size"]
            self.console.print(f"{record['input']}: {record['frames']} frames at {h}x{w} (HxW) in {record['seconds']:.1f}s "
                               f"({record['frames_per_s']:.1f} frames/s) -> {record['output']}")


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
    options = api.SegmentOptions(weights=weights, size=size, palette=palette, precision=precision, alpha=alpha,
                                 batch_size=batch_size, device=device, seed=seed, shard=shard, recursive=recursive,
                                 overwrite=overwrite)
    code = api.segment(inputs, out, options, callback=_Progress(quiet=json),
                       for_each=lambda items, fn: run_per_input(items, fn, as_json=json, name=lambda p: str(p[0])))
    raise typer.Exit(code)

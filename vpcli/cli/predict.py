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
    Recursive,
    Seed,
    Shard,
)


def predict(
    inputs: Inputs,
    out: OutDir = Path("predictions"),
    method: Annotated[Optional[str], typer.Option(
        help="Predictor: slamp, slamp-baseline, convlstm, copy-last, ... (default: the weights' method, else slamp).",
        show_default=False)] = None,
    weights: Annotated[Optional[str], typer.Option(
        metavar="RUN_DIR|FILE|NAME",
        help="A run folder of vpcli train, a .safetensors checkpoint beside its config.yaml, or a manifest name "
             "(default: the first manifest entry of the method; copy-last needs none).", show_default=False)] = None,
    horizon: Annotated[int, typer.Option(min=1, help="Number of future frames to predict.")] = 30,
    samples: Annotated[int, typer.Option(min=1, help="Stochastic samples, computed as one batch from a context "
                                                     "encoded once.")] = 1,
    context: Annotated[Optional[str], typer.Option(
        metavar="N|WEIGHTS", help="Context frames (default: the weights' data.context), or weights whose context "
                                  "length to take, so a baseline sees what the method it is compared with sees.",
        show_default=False)] = None,
    start: Annotated[Optional[int], typer.Option(min=0, help="First context frame (default: the last frames of the "
                                                             "clip).", show_default=False)] = None,
    size: Annotated[Optional[str], typer.Option(
        metavar="HxW", help="Working resolution of the model (default: the clip's own for fully convolutional "
                            "models, the weights' size for the others); outputs are written at the clip's size.",
        show_default=False)] = None,
    fit: Annotated[str, typer.Option(
        help="How a clip is fitted into a fixed model size: letterbox (whole frame, aspect kept, edges "
             "repeated), crop (the centre, aspect kept) or stretch.")] = "letterbox",
    resize: Annotated[bool, typer.Option(help="The same as --fit stretch (kept for old scripts).")] = False,
    grid: Annotated[bool, typer.Option(help="Also write grid.mp4: context | samples side by side (8 at most).")] = False,
    save_components: Annotated[bool, typer.Option(
        help="Also write the method's extra maps per step and sample (SLAMP: flow as a colour wheel, mask, pixel, "
             "warped and average frames).")] = False,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", metavar="model.KEY=VALUE", help="Set a value of the weights' model config for this run, e.g. "
                                                 "model.batchnorm=eval for the SLAMP authors' checkpoints (which "
                                                 "default to their batch-per-sample protocol). Repeatable.",
        show_default=False)] = None,
    labels_from: Annotated[Optional[str], typer.Option(
        "--labels-from", metavar="companion|NAME", help="Where a method that reads labels gets them: the clip's "
                                                        "companions, or a segmenter run on the fly (default: the "
                                                        "weights' config).", show_default=False)] = None,
    flow_from: Annotated[Optional[str], typer.Option(
        "--flow-from", metavar="companion|dis|farneback|pwcnet", help="Where a method that reads flow gets it "
                                                                      "(default: the weights' config).",
        show_default=False)] = None,
    lossless: Annotated[bool, typer.Option(help="Write sample and context videos losslessly (libx264rgb -qp 0): "
                                                "frames read back are exactly round(255 x prediction).")] = False,
    precision: Annotated[str, typer.Option(
        help="fp32; bf16 autocast (faster on GPUs and CPUs with bf16 units, 1.2-1.9x on an AVX512-BF16 CPU; "
             "frames differ slightly from fp32; on a CPU without AVX-512 much slower, and said so); or auto: "
             "bf16 where a cached one-off micro-benchmark finds it faster here, else fp32.")] = "fp32",
    batch_size: BatchSize = 1, device: Device = "cpu", seed: Seed = 0, shard: Shard = None,
    recursive: Recursive = False, json: Json = False, overwrite: Overwrite = False,
) -> None:
    """Predict future frames of each input clip: OUT/<name>/sample_000.mp4 ... (one video per sample,
    holding only the predicted frames), context.mp4 (the context frames the model was given),
    meta.json; grid.mp4 with --grid. Methods that predict labels or flow also write
    sample_K.labels/ (palette PNGs) + labels_sample_K.mp4 and sample_K.flow/ (.flo) + flow_sample_K.mp4;
    --save-components adds the method's extras as NAME_sample_K.mp4 (SLAMP: flow, mask, pixel,
    warped, average).

    The context is the last C frames of the clip (C from the weights, or --context), or C frames
    from --start. The same --seed gives the same samples. Clips run one at a time (--batch-size is 1).

    Example: vpcli predict clip.mp4 --method slamp --horizon 30 --samples 5 --out preds/
    """
    from vpcli import api
    from vpcli.cli.render import PredictRenderer

    options = api.PredictOptions(
        method=method, weights=weights, horizon=horizon, samples=samples, context=context, start=start, size=size, fit=fit, resize=resize,
        grid=grid, save_components=save_components, lossless=lossless, precision=precision, batch_size=batch_size,
        device=device, seed=seed, shard=shard, recursive=recursive, overwrite=overwrite, labels_from=labels_from,
        flow_from=flow_from, overrides=set_ or [])
    progress = PredictRenderer(json)
    try:
        code = api.predict(inputs, out, options, callback=progress, for_each=progress.for_each)
    finally:
        progress.stop()  # also on Ctrl-C / SIGTERM: the terminal is left clean
    raise typer.Exit(code)

"""`vpcli eval`: thin CLI over `vpcli.api`."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from vpcli.cli.common import (
    BatchSize,
    Device,
    Json,
    OutDir,
    Overwrite,
    Seed,
)


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

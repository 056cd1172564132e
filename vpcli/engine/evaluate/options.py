"""The options of an evaluation, declared once: `vpcli eval` builds them, :func:`run_evaluation` runs them."""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vpcli.engine.evaluate.metrics import parse_metric_names, parse_metric_weights
from vpcli.engine.options import check_device, check_output_folder
from vpcli.errors import UsageError
from vpcli.io.sources import parse_size

Callback = Callable[[str, dict[str, Any]], None]

EVAL_SPLITS = ("train", "val", "test", "all")


@dataclass(frozen=True, kw_only=True)
class EvalOptions:
    """What to evaluate and how; invalid values raise :class:`UsageError` (exit 2) naming the option.

    Two modes: predictions on disk (``pred`` and ``gt``), or a predictor (``method`` and/or
    ``weights``, test clips from ``data``). The checks run in the order below, so the first
    problem reported is the same whatever else is wrong; ``metric_names``,
    ``weights_by_metric`` and ``hw`` are the parsed forms of ``metric``, ``metric_weights`` and
    ``size``.
    """

    # predictions on disk
    pred: Path | str | None = None
    gt: Path | str | None = None
    gt_offset: int | None = None        # ground-truth frames skipped; None: each prediction's meta.json, else 0
    align: bool = False                 # truncate / resize with a warning instead of failing
    # a predictor under the best-of-N protocol
    method: str | None = None
    weights: str | None = None
    data: str | None = None
    samples: int = 100
    context: int | str | None = None  # N, or weights whose context length to take (a baseline's --context)
    horizon: int | None = None
    num_sequences: int | None = None
    split: str = "test"
    size: str | None = None             # "HxW"
    head: str = "fused"
    labels_from: str | None = None      # where the method's label inputs come from (default: its config)
    flow_from: str | None = None        # where its flow inputs come from
    overrides: tuple[str, ...] = ()     # --set model.KEY=VALUE on the weights' model config
    # metrics
    metric: str | list[str] = "psnr,ssim"
    metric_weights: list[str] | dict[str, str] | None = None
    untrained_metrics: bool = False
    lpips_net: str = "alex"
    num_classes: int = 19
    miou_classes: str | None = None
    # the run
    out: Path | str = Path("eval")
    batch_size: int = 8
    device: str = "cpu"
    seed: int = 0
    overwrite: bool = False
    plots: bool = True
    videos: bool = True

    metric_names: list[str] = field(init=False, repr=False, compare=False)
    weights_by_metric: dict[str, str] = field(init=False, repr=False, compare=False)
    hw: tuple[int, int] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: the parsed forms are set once, here
        for name in ("data", "weights"):  # the API takes paths as well as strings
            if isinstance(getattr(self, name), os.PathLike):
                set_(self, name, os.fspath(getattr(self, name)))
        set_(self, "metric_names", parse_metric_names(self.metric))  # unknown names: exit 2 before anything else
        set_(self, "weights_by_metric", parse_metric_weights(self.metric_weights))
        folder_mode = self.folder_mode
        if folder_mode and (self.method is not None or self.weights is not None or self.data is not None):
            raise UsageError("--pred/--gt and --method/--weights/--data are two different modes",
                             "pass one or the other")
        if folder_mode and (self.pred is None or self.gt is None):
            raise UsageError("--pred and --gt go together", "pass both folders, e.g. --pred preds/ --gt clips/")
        if not folder_mode and self.method is None and self.weights is None:
            raise UsageError("nothing to evaluate", "pass --pred DIR --gt DIR, or --method M [--weights W] --data SRC")
        if self.split not in EVAL_SPLITS:
            raise UsageError(f"--split must be train, val, test or all, got {self.split!r}", "e.g. --split test")
        if not self.head or not str(self.head).replace("-", "").replace("_", "").isalnum():
            raise UsageError(f"--head must be fused or a head the method declares, got {self.head!r}",
                             "see `vpcli eval --help` for --head")
        if folder_mode and self.head != "fused":
            raise UsageError("--head scores a predictor's heads; predictions on disk have none", "drop --head")
        from vpcli.engine.options import check_model_overrides
        set_(self, "overrides", check_model_overrides(self.overrides))
        if isinstance(self.context, str) and self.context.strip().lstrip("+-").isdigit():
            set_(self, "context", int(self.context))
        for opt, v, lo in (("--samples", self.samples, 1), ("--batch-size", self.batch_size, 1),
                           ("--gt-offset", self.gt_offset, 0),
                           ("--context", None if isinstance(self.context, str) else self.context, 1),
                           ("--horizon", self.horizon, 1), ("--num-sequences", self.num_sequences, 1),
                           ("--num-classes", self.num_classes, 1)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < lo):
                raise UsageError(f"{opt} must be an integer >= {lo}, got {v!r}", f"pass {opt} {lo} or more")
        set_(self, "hw", parse_size(self.size))
        check_output_folder(self.out)
        check_device(self.device)

    @property
    def folder_mode(self) -> bool:
        """Predictions on disk (``pred``/``gt``) rather than a predictor."""
        return self.pred is not None or self.gt is not None


__all__ = ["Callback", "EVAL_SPLITS", "EvalOptions"]

"""The engine's events as terminal output for the long commands. Only the CLI imports this module.

Every renderer draws its progress with :class:`vpcli.cli.progress.Progress` (a bar that fits the
terminal, or plain lines every few seconds when stderr is not one), prints ``warning`` events
as one ``warning: ...`` line on stderr, and with ``--json`` leaves stdout to the records.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vpcli.cli.common import emit_json, run_per_input
from vpcli.cli.progress import Progress

_NOT_LOSSES = ("step", "epoch", "steps_per_s", "stage")


def split_losses(record: dict[str, Any]) -> tuple[str, str]:
    """``(main, rest)`` of a training record as ``k=v`` text: the main one is ``loss`` (or each
    step's ``NAME/loss``), the rest the other logged numbers; learning rates are left out."""
    nums = {k: v for k, v in record.items() if k not in _NOT_LOSSES and not k.endswith("lr")
            and isinstance(v, (int, float)) and not isinstance(v, bool)}
    main = [k for k in nums if k == "loss" or k.endswith("/loss")] or list(nums)[:1]
    return (" ".join(f"{k}={nums[k]:.4g}" for k in main),
            " ".join(f"{k}={v:.4g}" for k, v in nums.items() if k not in main))


class TrainRenderer:
    """`vpcli train`'s events: a bar per stage (steps, rate, ETA, the main loss) that stays on
    screen, validation lines above it; or every event as a JSON line on stdout with ``--json``."""

    def __init__(self, as_json: bool):
        self.as_json = as_json
        self.progress = Progress(quiet=as_json, transient=False)
        self.method, self.stage, self.stage_totals = "", None, {}

    def _describe(self) -> str:
        return f"{self.method} [{self.stage}]" if len(self.stage_totals) > 1 and self.stage else self.method

    def __call__(self, event: str, record: dict[str, Any]) -> None:
        if event == "warning":
            self.progress.warning(record["message"])
        if self.as_json:
            if event != "step":  # per-step events feed the bar only; the JSON lines are what metrics.jsonl holds
                emit_json({"event": event, **record})
            return
        if event == "start":
            self.method, self.stage = record["method"], record.get("stage")
            self.stage_totals = record.get("stage_totals") or {}
            self.progress.print(f"training {record['method']} on {record['train_clips']} windows "
                                f"({record['val_clips']} for validation) -> {record['run_dir']}")
            if record.get("validation"):
                self.progress.print(record["validation"])
            self.progress.start(self._describe(), record["steps"], unit="steps",
                                completed=record.get("resumed_from") or 0)
        elif event in ("step", "train"):
            if record.get("stage", self.stage) != self.stage:  # the next stage of a multi-stage plan
                self.stage = record["stage"]
                self.progress.update(0, total=self.stage_totals.get(self.stage), description=self._describe())
            info, extra = split_losses(record)
            self.progress.update(record["step"], info=info, extra=extra)
        elif event == "val":
            vals = " ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "step" and isinstance(v, (int, float)))
            self.progress.print(f"step {record['step']}: {vals}")
        elif event == "end":
            self.progress.finish()
            self.progress.print(f"{record['status']} at step {record['step']} in {record['seconds']:.1f}s; "
                                f"checkpoints in {record['run_dir']}/checkpoints")

    def stop(self) -> None:
        """End the bar (also when training fails or is interrupted): the terminal is left clean."""
        self.progress.stop()


class ClipRenderer:
    """Events of a command that works clip by clip (``start``, then per clip ``input``,
    ``progress`` and ``done``): a bar per clip that a result line replaces.

    Use :meth:`for_each` as the api call's ``for_each``: it numbers the clips ("(2/5)") and
    clears a failed clip's bar before its error line.
    """

    unit = "frames"
    total_key: str | None = None  # the ``input`` record's total, when it has one
    plain_every_s: float | None = None  # seconds between plain lines; None: $VPCLI_PROGRESS_EVERY

    def __init__(self, as_json: bool):
        self.as_json = as_json
        self.progress = Progress(quiet=as_json, every_s=self.plain_every_s)
        self.inputs = self.index = 0

    def start_line(self, record: dict[str, Any]) -> str | None:
        return None

    def done_line(self, record: dict[str, Any]) -> str:
        return f"{record['input']}: done -> {record['output']}"

    def __call__(self, event: str, record: dict[str, Any]) -> None:
        if event == "warning":
            self.progress.warning(record["message"])
            return
        if self.as_json:
            return
        if event == "start":
            line = self.start_line(record)
            if line:
                self.progress.print(line)
        elif event == "input":
            label = record["input"] if self.inputs <= 1 else f"{record['input']} ({self.index}/{self.inputs})"
            total = record.get(self.total_key) if self.total_key else None
            self.progress.start(label, total, unit=self.unit, keep_end=True)
        elif event == "progress":
            self.progress.update(record["done"], total=record.get("total"))
        elif event == "done":
            self.progress.finish()
            self.progress.print(self.done_line(record))
            if record.get("warning"):
                self.progress.warning(f"{record['input']}: {record['warning']}")

    def for_each(self, items: list, fn: Callable[[Any], dict[str, Any]]) -> int:
        self.inputs = len(items)

        def one(item):
            self.index += 1
            try:
                return fn(item)
            finally:
                self.progress.stop()  # a failed clip's bar must not stay on screen under the next one
        return run_per_input(items, one, as_json=self.as_json, name=lambda p: str(p[0]))

    def stop(self) -> None:
        """End the current bar (also when a clip fails or the run is interrupted)."""
        self.progress.stop()


class PredictRenderer(ClipRenderer):
    """`vpcli predict`: a bar over the horizon's steps per clip; nothing but warnings with ``--json``.

    A horizon can be thousands of steps: when stderr is not a terminal (a log file, a batch job)
    the progress is a plain line every few seconds instead of a bar.
    """

    unit, total_key = "steps", "frames"

    def done_line(self, record: dict[str, Any]) -> str:
        return (f"{record['input']}: {record['samples']} x {record['frames']} frames at "
                f"{record['height']}x{record['width']} in {record['seconds']:.1f}s "
                f"({record['predicted_frames_per_s']:.1f} frames/s) -> {record['output']}")


class SegmentRenderer(ClipRenderer):
    """`vpcli segment`: a bar over the frames of each clip."""

    unit = "frames"

    def start_line(self, record: dict[str, Any]) -> str:
        return (f"segmenting {record['inputs']} input(s) with {record['weights']} "
                f"({record['classes']} classes, {record['device']}) -> {record['out']}")

    def done_line(self, record: dict[str, Any]) -> str:
        h, w = record["inference_size"]
        return (f"{record['input']}: {record['frames']} frames at {h}x{w} (HxW) in {record['seconds']:.1f}s "
                f"({record['frames_per_s']:.1f} frames/s) -> {record['output']}")


class FlowRenderer(ClipRenderer):
    """`vpcli flow`: a bar over the frame pairs of each clip."""

    unit, total_key = "pairs", "pairs"

    def done_line(self, record: dict[str, Any]) -> str:
        return (f"{record['input']}: {record['pairs']} pairs at {record['height']}x{record['width']} (HxW) "
                f"in {record['seconds']:.1f}s -> {record['output']}")


class ConvertRenderer(ClipRenderer):
    """`vpcli data convert`: a bar over the frames written of each clip."""

    unit, total_key = "frames", "frames"

    def done_line(self, record: dict[str, Any]) -> str:
        return f"{record['input']}: {record['frames']} frames -> {record['output']}"

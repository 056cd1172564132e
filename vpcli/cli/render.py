"""Terminal rendering (rich) for long-running commands. Only the CLI imports this module."""
from __future__ import annotations

from typing import Any

from vpcli.cli.common import emit_json, err_console


class TrainRenderer:
    """Turns the engine's events into a progress bar (steps/s, ETA, latest losses) on stderr,
    or into JSON lines on stdout with ``--json``."""

    def __init__(self, as_json: bool):
        self.as_json = as_json
        self.progress = None
        self.task = None
        self.console = err_console()
        self.method, self.stage, self.stage_totals = "", None, {}

    def _describe(self) -> str:
        return f"{self.method} [{self.stage}]" if len(self.stage_totals) > 1 and self.stage else self.method

    def __call__(self, event: str, record: dict[str, Any]) -> None:
        if self.as_json:
            emit_json({"event": event, **record})
            return
        if event == "start":
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )
            self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                                     TextColumn("{task.fields[losses]}"), console=self.console, transient=False)
            self.progress.start()
            done = record.get("resumed_from") or 0
            self.method, self.stage = record["method"], record.get("stage")
            self.stage_totals = record.get("stage_totals") or {}
            self.task = self.progress.add_task(self._describe(), total=record["steps"], completed=done,
                                               rate="", losses="")
            self.console.print(f"training {record['method']} on {record['train_clips']} clips "
                               f"({record['val_clips']} for validation) -> {record['run_dir']}")
        elif event == "train" and self.progress is not None:
            if record.get("stage", self.stage) != self.stage:  # the next stage of a multi-stage plan
                self.stage = record["stage"]
                self.progress.update(self.task, description=self._describe(), completed=0,
                                     total=self.stage_totals.get(self.stage))
            losses = " ".join(f"{k}={v:.4g}" for k, v in record.items()
                              if k not in ("step", "epoch", "steps_per_s") and not k.endswith("lr")
                              and isinstance(v, (int, float)))
            self.progress.update(self.task, completed=record["step"], rate=f"{record['steps_per_s']:.2f} it/s",
                                 losses=losses)
        elif event == "val":
            vals = " ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "step" and isinstance(v, (int, float)))
            self.console.print(f"step {record['step']}: {vals}")
        elif event == "end":
            if self.progress is not None:
                self.progress.stop()
            self.console.print(f"{record['status']} at step {record['step']} in {record['seconds']:.1f}s; "
                               f"checkpoints in {record['run_dir']}/checkpoints")


class PredictRenderer:
    """`vpcli predict`'s events on stderr: warnings, a progress bar per clip on a terminal (steps of
    the horizon, steps/s, time left), and one line per finished clip; nothing but warnings with
    ``--json`` (the records go to stdout).

    A horizon can be thousands of frames: when stderr is not a terminal (a log file, a batch
    job) the progress is one plain line every ``plain_every_s`` seconds instead of a bar.
    """

    plain_every_s = 30.0

    def __init__(self, as_json: bool):
        self.as_json = as_json
        self.console = err_console()
        self.progress = None
        self.task = None
        self.last_line = 0.0

    def __call__(self, event: str, record: dict[str, Any]) -> None:
        import time
        if event == "warning":
            self.console.print(f"warning: {record['message']}", markup=False)
        if self.as_json:
            return
        if event == "input":
            self.stop()
            self.last_line = time.monotonic()
            if self.console.is_terminal:
                from rich.progress import (
                    BarColumn,
                    MofNCompleteColumn,
                    Progress,
                    TaskProgressColumn,
                    TextColumn,
                    TimeRemainingColumn,
                )
                self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                         TaskProgressColumn(), TextColumn("steps"), TimeRemainingColumn(),
                                         console=self.console, transient=True)
                self.progress.start()
                self.task = self.progress.add_task(record["input"], total=record["frames"])
        elif event == "progress":
            if self.progress is not None:
                self.progress.update(self.task, completed=record["done"])
            elif time.monotonic() - self.last_line >= self.plain_every_s:
                self.last_line = time.monotonic()
                self.console.print(f"{record['input']}: step {record['done']} of {record['total']}", markup=False)
        elif event == "done":
            self.stop()
            self.console.print(f"{record['input']}: {record['samples']} x {record['frames']} frames at "
                               f"{record['height']}x{record['width']} in {record['seconds']:.1f}s "
                               f"({record['predicted_frames_per_s']:.1f} frames/s) -> {record['output']}",
                               markup=False)

    def stop(self) -> None:
        """End the current bar (also when a clip fails or the run is interrupted)."""
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

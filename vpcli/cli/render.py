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
            self.task = self.progress.add_task(record["method"], total=record["steps"], completed=done,
                                               rate="", losses="")
            self.console.print(f"training {record['method']} on {record['train_clips']} clips "
                               f"({record['val_clips']} for validation) -> {record['run_dir']}")
        elif event == "train" and self.progress is not None:
            losses = " ".join(f"{k}={v:.4g}" for k, v in record.items()
                              if k not in ("step", "epoch", "steps_per_s") and not k.endswith("lr"))
            self.progress.update(self.task, completed=record["step"], rate=f"{record['steps_per_s']:.2f} it/s",
                                 losses=losses)
        elif event == "val":
            vals = " ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "step")
            self.console.print(f"step {record['step']}: {vals}")
        elif event == "end":
            if self.progress is not None:
                self.progress.stop()
            self.console.print(f"{record['status']} at step {record['step']} in {record['seconds']:.1f}s; "
                               f"checkpoints in {record['run_dir']}/checkpoints")

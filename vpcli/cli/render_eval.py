"""Terminal output of `vpcli eval`: a progress bar on stderr and the results table (rich), or JSON lines."""
from __future__ import annotations

import math
from typing import Any

from vpcli.cli.common import emit_json


class EvalRenderer:
    """Engine events -> a progress bar over the sequences (stderr; plain lines every few seconds
    when stderr is not a terminal), or one JSON line per sequence (stdout) with --json."""

    def __init__(self, as_json: bool):
        from vpcli.cli.progress import Progress
        self.as_json = as_json
        self.progress = Progress(quiet=as_json)

    def __call__(self, event: str, record: dict[str, Any]) -> None:
        if event == "warning":
            self.progress.warning(record["message"])
        if event == "sequence" and self.as_json:
            emit_json({"event": "sequence", **{k: v for k, v in record.items() if k != "total"}})
        if self.as_json:
            return
        if event == "start":
            self.progress.start("eval", record["sequences"], unit="seq")
        elif event == "sequence":
            values = [f"{k}={v:.4g}" for k, v in record["metrics"].items() if v is not None]
            self.progress.update(record["index"] + 1, info=" ".join(values[:1]),
                                 extra=" ".join(values[1:] + [f"[{record['sequence']}]"]))
        elif event == "end":
            self.progress.finish()

    def stop(self) -> None:
        self.progress.stop()


def _num(x: float | None, digits: int = 4) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.{digits}g}"


def print_summary(results: dict[str, Any], *, as_json: bool) -> None:
    """The final table on stdout (or one JSON summary line)."""
    if as_json:
        emit_json({"event": "summary", "out": results["out"], "sequences": results["sequences"],
                   "metrics": {k: {f: v.get(f) for f in ("mean", "ci95", "n", "higher_is_better", "capped_frames")
                                   if f in v} for k, v in results["metrics"].items()},
                   "extremes": results.get("extremes", {}), "warnings": results.get("warnings", []),
                   "missing": results.get("missing", [])})
        return
    from rich.console import Console
    from rich.table import Table

    inputs = results["inputs"]
    if inputs["mode"] == "predictor":
        title = (f"{inputs['method']}: best of {inputs['samples']} over {results['sequences']} sequences "
                 f"({inputs['context']} -> {inputs['horizon']} frames)")
    else:
        title = f"{results['sequences']} sequences from {inputs['pred']} vs {inputs['gt']}"
    table = Table(title=title, title_justify="left")
    for col, justify in (("metric", "left"), ("mean", "right"), ("± 95% CI", "right"), ("n", "right"),
                         ("better", "center"), ("notes", "left")):
        table.add_column(col, justify=justify)
    for name, m in results["metrics"].items():
        notes = []
        if m.get("capped_frames"):
            notes.append(f"{m['capped_frames']} frames capped at {m['cap_db']:g} dB")
        if m.get("dataset_miou") is not None:
            notes.append(f"dataset mIoU {_num(m['dataset_miou'])}")
        settings = m.get("settings", {})
        if "untrained" in str(settings.get("weights", "")):
            notes.append("untrained network: not comparable")
        unit = f" {m['unit']}" if m.get("unit") else ""
        table.add_row(name, _num(m.get("mean")) + unit, _num(m.get("ci95"), 2), str(m.get("n", "")),
                      "↑" if m["higher_is_better"] else "↓", "; ".join(notes))
    for m in results.get("missing", []):
        table.add_row(m["metric"], "-", "-", "-", "", "not computed (reason below)")
    console = Console(highlight=False, soft_wrap=True)
    console.print(table)
    for label, e in results.get("extremes", {}).items():
        video = f" -> {e['video']}" if e.get("video") else ""
        console.print(f"{label} sequence: {e['sequence']} ({e['metric']} {_num(e['value'])}, sample {e['sample']}){video}")
    console.print(f"results in {results['out']}/ (results.json, results.csv, plots)")


def print_missing(results: dict[str, Any]) -> None:
    """One line on stderr per metric that could not be computed: why, and how to enable it."""
    import sys
    for m in results.get("missing", []):
        sys.stderr.write(f"error: {m['metric']} not computed: {m['reason']} (to enable: {m['enable']})\n")

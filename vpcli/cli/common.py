"""Shared CLI plumbing: option types every subcommand uses the same way, error rendering, JSON.

Nothing here imports torch: `vpcli --help` stays fast.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional, TypeVar

import typer

from vpcli.errors import UsageError, VpcliError

T = TypeVar("T")

# --- options shared by every subcommand ------------------------------------------------------
Inputs = Annotated[list[str], typer.Argument(
    help="Video files, frame folders, GIFs, folders of videos, globs, or '-' to read paths from stdin.",
    show_default=False)]
OutDir = Annotated[Path, typer.Option("--out", "-o", help="Output folder; one subfolder per input.",
                                      file_okay=False)]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs instead of refusing.")]
Device = Annotated[str, typer.Option("--device", help="Torch device: cpu, cuda, cuda:1, ...")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives the same output.")]
BatchSize = Annotated[int, typer.Option("--batch-size", min=1, help="Frames or clips per forward pass.")]
Shard = Annotated[Optional[str], typer.Option(
    "--shard", metavar="K/N", help="Process only shard K of N (1 <= K <= N) of the sorted input list.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON record per input on stdout.")]
Recursive = Annotated[bool, typer.Option("--recursive", "-r", help="Search input folders recursively.")]


def parse_shard(spec: str | None) -> tuple[int, int] | None:
    """``"K/N"`` -> ``(K, N)`` with 1 <= K <= N."""
    if spec is None:
        return None
    try:
        k, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise UsageError(f"--shard expects K/N like 2/8, got {spec!r}") from None
    if not 1 <= k <= n:
        raise UsageError(f"--shard {spec}: K must be between 1 and N", "shards count from 1, e.g. 1/4 .. 4/4")
    return k, n


def emit_json(record: dict[str, Any]) -> None:
    """One JSON record per line on stdout (progress and messages go to stderr)."""
    sys.stdout.write(json.dumps(record, default=str) + "\n")
    sys.stdout.flush()


def err_console():
    from rich.console import Console
    return Console(stderr=True, highlight=False, soft_wrap=True)


_debug = False


def set_debug(flag: bool) -> None:
    """Set by `--debug` for one CLI invocation (VPCLI_DEBUG=1 in the environment also enables it)."""
    global _debug
    _debug = flag


def debug_enabled() -> bool:
    return _debug or os.environ.get("VPCLI_DEBUG", "") not in ("", "0")


def print_error(err: BaseException) -> None:
    """One line on stderr; the traceback only with --debug."""
    if debug_enabled():
        import traceback
        traceback.print_exception(err, file=sys.stderr)
    if isinstance(err, VpcliError):
        line = f"error: {err}"
    else:
        line = (f"error: internal error {type(err).__name__}: {err} "
                "(hint: rerun with --debug for the traceback and report it)")
    sys.stderr.write(line + "\n")


def run_per_input(items: list[T], fn: Callable[[T], dict[str, Any]], *, as_json: bool,
                  name: Callable[[T], str] = str) -> int:
    """Run ``fn`` on every input, keep going after failures, return the exit code (0 or 1).

    ``fn`` returns a JSON-able record; failures are recorded with their one-line error.
    """
    failed: list[tuple[str, str]] = []
    for item in items:
        try:
            record = {"input": name(item), "ok": True, **fn(item)}
        except VpcliError as e:
            failed.append((name(item), str(e)))
            record = {"input": name(item), "ok": False, "error": str(e)}
            where = "" if name(item) in str(e) else f"{name(item)}: "  # most messages name the file already
            sys.stderr.write(f"error: {where}{e}\n")
        if as_json:
            emit_json(record)
    if failed:
        sys.stderr.write(f"{len(failed)} of {len(items)} inputs failed:\n")
        for n, _ in failed:
            sys.stderr.write(f"  {n}\n")
        return 1
    return 0

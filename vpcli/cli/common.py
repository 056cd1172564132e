"""Shared CLI plumbing: option types every subcommand uses the same way, error rendering, JSON.

Nothing here imports torch or the video decoders: `vpcli --help` stays fast (the commands import
`vpcli.api` and `vpcli.io.sources` when they run).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional, TypeVar

import typer

from vpcli.errors import VpcliError

T = TypeVar("T")

# --- options shared by every subcommand ------------------------------------------------------
Inputs = Annotated[list[str], typer.Argument(
    help="Video files, frame folders, GIFs, folders of videos, globs, or '-' to read paths from stdin.",
    show_default=False)]


def _output_folder(value: Path | None) -> Path | None:
    """``--out``: a folder, never a file or a path under one (checked before the command runs)."""
    from vpcli.engine.options import check_output_folder
    return value if value is None else check_output_folder(value)


OutDir = Annotated[Path, typer.Option("--out", "-o", help="Output folder; one subfolder per input.",
                                      callback=_output_folder)]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs instead of refusing.")]
Device = Annotated[str, typer.Option("--device", help="Torch device: cpu, cuda, cuda:1, ...")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives the same output.")]
BatchSize = Annotated[int, typer.Option("--batch-size", min=1, help="Frames or clips per forward pass.")]
Shard = Annotated[Optional[str], typer.Option(
    "--shard", metavar="K/N", help="Process only shard K of N (1 <= K <= N) of the sorted input list.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON record per input on stdout.")]
Recursive = Annotated[bool, typer.Option("--recursive", "-r", help="Search input folders recursively.")]


def display_path(path: Path) -> str:
    """A path relative to the working folder when it is inside it (shorter in tables)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def emit_json(record: dict[str, Any]) -> None:
    """One JSON record per line on stdout (progress and messages go to stderr)."""
    sys.stdout.write(json.dumps(record, default=str) + "\n")
    sys.stdout.flush()


def err_console():
    from rich.console import Console
    return Console(stderr=True, highlight=False, soft_wrap=True)


_debug = False
_argv: list[str] = []


def set_command(argv: list[str]) -> None:
    """Remember the arguments of this invocation, for hints that point to its command's --help."""
    global _argv
    _argv = list(argv)


def command_path() -> str:
    """The subcommand being run, e.g. ``vpcli data convert`` (plain ``vpcli`` when none is)."""
    from vpcli.cli.app import app
    cmd, path = typer.main.get_command(app), ["vpcli"]
    for token in _argv:
        if token.startswith("-"):
            continue
        sub = getattr(cmd, "commands", {}).get(token)
        if sub is None:
            break
        path.append(token)
        cmd = sub
    return " ".join(path)


def help_hint() -> str:
    return f"see `{command_path()} --help`"


def set_debug(flag: bool) -> None:
    """Set by `--debug` for one CLI invocation (VPCLI_DEBUG=1 in the environment also enables it)."""
    global _debug
    _debug = flag


def debug_enabled() -> bool:
    return _debug or os.environ.get("VPCLI_DEBUG", "") not in ("", "0")


def error_text(err: VpcliError) -> str:
    """``message (hint: hint)`` on one line; an error raised without a hint gets one pointing to
    the command's --help, so every error line has the same shape."""
    text = str(err) if err.hint else f"{err.message} (hint: {help_hint()})"
    return " ".join(text.split())  # one line, whatever a message embeds


def print_error(err: BaseException) -> None:
    """One line on stderr; the traceback only with --debug."""
    if debug_enabled():
        import traceback
        traceback.print_exception(err, file=sys.stderr)
    if isinstance(err, VpcliError):
        line = f"error: {error_text(err)}"
    else:
        text = " ".join(f"{type(err).__name__}: {err}".split())
        line = f"error: internal error {text} (hint: rerun with --debug for the traceback and report it)"
    sys.stderr.write(line + "\n")


def print_usage_error(err: Exception) -> None:
    """A click usage error (unknown option, a value that is no integer, out of range, ...) as one
    line with a hint, like every other error -- not click's four-line usage block."""
    if debug_enabled():
        import traceback
        traceback.print_exception(err, file=sys.stderr)
    message = err.format_message() if hasattr(err, "format_message") else str(err)
    message = " ".join(message.split()).rstrip(".")
    message = message[:1].lower() + message[1:]
    ctx = getattr(err, "ctx", None)
    where = ctx.command_path if ctx is not None and getattr(ctx, "command_path", None) else command_path()
    sys.stderr.write(f"error: {message} (hint: see `{where} --help` for the options and their values)\n")


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
            sys.stderr.write(f"error: {where}{error_text(e)}\n")
        if as_json:
            emit_json(record)
    if failed:
        sys.stderr.write(f"{len(failed)} of {len(items)} inputs failed:\n")
        for n, _ in failed:
            sys.stderr.write(f"  {n}\n")
        return 1
    return 0

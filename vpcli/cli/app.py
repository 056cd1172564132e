"""The `vpcli` command: a table of subcommands, each a thin wrapper over `vpcli.api`.

Keep imports here light (typer, rich on demand): `vpcli --help` must not import torch.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import warnings
from collections.abc import Iterator
from typing import Optional

import typer
from typer._click import exceptions as click_exceptions  # typer vendors click: its exception classes

from vpcli import __version__
from vpcli.cli import commands, data, interrupt, weights
from vpcli.cli.common import print_error, print_usage_error, set_command, set_debug
from vpcli.errors import VpcliError

app = typer.Typer(
    name="vpcli",
    help="Video prediction toolkit: predict future frames with SLAMP, HVP, SADM or LMVP; segment and "
         "estimate flow; train; evaluate with PSNR/SSIM/LPIPS/FVD/mIoU.\n\n"
         "Example: vpcli predict clip.mp4 --method slamp --horizon 30 --out preds/",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=True,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vpcli {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True,
                                           help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
    threads: Optional[int] = typer.Option(
        None, "--threads", metavar="N",
        help="CPU threads for the computation, anywhere on the line (also VPCLI_THREADS; default: the cores "
             "divided by the --shard count, so parallel shards do not oversubscribe the CPU)."),
) -> None:
    """vpcli: video prediction from the command line."""
    set_debug(debug)


commands.register(app)
app.add_typer(weights.app, name="weights")
app.add_typer(data.app, name="data")


class Terminated(BaseException):
    """SIGTERM, turned into an exception that unwinds like Ctrl-C's KeyboardInterrupt.

    Not an ``Exception``: nothing that handles errors catches it, while every ``finally`` and
    every ``except BaseException`` runs -- the atomic writers' cleanup among them, so the
    temporaries of an unfinished output are removed. ``vpcli`` then exits 143 (128 + 15).
    """


def _on_sigterm(signum, frame) -> None:  # noqa: ARG001 - the signal module's signature
    if os.getpid() != _owner_pid:  # a forked worker (DataLoader, ...): die the default way
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    # While unwinding, further SIGTERMs are ignored so that the cleanup itself is not cut short
    # (SIGKILL still ends the process).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    interrupt.note(Terminated)
    raise Terminated()


def _on_sigint(signum, frame) -> None:  # noqa: ARG001
    """Ctrl-C: KeyboardInterrupt as by default, recorded so that it is raised again if swallowed."""
    if os.getpid() != _owner_pid:
        raise KeyboardInterrupt
    interrupt.note(KeyboardInterrupt)
    raise KeyboardInterrupt


_owner_pid = os.getpid()


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """One handler for every command: SIGTERM raises :class:`Terminated` in the main thread, SIGINT
    KeyboardInterrupt; both are recorded in :mod:`vpcli.cli.interrupt` and raised again by the
    progress display if a raise was swallowed.

    `vpcli train` installs its own SIGINT/SIGTERM handler while it trains (stop at the next step
    and save a checkpoint) and puts this one back after.
    """
    global _owner_pid
    try:
        old = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (vpcli called from a library thread): leave signals alone
        yield
        return
    old_int = signal.signal(signal.SIGINT, _on_sigint)
    _owner_pid = os.getpid()
    interrupt.clear()
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
        signal.signal(signal.SIGINT, old_int)
        interrupt.clear()


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one-line errors, exit 0 / 1 / 2 (DESIGN.md, CLI); 130 after Ctrl-C
    (SIGINT), 143 after SIGTERM, with the unfinished output removed."""
    argv = list(sys.argv[1:] if argv is None else argv)
    set_debug(False)
    set_command(argv)
    # Library warnings (mixed resolutions, small FVD sets, ...) as one line each, like errors.
    warnings.formatwarning = lambda message, category, *args, **kwargs: f"warning: {message}\n"
    if "--debug" in argv[1:]:  # accept --debug anywhere, not only before the subcommand
        argv.remove("--debug")
        argv.insert(0, "--debug")
    try:
        with _sigterm_unwinds():
            from vpcli import threads  # --threads N anywhere on the line, else VPCLI_THREADS, else free cores / shards
            argv, wanted, shards = threads.from_argv(argv)
            n, source = threads.choose(wanted, shards)
            threads.configure(n, explicit=not source.startswith("default"))
            from vpcli import allocator  # large tensors reuse heap memory, no page faults per tensor
            allocator.configure()
            code = app(args=argv, prog_name="vpcli", standalone_mode=False)
    except typer.Abort:
        sys.stderr.write("aborted\n")
        code = 130
    except VpcliError as e:
        print_error(e)
        code = e.exit_code
    except click_exceptions.NoArgsIsHelpError as e:  # `vpcli data` alone: the help text, exit 2
        e.show()
        code = 2
    except click_exceptions.UsageError as e:  # bad option, value or command: one line with a hint, exit 2
        print_usage_error(e)
        code = 2
    except typer.TyperException as e:  # other click errors (a file it could not open): one line
        print_usage_error(e)
        code = getattr(e, "exit_code", 1)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        code = 130
    except Terminated:
        sys.stderr.write("terminated (SIGTERM): the unfinished output was removed\n")
        code = 143
    except Exception as e:  # noqa: BLE001 - last resort: one line, traceback with --debug
        print_error(e)
        code = 1
    sys.exit(code if isinstance(code, int) else 0)

"""The `vpcli` command: a table of subcommands, each a thin wrapper over `vpcli.api`.

Keep imports here light (typer, rich on demand): `vpcli --help` must not import torch.
"""
from __future__ import annotations

import sys
import warnings
from typing import Optional

import typer

from vpcli import __version__
from vpcli.cli import commands, data, weights
from vpcli.cli.common import print_error, set_debug
from vpcli.errors import VpcliError

app = typer.Typer(
    name="vpcli",
    help="Video prediction toolkit: predict future frames with SLAMP, HVP, SADM or LMVP; "
         "segment and estimate flow; train; evaluate with PSNR/SSIM/LPIPS/FVD.\n\n"
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
) -> None:
    """vpcli: video prediction from the command line."""
    set_debug(debug)


commands.register(app)
app.add_typer(weights.app, name="weights")
app.add_typer(data.app, name="data")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one-line errors, exit 0 / 1 / 2 (DESIGN.md, CLI)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    set_debug(False)
    # Library warnings (mixed resolutions, small FVD sets, ...) as one line each, like errors.
    warnings.formatwarning = lambda message, category, *args, **kwargs: f"warning: {message}\n"
    if "--debug" in argv[1:]:  # accept --debug anywhere, not only before the subcommand
        argv.remove("--debug")
        argv.insert(0, "--debug")
    try:
        code = app(args=argv, prog_name="vpcli", standalone_mode=False)
    except typer.Abort:
        sys.stderr.write("aborted\n")
        code = 130
    except VpcliError as e:
        print_error(e)
        code = e.exit_code
    except typer.TyperException as e:  # click usage errors (bad option, value, command): exit 2
        e.show()
        code = getattr(e, "exit_code", 2)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        code = 130
    except Exception as e:  # noqa: BLE001 - last resort: one line, traceback with --debug
        print_error(e)
        code = 1
    sys.exit(code if isinstance(code, int) else 0)

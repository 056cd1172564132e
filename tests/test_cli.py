"""The CLI shell: help, version, exit codes, one-line errors, no torch on --help."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from vpcli.cli.app import main


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out, err = capsys.readouterr()
    return exc.value.code, out, err


SUBCOMMANDS = ["segment", "flow", "train", "predict", "eval", "weights", "data"]


def help_command_rows(out: str) -> list[str]:
    """The command names of the help's Commands table, in order: the first word of each row (rich
    panel "│ name  text" or plain click "  name  text"), not words found anywhere in the text."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if re.search(r"\bCommands\b", line))
    names = []
    for line in lines[start + 1:]:
        if line.startswith("╰"):  # end of the rich panel
            break
        m = re.match(r"(?:│ |  )([a-z][\w-]*)  ", line)  # continuation rows start with more spaces
        if m:
            names.append(m.group(1))
    return names


def test_help_lists_every_subcommand(capsys):
    import typer.main

    from vpcli.cli.app import app
    # Registered on the click group (the description also mentions segment, train, ...).
    assert list(typer.main.get_command(app).commands) == SUBCOMMANDS
    code, out, _ = run_main(capsys, "--help")
    assert code == 0
    assert help_command_rows(out) == SUBCOMMANDS


@pytest.mark.parametrize("cmd", SUBCOMMANDS)
def test_every_command_has_help_with_an_example(capsys, cmd):
    code, out, _ = run_main(capsys, cmd, "--help")
    assert code == 0
    assert "vpcli" in out and ("Example" in out or "example" in out)


def test_version(capsys):
    from vpcli import __version__
    code, out, _ = run_main(capsys, "--version")
    assert code == 0 and out.strip() == f"vpcli {__version__}"


def test_predict_without_weights_says_how_to_get_them(capsys):
    # convlstm has trained parameters and no bundled weights (slamp has: tests/test_slamp_bundled.py)
    code, out, err = run_main(capsys, "predict", "clip.mp4", "--method", "convlstm")
    assert code == 2 and out == "" and "no bundled weights for convlstm" in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--weights" in lines[0]
    assert "Traceback" not in err


def test_usage_error_exits_2(capsys):
    code, _, err = run_main(capsys, "predict", "clip.mp4", "--horizon", "zero")
    assert code == 2 and "horizon" in err


def test_unknown_command_exits_2(capsys):
    code, _, err = run_main(capsys, "frobnicate")
    assert code == 2 and "frobnicate" in err


def test_debug_shows_traceback_anywhere_on_the_line(capsys, monkeypatch):
    monkeypatch.delenv("VPCLI_DEBUG", raising=False)
    code, _, err = run_main(capsys, "predict", "clip.mp4", "--method", "convlstm", "--debug")
    assert code == 2 and "Traceback" in err and err.strip().splitlines()[-1].startswith("error: ")


def test_module_entry_point_and_help_do_not_import_torch():
    code = ("import sys, runpy; sys.argv=['vpcli','--help'];\n"
            "try:\n    runpy.run_module('vpcli', run_name='__main__')\n"
            "except SystemExit as e:\n    assert e.code == 0, e.code\n"
            "assert 'torch' not in sys.modules, 'vpcli --help imported torch'\n"
            "print('OK')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith("OK")


def test_a_missing_engine_module_is_named(monkeypatch):
    from vpcli import api
    from vpcli.errors import NotAvailableError
    with pytest.raises(NotAvailableError, match="vpcli frob: the frobnicator is not implemented"):
        api._runner("vpcli.engine.no_such_runner", "frob", "the frobnicator")

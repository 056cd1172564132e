"""Progress of the long commands as a user sees it (vpcli/cli/progress.py).

- In a real pseudo-terminal 80 columns wide: a bar that shows the count N/M and a rate or ETA,
  and no line wider than the terminal.
- Piped: plain lines on stderr with the right counts, the first one before the end.
- ``--json``: stdout holds the records only, and no progress reaches stderr.

The subprocess runs take ~1-6 s each (most of it importing torch), so every command runs once in
the terminal and only training (the case of issue 14) is piped in a subprocess too; the other
piped checks run in-process, where stderr is no terminal either (capsys).
"""
from __future__ import annotations

import fcntl
import io
import json
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from hub_server import hub, hub_entry, weights_env, write_manifest  # noqa: F401
from rich.cells import cell_len

from vpcli.cli.app import main

pytestmark = pytest.mark.usefixtures("one_thread")  # the in-process runs

COLS = 80
ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
RATE = re.compile(r"\d[\d.]* (?:\S+/s|s/\S+)")  # "12.3 steps/s", "4.2 s/step", "1.2 MB/s"
TRAIN = ["train", "--config", "convlstm-mmnist-tiny", "--set", "train.steps=3", "--set", "data.train_clips=8",
         "--set", "data.val_clips=2"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "VPCLI_PROGRESS_EVERY", "COLUMNS", "LINES")}
    return {**env, **extra}


def run_in_terminal(args: list[str], cwd: Path, env: dict[str, str] | None = None,
                    timeout: float = 120) -> tuple[int, str]:
    """Run ``python -m vpcli --threads 1 ARGS`` with stdin/stdout/stderr on a pseudo-terminal of
    80x24; return its exit code and everything it wrote (escape sequences included)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, COLS, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "vpcli", "--threads", "1", *args], cwd=cwd,
                            env=_env(TERM="xterm", COLUMNS=str(COLS), LINES="24", **(env or {})),
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal and everything was read
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
            pytest.fail(f"vpcli {' '.join(args)} ran past {timeout} s")
        code = proc.wait(timeout=30)
    finally:
        os.close(master)
    return code, b"".join(chunks).decode("utf-8", "replace")


def screen_lines(raw: str) -> list[str]:
    """What the terminal showed, one entry per line drawn (a bar's redraws after each \\r too)."""
    return [seg for seg in re.split(r"[\r\n]+", ANSI.sub("", raw)) if seg.strip()]


def count_of(n: int, m: int) -> re.Pattern:
    return re.compile(rf"(?<![\d/.]){n}/{m}(?![\d/])")


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """A working folder with two 8-frame moving-digits clips: md/seq_00000.mp4, md/seq_00001.mp4."""
    from vpcli.data.moving_digits import generate_moving_digits
    d = tmp_path_factory.mktemp("progress")
    generate_moving_digits(d / "md", num_sequences=2, length=8, format="mp4", seed=0)
    return d


# --- the layout, the plain cadence ------------------------------------------------------------

def test_bar_keeps_count_and_eta_at_every_width():
    from vpcli.cli.progress import _Task, bar_line
    task = _Task("slamp-baseline [dynamics] with a description far too long for any terminal", 150, 0, "steps",
                 "loss=0.2231", "mse=0.0123 kl=0.3331 teacher_forcing=0.9", False, 0.0)
    task.advance_to(18, 10.0)  # 1.8 steps/s: 132 steps left = 1:13, one second after the update
    for width in (200, 80, 60, 40, 24):
        line = bar_line(task, width, 11.0).plain
        assert cell_len(line) <= width and "18/150" in line and "ETA 1:12" in line, (width, line)
    line = bar_line(task, 80, 11.0).plain
    assert "1.8 steps/s" in line and "loss=0.2231" in line and line.startswith("slamp-baseline")
    assert "━" * 10 in line  # a bar, however short
    path = _Task("/data/videos/long/folder/names/clip_0001.mp4 (2/5)", 40, 0, "steps", "", "", True, 0.0)
    assert "clip_0001.mp4 (2/5)" in bar_line(path, 60, 0.0).plain  # paths lose their start, not the name


def test_plain_lines_first_promptly_then_every_interval_then_the_final_count():
    from rich.console import Console

    from vpcli.cli.progress import Progress
    out = io.StringIO()
    p = Progress(console=Console(file=out, width=80), every_s=3600)
    p.start("work", 10, unit="items")
    p.update(1)
    assert out.getvalue().startswith("work: 1/10 items (10%), ")  # at the first update, not after an interval
    for i in range(2, 11):
        p.update(i)
    p.finish()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[1].startswith("work: 10/10 items (100%), ") and " in 0:00" in lines[1]
    out.seek(0), out.truncate()
    p = Progress(console=Console(file=out, width=80), every_s=0)
    p.start("work", 3, unit="items")
    for i in (1, 2, 3):
        p.update(i)
    p.finish()  # the last update already showed 3/3: no repeat
    assert [line.split(":")[1].split()[0] for line in out.getvalue().splitlines()] == ["1/3", "2/3", "3/3"]


# --- in a pseudo-terminal of 80 columns -------------------------------------------------------

TERMINAL_CASES = {
    # id: (arguments, count shown at the end, something else the screen must show)
    "moving-digits": (["data", "moving-digits", "--num", "3", "--length", "4", "--format", "mp4", "--out", "t_md"],
                      (3, 3), "moving-digits"),
    "synth-street": (["data", "synth-street", "--num", "2", "--length", "3", "--size", "32x64", "--out", "t_st"],
                     (2, 2), "synth-street"),
    "convert": (["data", "convert", "md/seq_00000.mp4", "--out", "t_cv"], (8, 8), "frames/s"),
    "predict": (["predict", "md/seq_00000.mp4", "--weights", "slamp-movingdigits", "--horizon", "6",
                 "--out", "t_pred"], (6, 6), "steps/s"),
    "segment": (["segment", "md/seq_00000.mp4", "--out", "t_seg"], (8, 8), "frames/s"),
    "flow": (["flow", "md/seq_00000.mp4", "md/seq_00001.mp4", "--out", "t_flow"], (7, 7), "(2/2)"),
    "eval": (["eval", "--pred", "md", "--gt", "md", "--metric", "psnr", "--out", "t_eval"], (2, 2), "psnr="),
    "train": ([*TRAIN, "--out", "t_run"], (3, 3), "loss="),
}


@pytest.mark.parametrize("case", list(TERMINAL_CASES))
def test_bar_in_an_80_column_terminal(ws, case):
    args, (n, m), also = TERMINAL_CASES[case]
    code, raw = run_in_terminal(args, ws)
    lines = screen_lines(raw)
    assert code == 0, "\n".join(lines)
    text = "\n".join(lines)
    bars = [line for line in lines if "━" in line and count_of(n, m).search(line)]
    assert bars, f"no bar at {n}/{m}:\n{text}"
    assert any(RATE.search(b) for b in bars) and also in text, text
    assert "ETA" in text or case == "segment", text  # segment learns its total with the first batch (here the last)
    too_wide = [line for line in lines if cell_len(line) > COLS]
    assert not too_wide, too_wide
    assert "\x1b[?25h" in raw  # the cursor is shown again


def test_weights_download_bar_in_an_80_column_terminal(hub, weights_env, tmp_path):  # noqa: F811
    data = os.urandom(3_000_000)
    manifest = write_manifest(tmp_path / "m.yaml", [hub_entry(hub, "remote-net", data, task="segmenter",
                                                              arch="deeplabv3plus")])
    env = {"HF_ENDPOINT": hub.endpoint, "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HOME": os.environ["HF_HOME"],
           "VPCLI_CACHE": os.environ["VPCLI_CACHE"]}
    code, raw = run_in_terminal(["weights", "download", "remote-net", "--manifest", str(manifest)], tmp_path, env)
    lines = screen_lines(raw)
    assert code == 0, "\n".join(lines)
    assert any("3.0/3.0 MB" in line and "MB/s" in line for line in lines), lines
    assert any(line.startswith("remote-net: ok") for line in lines)
    assert not [line for line in lines if cell_len(line) > COLS]  # the long "ok (path)" line is wrapped


# --- piped --------------------------------------------------------------------------------------

def run(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def counts(err: str, what: str) -> list[str]:
    """The N/M of every plain progress line about ``what``."""
    return re.findall(rf"^{re.escape(what)}: (\d+/\d+) ", err, flags=re.MULTILINE)


def test_train_piped_prints_a_line_per_step_with_the_count(ws):
    proc = subprocess.run([sys.executable, "-m", "vpcli", "--threads", "1", *TRAIN, "--out", "p_run"], cwd=ws,
                          env=_env(VPCLI_PROGRESS_EVERY="0"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout == "", proc.stderr
    assert counts(proc.stderr, "convlstm") == ["1/3", "2/3", "3/3"], proc.stderr
    lines = proc.stderr.splitlines()
    assert all(RATE.search(line) and "loss=" in line for line in lines if line.startswith("convlstm: "))
    assert lines[-1].startswith("finished at step 3")


def test_train_default_interval_gives_the_first_step_at_once_and_the_final_count(ws, capsys, monkeypatch):
    monkeypatch.delenv("VPCLI_PROGRESS_EVERY", raising=False)  # every 5 s: 3 tiny steps take less
    code, out, err = run(capsys, *TRAIN, "--out", ws / "p_run5")
    assert code == 0, err
    assert counts(err, "convlstm") == ["1/3", "3/3"], err


PIPED_CASES = {
    # id: (arguments, what the lines are about, the counts they show in order)
    "moving-digits": (["data", "moving-digits", "--num", "3", "--length", "4", "--out", "p_md"],
                      "moving-digits", ["1/3", "2/3", "3/3"]),
    "convert": (["data", "convert", "md/seq_00000.mp4", "--out", "p_cv", "--end", "3"], "md/seq_00000.mp4",
                ["1/3", "2/3", "3/3"]),
    "predict": (["predict", "md/seq_00000.mp4", "--weights", "slamp-movingdigits", "--horizon", "3",
                 "--out", "p_pred"], "md/seq_00000.mp4", ["1/3", "2/3", "3/3"]),
    "segment": (["segment", "md/seq_00000.mp4", "--batch-size", "4", "--out", "p_seg"], "md/seq_00000.mp4",
                ["4/8", "8/8"]),
    "flow": (["flow", "md/seq_00000.mp4", "--batch-size", "4", "--out", "p_flow"], "md/seq_00000.mp4",
             ["4/7", "7/7"]),
    "eval": (["eval", "--pred", "md", "--gt", "md", "--metric", "psnr", "--out", "p_eval"], "eval",
             ["1/2", "2/2"]),
}


@pytest.mark.parametrize("case", list(PIPED_CASES))
def test_piped_progress_lines_have_the_right_counts(ws, capsys, monkeypatch, case):
    args, what, expected = PIPED_CASES[case]
    monkeypatch.setenv("VPCLI_PROGRESS_EVERY", "0")
    monkeypatch.chdir(ws)
    code, out, err = run(capsys, *args)
    assert code == 0, err
    assert counts(err, what) == expected, err


def test_json_output_is_records_only(ws, capsys, monkeypatch):
    monkeypatch.setenv("VPCLI_PROGRESS_EVERY", "0")
    code, out, err = run(capsys, "predict", ws / "md/seq_00000.mp4", "--weights", "slamp-movingdigits",
                         "--horizon", "3", "--out", ws / "j_pred", "--json")
    assert code == 0 and [json.loads(line)["frames"] for line in out.splitlines()] == [3], out
    assert "/3 steps" not in err
    code, out, err = run(capsys, "data", "moving-digits", "--num", "2", "--length", "3", "--out", ws / "j_md",
                         "--json")
    assert code == 0 and json.loads(out)["sequences"] == 2 and "moving-digits:" not in err


def test_warning_events_print_one_line_on_stderr(capsys):
    from vpcli.cli.render import (
        FlowRenderer,
        PredictRenderer,
        SegmentRenderer,
        TrainRenderer,
    )
    from vpcli.cli.render_eval import EvalRenderer
    for cls in (PredictRenderer, SegmentRenderer, FlowRenderer, TrainRenderer, EvalRenderer):
        for as_json in (False, True):
            cls(as_json)("warning", {"message": "something odd"})
            out, err = capsys.readouterr()
            assert err == "warning: something odd\n", cls
            assert out == ("" if cls is not TrainRenderer or not as_json else
                           json.dumps({"event": "warning", "message": "something odd"}) + "\n")


def test_the_rate_of_work_reported_in_bursts_is_the_burst_rate():
    """`vpcli eval` finishes its sequences in batches of 8 at once. Bursts further apart than the
    rate window used to read as one sequence per burst period (an eval at 7.5 s/seq showed
    60-90 s/seq and an ETA of 2 h for 12 minutes of work)."""
    from vpcli.cli.progress import _Task
    task = _Task("eval", 100, 0, "seq", "", "", False, 0.0)
    worst = 0.0
    for burst in range(1, 12):  # 8 sequences every 60 s: 7.5 s/seq
        for k in range(8):
            now = 60.0 * burst + 0.01 * k
            task.advance_to(8 * (burst - 1) + k + 1, now)
            if burst > 1:
                worst = max(worst, (1 / task.rate()) / 7.5, 7.5 * task.rate())
        assert abs(1 / task.rate() - 7.5) < 0.1, (burst, 1 / task.rate())  # right after each burst
    assert worst < 2.0, worst  # and never off by more than 2x mid-burst
    steady = _Task("train", 1000, 0, "steps", "", "", False, 0.0)
    for i in range(1, 400):  # 10 steps/s, every update its own sample
        steady.advance_to(i, 0.1 * i)
    assert abs(steady.rate() - 10.0) < 0.05, steady.rate()

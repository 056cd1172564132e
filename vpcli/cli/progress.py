"""Progress of every long command (predict, segment, flow, eval, train, data, weights download).

One look everywhere, decided here and nowhere else:

- **On a terminal** (stderr is a TTY and TERM is not ``dumb``): a one-line rich live bar laid
  out for the terminal's width: ``description bar N/M rate ETA main-loss extra-values``. As the
  width shrinks it gives up, in this order: bar length beyond 20 cells, description characters
  beyond 30, the extra values, bar length beyond 10, main values after the first (a method with
  several optimisation steps has a loss per step), description characters beyond 12, the rest
  of the description, the bar, the main loss, the rate. The count ``N/M`` and the ETA always
  stay; values are shown whole or not at all.
- **Elsewhere** (a pipe, a log file, a batch job): one plain line on stderr when the count has
  moved and at least ``$VPCLI_PROGRESS_EVERY`` seconds (default 5; 0: at every update) have
  passed since the last line. The first line comes at the first update, a final line when the
  work ends.
- ``--json`` is the renderers' business: they pass ``quiet=True`` and keep stdout for records.

Messages printed through :meth:`Progress.print` (warnings, per-clip results) appear above a
live bar, never inside it.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from vpcli.cli import interrupt
from vpcli.cli.common import err_console

ENV_EVERY = "VPCLI_PROGRESS_EVERY"
DEFAULT_EVERY_S = 5.0
RATE_WINDOW_S = 30.0  # the rate follows the last 30 s: it adapts when the speed changes
BURST_S = 1.0  # updates closer together than this are one burst (a batch finishing at once)
BAR_MIN, BAR_SHORT, BAR_MAX = 10, 20, 40  # cells
DESC_SHORTEST, DESC_MIN, DESC_LONG = 5, 12, 30
_KEEP = object()
_warned_env = False


def plain_interval_s() -> float:
    """Seconds between plain progress lines: ``$VPCLI_PROGRESS_EVERY``, else 5."""
    global _warned_env
    raw = os.environ.get(ENV_EVERY, "").strip()
    if not raw:
        return DEFAULT_EVERY_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value >= 0 and math.isfinite(value):
        return value
    if not _warned_env:  # a typo must not stop a long job, but it must not pass silently either
        _warned_env = True
        sys.stderr.write(f"warning: {ENV_EVERY}={raw!r} is not a number of seconds >= 0; "
                         f"using {DEFAULT_EVERY_S:g}\n")
    return DEFAULT_EVERY_S


# --- text of the fields ----------------------------------------------------------------------

def clock(seconds: float) -> str:
    """``M:SS`` under an hour, ``H:MM:SS`` above."""
    s = max(0, round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


_SIZES = (("GB", 1e9), ("MB", 1e6), ("kB", 1e3))


def _size_unit(n: float) -> tuple[str, float]:
    return next(((u, f) for u, f in _SIZES if n >= f), ("B", 1.0))


def _bytes(n: float, unit: tuple[str, float] | None = None) -> str:
    name, factor = unit or _size_unit(n)
    return f"{n:.0f} B" if factor == 1.0 else f"{n / factor:.1f} {name}"


def _num(x: float) -> str:
    return f"{x:.3g}" if x < 100 else f"{x:.0f}"


def _singular(unit: str) -> str:
    return unit[:-1] if unit.endswith("s") and len(unit) > 3 else unit


class _Task:
    """One piece of work: a count towards an optional total, and what to show beside it."""

    def __init__(self, description: str, total: int | None, completed: int, unit: str, info: str, extra: str,
                 keep_end: bool, now: float):
        self.description, self.total, self.completed, self.unit = description, total, completed, unit
        self.info, self.extra, self.keep_end = info, extra, keep_end
        self.started = self.last = now
        self.finished: float | None = None
        self.samples: deque[tuple[float, int]] = deque([(now, completed)])
        self.burst = now  # when the latest burst of updates began

    def advance_to(self, completed: int, now: float) -> None:
        if completed < self.completed:  # counting restarted (the next stage of a training plan)
            self.samples = deque([(now, completed)])
        elif completed > self.completed:
            if len(self.samples) > 1 and now - self.burst < BURST_S:
                self.samples[-1] = (now, completed)  # one burst of updates is one sample: its last
            else:
                self.samples.append((now, completed))
                self.burst = now
            # keep two intervals at least: work reported in bursts further apart than the window
            # (eval's batches of sequences) would otherwise show one item per burst period
            while len(self.samples) > 3 and now - self.samples[1][0] >= RATE_WINDOW_S:
                self.samples.popleft()
        self.completed, self.last = completed, now

    def rate(self) -> float | None:
        (t0, c0), t1, c1 = self.samples[0], self.last, self.completed
        return (c1 - c0) / (t1 - t0) if t1 > t0 and c1 > c0 else None

    def fields(self, now: float) -> dict[str, str]:
        """count, percent, rate and time of the task as text (the bar and the plain line share these)."""
        done, total, unit = self.completed, self.total, self.unit
        rate = self.rate()
        if unit == "bytes":
            size = _size_unit(total if total else done)
            count = (f"{_bytes(done, size).split()[0]}/{_bytes(total, size)}" if total else _bytes(done))
            speed = f"{_bytes(rate)}/s" if rate else "-- B/s"
        else:
            count = f"{done}/{total}" if total else f"{done} {unit}"
            if rate is None:
                speed = f"-- {unit}/s"
            elif rate >= 1:
                speed = f"{_num(rate)} {unit}/s"
            else:  # slow work reads better as seconds per step
                speed = f"{_num(1 / rate)} s/{_singular(unit)}"
        if self.finished is not None:
            when = f"in {clock(self.finished - self.started)}"
        elif not total:
            when = clock(now - self.started)  # elapsed: there is no end to count down to
        elif rate is None:
            when = "ETA -:--"
        else:  # counts down between updates too (sparse updates: a slow eval sequence, a long step)
            when = f"ETA {clock(max(0.0, (total - done) / rate - (now - self.last)))}"
        percent = f"{100 * done / total:.0f}%" if total else ""
        return {"count": count, "percent": percent, "rate": speed, "when": when}


def _cut(text: str, width: int, keep_end: bool) -> str:
    from rich.cells import cell_len, set_cell_size
    if cell_len(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    if keep_end:  # paths: the file name matters more than the folders
        return "…" + set_cell_size(text[::-1], width - 1)[::-1].rstrip()
    return set_cell_size(text, width - 1).rstrip() + "…"


def _words(text: str, width: int) -> str:
    from rich.cells import cell_len
    kept: list[str] = []
    for word in text.split(" "):
        if cell_len(" ".join(kept + [word])) > width:
            break
        kept.append(word)
    return " ".join(kept)


def bar_line(task: _Task, width: int, now: float):
    """The task as one rich Text of at most ``width`` cells (layout: module docstring)."""
    from rich.cells import cell_len
    from rich.text import Text
    f = task.fields(now)
    desc, info, extra = task.description, task.info, task.extra
    has_bar = bool(task.total)
    words = {"info": info, "extra": extra}  # k=v values: shown whole or not at all

    def first_word(name: str) -> int:
        return cell_len(words[name].split(" ")[0]) if words[name] else 0

    # Always kept: count and time. Then, while they fit, in this order of importance:
    widths = {"count": cell_len(f["count"]), "when": cell_len(f["when"])}
    used = widths["count"] + 1 + widths["when"]
    for name, w in (("rate", cell_len(f["rate"])), ("info", first_word("info")), ("bar", BAR_MIN if has_bar else 0),
                    ("desc", min(cell_len(desc), DESC_MIN))):
        if name == "desc":  # a shorter description rather than none
            w = min(w, width - used - 1)
            w = w if w >= min(cell_len(desc), DESC_SHORTEST) else 0
        if w and used + 1 + w <= width:
            widths[name] = w
            used += 1 + w
    # The room left goes to a longer description, every main value, a longer bar, the extra
    # values, the whole description and the longest bar, in this order.
    for name, most in (("desc", min(cell_len(desc), DESC_LONG)), ("info", cell_len(info)), ("bar", BAR_SHORT),
                       ("extra", cell_len(extra)), ("desc", cell_len(desc)), ("bar", BAR_MAX)):
        if name == "extra" and first_word("extra") and used + 1 + first_word("extra") <= width:
            widths["extra"] = first_word("extra")
            used += 1 + widths["extra"]
        if name not in widths or width <= used:
            continue
        grow = min(most - widths[name], width - used)
        if name in words:
            grow = cell_len(_words(words[name], widths[name] + grow)) - widths[name]
        if grow > 0:
            widths[name] += grow
            used += grow
    parts: list[Any] = []
    if "desc" in widths:
        parts.append(Text(_cut(desc, widths["desc"], task.keep_end), style="progress.description"))
    if "bar" in widths:
        frac = min(1.0, max(0.0, task.completed / task.total))
        filled = round(widths["bar"] * frac)
        done_style = "bar.finished" if task.finished is not None or frac >= 1 else "bar.complete"
        parts.append(Text.assemble(("━" * filled, done_style), ("━" * (widths["bar"] - filled), "bar.back")))
    parts.append(Text(f["count"], style="progress.download"))
    if "rate" in widths:
        parts.append(Text(f["rate"], style="progress.data.speed"))
    parts.append(Text(f["when"], style="progress.elapsed" if task.finished is not None else "progress.remaining"))
    if "info" in widths:
        parts.append(Text(_words(info, widths["info"]), style="yellow"))
    if "extra" in widths:  # whole ``k=v`` values only: a cut number would mislead
        parts.append(Text(_words(extra, widths["extra"]), style="dim"))
    line = Text(" ").join(parts)
    line.no_wrap, line.overflow = True, "crop"
    line.truncate(width)  # a terminal narrower than the count and the time alone
    return line


def plain_line(task: _Task, now: float) -> str:
    """The task as a plain log line, e.g. ``convlstm: 30/150 steps (20%), 2.3 steps/s, ETA 0:52, loss=0.027``."""
    f = task.fields(now)
    count = f["count"] if task.unit == "bytes" or not task.total else f"{f['count']} {task.unit}"
    head = f"{count} ({f['percent']})" if f["percent"] else count
    text = f"{task.description}: {head}, {f['rate']}, {f['when']}"
    details = " ".join(x for x in (task.info, task.extra) if x)
    return f"{text}, {details}" if details else text


class _LiveLine:
    """What the live display draws: the current task, laid out for the width it is given."""

    def __init__(self, owner: Progress):
        self.owner = owner

    def __rich_console__(self, console, options):
        task = self.owner.task
        if task is not None:
            yield bar_line(task, options.max_width, time.monotonic())


class Progress:
    """Progress of one piece of work at a time, as a bar (terminal) or plain lines (not one).

    ``quiet``: no progress at all (``--json``), but :meth:`print`/:meth:`warning` still print.
    ``transient``: the bar disappears when the work ends (a result line replaces it).
    ``every_s``: seconds between plain lines (default ``$VPCLI_PROGRESS_EVERY``, else 5).
    """

    def __init__(self, *, quiet: bool = False, transient: bool = True, every_s: float | None = None,
                 console=None):
        self.console = console if console is not None else err_console()
        self.quiet, self.transient = quiet, transient
        self.live = not quiet and self.console.is_terminal and not self.console.is_dumb_terminal
        self.every = every_s if every_s is not None else (0.0 if quiet else plain_interval_s())
        self.task: _Task | None = None
        self._live = None
        self._printed: tuple[float, int] | None = None  # (when, count) of the last plain line

    # --- the work -----------------------------------------------------------------------------
    def start(self, description: str, total: int | None = None, *, unit: str = "steps", completed: int = 0,
              info: str = "", extra: str = "", keep_end: bool = False) -> None:
        """Begin a piece of work (ending the previous one, if any, without a final line).

        ``keep_end``: when the description must be shortened, keep its end (paths).
        """
        self.stop()
        self.task = _Task(description, total or None, completed, unit, info, extra, keep_end, time.monotonic())
        self._printed = None
        if self.live:
            from rich.live import Live
            # stdout is redirected above the bar only when it is the same kind of device: a piped
            # stdout (tables, records) must stay on stdout.
            self._live = Live(_LiveLine(self), console=self.console, refresh_per_second=4,
                              transient=self.transient, redirect_stdout=sys.stdout.isatty(),
                              redirect_stderr=True)
            self._live.start(refresh=True)

    def update(self, completed: int | None = None, *, total: Any = _KEEP, description: str | None = None,
               info: str | None = None, extra: str | None = None) -> None:
        """Move the count to ``completed`` (and change what else is given). Raises a Ctrl-C or
        SIGTERM whose first raise was swallowed (:mod:`vpcli.cli.interrupt`)."""
        interrupt.raise_pending()
        task = self.task
        if task is None:
            return
        now = time.monotonic()
        if total is not _KEEP:
            task.total = total or None
        if description is not None:
            task.description = description
        if info is not None:
            task.info = info
        if extra is not None:
            task.extra = extra
        if completed is not None:
            task.advance_to(int(completed), now)
        if self.quiet or self.live:
            return
        if self._printed is None or (task.completed != self._printed[1] and now - self._printed[0] >= self.every):
            self._plain(now)

    def finish(self) -> None:
        """The work is done: the bar shows its final count and time (or a final plain line)."""
        task = self.task
        if task is None:
            return
        now = time.monotonic()
        task.finished = now
        if not self.quiet and not self.live and self._printed is not None and self._printed[1] != task.completed:
            self._plain(now)  # the final count (work without any update, e.g. a cached download, prints none)
        self._end()

    def stop(self) -> None:
        """End the current work without a final line (a failure, Ctrl-C): the terminal is left clean."""
        self._end()

    def _end(self) -> None:
        if self._live is not None:
            live, self._live = self._live, None
            live.stop()
        self.task = None

    def _plain(self, now: float) -> None:
        self.console.print(plain_line(self.task, now), markup=False, highlight=False)
        self._printed = (now, self.task.completed)

    # --- messages -----------------------------------------------------------------------------
    def print(self, text: str) -> None:
        """One message on stderr (above the bar while one is shown); see :func:`message`."""
        message(text, console=self.console)

    def warning(self, message: str) -> None:
        self.print(f"warning: {message}")

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.finish() if exc_type is None else self.stop()


def message(text: str, *, console=None) -> None:
    """A message line on stderr: on a terminal wrapped at word boundaries to its width (as the
    terminal would wrap it anyway, but between words); elsewhere one line, whatever its length
    (logs stay greppable)."""
    console = console if console is not None else err_console()
    console.print(text, markup=False, highlight=False, soft_wrap=not console.is_terminal)


@contextlib.contextmanager
def counting(description: str, total: int | None = None, *, unit: str, quiet: bool = False,
             keep_end: bool = False) -> Iterator[Callable[[int, int | None], None]]:
    """Progress of a library call that reports ``progress(done, total)`` (data generators, downloads)::

        with counting("moving-digits", num, unit="seq") as progress:
            generate_moving_digits(..., progress=progress)
    """
    with Progress(quiet=quiet) as p:
        p.start(description, total, unit=unit, keep_end=keep_end)
        yield lambda done, total=None: p.update(done, total=total or _KEEP)

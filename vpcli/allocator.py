"""How glibc's malloc serves torch's large CPU tensors (`VPCLI_MALLOC=heap|glibc`).

Torch's CPU allocator asks malloc for every tensor. glibc hands out each block above its mmap
threshold -- which grows with use but never past 32 MB on 64-bit Linux -- as a fresh ``mmap``
and returns it with ``munmap`` when the tensor dies, so every such tensor pays a page fault per
4 KB page when it is first written, every time. A 64-channel 64x64 activation at batch 32 is
exactly 32 MB: SLAMP's mask predictor, decoders and their gradients all land there. Measured on
this project's machine (AVX512, one thread): ``x * 2`` on a (32, 64, 64, 64) float32 tensor took
0.254 ms a row against 0.075 ms into a preallocated output; with the heap mode below 0.078 ms.

``heap`` (the default on glibc) turns ``mmap`` off for allocations (``M_MMAP_MAX = 0``) and keeps
freed memory in the process (``M_TRIM_THRESHOLD`` 1 GiB), so large blocks are reused from the heap
like small ones. The cost: the process keeps its peak memory until it exits, which suits a
command-line run; library users opt in by calling :func:`configure`. ``glibc`` is glibc's own
behaviour once its dynamic threshold has converged (mmap above 32 MB, trim above 64 MB), what a
long-running process gets by default.

A mode holds for the whole process: switching back to ``glibc`` after ``heap`` does not take the
heap's freed blocks away, and glibc keeps reusing them, so two codes timed in one process under
two modes run under about the same allocator. Outside glibc (macOS, musl) both modes do nothing.
What each mode gains is measured one process per mode by ``benchmarks/bench_slamp_predict.py
--only allocator``.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import ctypes.util
import os
from collections.abc import Iterator

from vpcli.errors import UsageError

ENV = "VPCLI_MALLOC"
MODES = ("heap", "glibc")
# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_SETTINGS = {"heap": ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 1 << 30)),
             "glibc": ((_M_MMAP_THRESHOLD, 32 << 20), (_M_TRIM_THRESHOLD, 64 << 20), (_M_MMAP_MAX, 65536))}
_current: str | None = None


@functools.cache
def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018  (glibc only: AttributeError elsewhere)
        return libc
    except (OSError, AttributeError):
        return None


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                              "fsmblks", "uordblks", "fordblks", "keepcost")]


def mmapped_bytes() -> int | None:
    """Bytes malloc holds in mmapped blocks now (glibc >= 2.33 ``mallinfo2().hblkhd``; else None)."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return None
    libc.mallinfo2.restype = _MallInfo2
    return int(libc.mallinfo2().hblkhd)


def current() -> str | None:
    """The mode this process last set (None: never set, or not glibc)."""
    return _current


def set_mode(mode: str) -> bool:
    """Apply ``mode``; False when this libc has no ``mallopt`` (nothing changed)."""
    global _current
    if mode not in MODES:
        raise UsageError(f"unknown allocator mode {mode!r}", f"{ENV} takes one of: {', '.join(MODES)}")
    libc = _libc()
    if libc is None:
        return False
    for param, value in _SETTINGS[mode]:
        if libc.mallopt(param, value) != 1:
            return False
    _current = mode
    return True


def configure(mode: str | None = None) -> str | None:
    """Set ``mode``, else ``$VPCLI_MALLOC``, else ``heap``; -> the mode applied (None: not glibc)."""
    mode = mode or os.environ.get(ENV, "").strip() or "heap"
    return mode if set_mode(mode) else None


@contextlib.contextmanager
def using(mode: str) -> Iterator[None]:
    """Run a block under ``mode``, then restore the previous one (never set: ``glibc``, the
    converged default). Blocks freed meanwhile stay in the heap (module docstring)."""
    before = _current or "glibc"
    set_mode(mode)
    try:
        yield
    finally:
        set_mode(before)

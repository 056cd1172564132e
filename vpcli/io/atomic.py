"""Atomic writes: write under a temporary name in the same folder, rename on success.

A failure (exception, Ctrl-C) removes the temporary and leaves nothing at the final path, so a
file that exists under its final name is always complete. Renames within one folder are atomic
on POSIX (``os.replace``).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from vpcli.errors import OutputError


def check_writable_dir(folder: str | os.PathLike) -> Path:
    """Create ``folder`` if needed and check that files can be created in it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create output folder {folder}: {e.strerror}",
                          "choose a folder you can write to with --out") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {folder} is not writable",
                          "choose a folder you can write to with --out")
    return folder


def check_overwrite(path: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse to replace an existing output unless ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputError(f"{path} already exists", "pass --overwrite to replace it, or choose another --out")
    return path


def temp_name(final: Path) -> Path:
    """A unique hidden temporary path beside ``final`` that keeps its suffix (encoders look at it)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f".part{final.suffix}", dir=final.parent)
    os.close(fd)
    return Path(tmp)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; move it to ``final`` only if the block succeeds."""
    final = Path(final)
    check_writable_dir(final.parent)
    check_overwrite(final, overwrite)
    tmp = temp_name(final)
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; it replaces ``final`` only on success."""
    final = Path(final)
    check_writable_dir(final.parent)
    check_overwrite(final, overwrite)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final) if final.is_dir() else final.unlink()
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_bytes(final: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)
    return Path(final)


def write_text(final: str | os.PathLike, text: str) -> Path:
    return write_bytes(final, text.encode("utf-8"))

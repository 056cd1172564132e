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
    blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise OutputError(f"cannot create output folder {folder}: {blocker} is a file, not a folder",
                          "choose a folder you can write to with --out")
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


def _umask() -> int:
    try:  # Linux reports it without changing it (os.umask would, racing other threads)
        with open("/proc/self/status") as f:
            return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


def publish(tmp: Path, final: Path) -> None:
    """Give ``tmp`` the usual permissions and move it to ``final`` (file or folder).

    mkstemp/mkdtemp create owner-only temporaries, hence the chmod. An existing folder at
    ``final`` is moved aside first, so a failure between the two renames never leaves nothing.
    """
    try:
        os.chmod(tmp, (0o777 if tmp.is_dir() else 0o666) & ~_umask())
        if not tmp.is_dir() or not (final.exists() or final.is_symlink()):
            if final.is_dir() and not final.is_symlink():
                shutil.rmtree(final)
            os.replace(tmp, final)
            return
        trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
        os.replace(final, trash / "old")
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    except OSError as e:
        raise OutputError(f"cannot move the finished output to {final}: {e.strerror or e}",
                          "remove what is at that path, or choose another --out") from None


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; move it to ``final`` only if the block succeeds."""
    final = Path(final)
    check_writable_dir(final.parent)
    check_overwrite(final, overwrite)
    tmp = temp_name(final)
    try:
        yield tmp
        publish(tmp, final)
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
        publish(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_bytes(final: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)
    return Path(final)


def write_text(final: str | os.PathLike, text: str) -> Path:
    return write_bytes(final, text.encode("utf-8"))

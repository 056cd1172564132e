"""Atomic writes: write under a temporary name in the same folder, rename on success.

A failure (exception, Ctrl-C) removes the temporary and leaves nothing at the final path, so a
file that exists under its final name is always complete. Renames within one folder are atomic
on POSIX (``os.replace``).

Two more promises, kept at the moment of the rename rather than only checked at the start:

- Without ``overwrite`` nothing is replaced, even an output that another process published while
  this one was writing (two runs with one ``--out``): the rename itself refuses to replace
  (Linux ``renameat2(RENAME_NOREPLACE)``; elsewhere ``os.link`` for files and an exclusive
  ``os.mkdir`` for folders), and the temporary is removed.
- A file never replaces a folder, with or without ``overwrite``.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
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
    """Refuse to replace an existing output (a dangling symlink counts) unless ``overwrite``."""
    path = Path(path)
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise OutputError(f"{path} already exists", "pass --overwrite to replace it, or choose another --out")
    return path


def check_not_a_folder(path: str | os.PathLike) -> Path:
    """Refuse a file output whose target is a folder: ``--overwrite`` replaces files, never folders."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path} is a folder; a file output never replaces a folder, even with --overwrite",
                          f"give the path of a file (e.g. one inside it: {path / 'FILE'}), or move the folder "
                          "away yourself")
    return path


def _appeared(final: Path) -> OutputError:
    return OutputError(f"{final} appeared while this output was being written (another run writing to the same "
                       f"output?); it was left as it is and nothing was written",
                       "pass --overwrite to replace it, or choose another --out")


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


# renameat2(2) from the C library (glibc >= 2.28), or None where there is none.
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def _load_renameat2():
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2 = _load_renameat2()


def rename_no_replace(src: Path, dst: Path) -> None:
    """Move ``src`` (file or folder) to ``dst``, which must not exist: FileExistsError if it does.

    Atomic with ``renameat2(RENAME_NOREPLACE)``. Where the kernel or filesystem lacks it: a file
    is hard-linked (``link`` fails on an existing name) and its old name removed; a folder takes
    its name with an exclusive ``mkdir`` and is then renamed onto that empty placeholder.
    """
    if _renameat2 is not None:
        if _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise FileExistsError(err, os.strerror(err), str(dst))
        if err not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), str(dst))
    if src.is_dir():
        os.mkdir(dst)  # FileExistsError if taken; else it is ours (and empty) until the rename below
        try:
            os.rename(src, dst)  # POSIX: a folder may replace an empty folder
        except OSError:
            with contextlib.suppress(OSError):
                os.rmdir(dst)
            raise
        return
    try:
        os.link(src, dst)
    except FileExistsError:
        raise
    except OSError:  # no hard links here (some network / FAT filesystems): best effort
        if dst.exists() or dst.is_symlink():
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst)) from None
        os.rename(src, dst)
        return
    os.unlink(src)


def publish(tmp: Path, final: Path, overwrite: bool = True) -> None:
    """Give ``tmp`` the usual permissions and move it to ``final`` (file or folder).

    mkstemp/mkdtemp create owner-only temporaries, hence the chmod. Without ``overwrite`` the
    move never replaces anything (:func:`rename_no_replace`): an output that appeared since the
    start raises OutputError. A file never replaces a folder. With ``overwrite``, an existing
    folder at ``final`` is moved aside first, so a failure between the two renames never leaves
    nothing.
    """
    is_dir = tmp.is_dir()
    if not is_dir:
        check_not_a_folder(final)
    try:
        os.chmod(tmp, (0o777 if is_dir else 0o666) & ~_umask())
        if not overwrite:
            try:
                rename_no_replace(tmp, final)
            except FileExistsError:
                raise _appeared(final) from None
            return
        if not is_dir or not (final.exists() or final.is_symlink()):
            try:
                os.replace(tmp, final)
            except IsADirectoryError:  # a folder appeared since the check above
                check_not_a_folder(final)
                raise
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
    check_not_a_folder(final)
    check_overwrite(final, overwrite)
    tmp = temp_name(final)
    try:
        yield tmp
        publish(tmp, final, overwrite)
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
        publish(tmp, final, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_bytes(final: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)
    return Path(final)


def write_text(final: str | os.PathLike, text: str) -> Path:
    return write_bytes(final, text.encode("utf-8"))

"""sha256 of weights files, remembered so that loading the same file again costs one ``stat``.

A hash is stored under the key (real path, device, inode, size, mtime_ns, ctime_ns): replacing or
editing the file changes the key and forces a re-hash. mtime alone is not enough: a user (or a
tool) can put it back with ``os.utime`` after editing a file in place, but no user can set the
ctime, which the kernel moves to "now" on every write, chmod and utime; the inode changes when a
file is replaced by another. The memo lives in memory and in ``<cache>/sha256-cache.json``
(written atomically), so a new process does not re-read a large checkpoint either.
``vpcli weights verify`` passes ``trust_cache=False`` to read every byte again.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

CHUNK = 1 << 20
MEMO_FILE = "sha256-cache.json"
MEMO_MAX_ENTRIES = 1024  # oldest dropped first; one entry is ~250 bytes
MEMO_VERSION = 2  # version 1 keyed on (path, size, mtime) only: its entries are not trusted
_KEY_FIELDS = 5  # after the path: dev, ino, size, mtime_ns, ctime_ns

# Loaded memo per cache folder (tests and users may switch $VPCLI_CACHE within one process).
_memos: dict[Path, dict[str, str]] = {}


def vpcli_cache_dir() -> Path:
    """``$VPCLI_CACHE``, else ``$XDG_CACHE_HOME/vpcli``, else ``~/.cache/vpcli`` (read at call time)."""
    if os.environ.get("VPCLI_CACHE"):
        return Path(os.path.expanduser(os.environ["VPCLI_CACHE"]))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vpcli"


def hash_file(path: str | os.PathLike) -> str:
    """Read the whole file; the one place that does (tests count calls to it)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def git_blob_sha1(path: str | os.PathLike) -> str:
    """Git's blob hash of a file (what ``git hash-object FILE`` prints): SHA-1 of
    ``b"blob <size>\\0"`` followed by the bytes. A repository that commits a file publishes it."""
    size = os.stat(path).st_size
    h = hashlib.sha1(b"blob %d\0" % size, usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: str | os.PathLike, *, trust_cache: bool = True) -> str:
    """sha256 of ``path`` (symlinks followed), from the memo when the file is unchanged."""
    key = _key(path)
    memo = _memo()
    if trust_cache and key in memo:
        return memo[key]
    digest = hash_file(path)
    remember(path, digest, _key_=key)
    return digest


def remember(path: str | os.PathLike, digest: str, *, _key_: str | None = None) -> None:
    """Record a hash computed elsewhere (e.g. while streaming a download)."""
    key = _key_ or _key(path)
    memo = _memo()
    memo.pop(key, None)  # re-insert at the end: the dict's order is the eviction order
    memo[key] = digest
    _save(memo)


def forget(path: str | os.PathLike) -> None:
    """Drop every memo entry for this file (called before a bad file is deleted)."""
    real = os.path.realpath(path)
    memo = _memo()
    stale = [k for k in memo if k.rsplit("|", _KEY_FIELDS)[0] == real]
    for k in stale:
        del memo[k]
    if stale:
        _save(memo)


def clear_memory() -> None:
    """Forget the in-memory memo (the JSON file stays); for tests."""
    _memos.clear()


def _key(path: str | os.PathLike) -> str:
    st = os.stat(path)
    return f"{os.path.realpath(path)}|{st.st_dev}|{st.st_ino}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}"


def _memo() -> dict[str, str]:
    folder = vpcli_cache_dir()
    if folder not in _memos:
        _memos[folder] = _read(folder / MEMO_FILE)
    return _memos[folder]


def _read(file: Path) -> dict[str, str]:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # missing or damaged: start over, it is only a cache
    entries = data.get("entries") if isinstance(data, dict) and data.get("version") == MEMO_VERSION else None
    if not isinstance(entries, dict):  # also an older memo, whose keys an in-place edit could match
        return {}
    return {k: v for k, v in entries.items() if isinstance(k, str) and isinstance(v, str)}


def _save(memo: dict[str, str]) -> None:
    from vpcli.errors import VpcliError
    from vpcli.io.atomic import write_text

    while len(memo) > MEMO_MAX_ENTRIES:
        del memo[next(iter(memo))]
    try:
        write_text(vpcli_cache_dir() / MEMO_FILE, json.dumps({"version": MEMO_VERSION, "entries": memo}, indent=0))
    except (OSError, VpcliError):
        pass  # a read-only cache only costs speed, never correctness

"""Path helpers shared by every reader: one natural sort order for frames, clips and splits, one folder listing."""
from __future__ import annotations

import os
import re
from pathlib import Path


def natural_key(text: str | os.PathLike) -> tuple:
    """Sort key that orders embedded numbers by value: ``frame2`` before ``frame10``."""
    parts = re.split(r"(\d+)", os.fspath(text))
    # (is_number, value) pairs keep str and int comparable; lower() makes order case-insensitive,
    # the raw text breaks ties so the order is total and deterministic.
    return tuple((1, int(p), p) if p.isdigit() else (0, p.lower(), p) for p in parts)


def list_folder(folder: Path) -> list[Path]:
    """The entries of ``folder`` in natural order, without hidden ones (dot files, which include
    atomic-write temporaries); an unreadable folder raises :class:`InputError` naming it."""
    from vpcli.errors import InputError
    try:
        entries = [e for e in folder.iterdir() if not e.name.startswith(".")]
    except OSError as e:
        raise InputError(f"cannot list folder {folder}: {e.strerror}", "check the path and its permissions") from None
    return sorted(entries, key=lambda e: natural_key(e.name))

"""Path helpers shared by every reader: one natural sort order for frames, clips and splits."""
from __future__ import annotations

import os
import re


def natural_key(text: str | os.PathLike) -> tuple:
    """Sort key that orders embedded numbers by value: ``frame2`` before ``frame10``."""
    parts = re.split(r"(\d+)", os.fspath(text))
    # (is_number, value) pairs keep str and int comparable; lower() makes order case-insensitive,
    # the raw text breaks ties so the order is total and deterministic.
    return tuple((1, int(p), p) if p.isdigit() else (0, p.lower(), p) for p in parts)

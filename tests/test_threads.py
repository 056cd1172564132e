"""`--threads N` / VPCLI_THREADS / the default that divides the cores among shards (issue 14)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from vpcli import threads
from vpcli.errors import UsageError


def test_threads_and_shards_are_read_from_anywhere_on_the_line():
    argv, n, shards = threads.from_argv(["predict", "a.mp4", "--threads", "3", "--shard", "2/4", "--out", "x"])
    assert argv == ["predict", "a.mp4", "--shard", "2/4", "--out", "x"] and n == "3" and shards == 4
    argv, n, shards = threads.from_argv(["--threads=2", "flow", "a.mp4", "--shard=1/2"])
    assert argv == ["flow", "a.mp4", "--shard=1/2"] and n == "2" and shards == 2
    with pytest.raises(UsageError, match="--threads needs a value"):
        threads.from_argv(["predict", "--threads"])


def test_precedence_cli_then_env_then_omp_then_cores_per_shard(monkeypatch):
    monkeypatch.delenv("VPCLI_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 8)
    monkeypatch.setattr(threads, "busy_cores", lambda: 0)
    assert threads.choose(None, 1) == (8, "default") and threads.choose(None, 4) == (2, "default")
    assert threads.choose(None, 16) == (1, "default")  # never 0
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.choose(None, 4) == (3, "OMP_NUM_THREADS")
    monkeypatch.setenv("VPCLI_THREADS", "5")
    assert threads.choose(None, 4) == (5, "VPCLI_THREADS")
    assert threads.choose("2", 4) == (2, "--threads")
    monkeypatch.setenv("VPCLI_THREADS", "many")
    with pytest.raises(UsageError, match="VPCLI_THREADS must be an integer >= 1, got 'many'"):
        threads.choose(None)


def test_default_leaves_the_cores_other_work_keeps_busy(monkeypatch):
    """Two threads on 2 cores beside one busy process ran 20x slower than one (vpcli/threads.py)."""
    monkeypatch.delenv("VPCLI_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    monkeypatch.setattr(threads, "busy_cores", lambda: 1)
    assert threads.choose(None, 1) == (1, "default (2 cores, 1 busy with other work)")
    monkeypatch.setattr(threads, "busy_cores", lambda: 5)
    assert threads.choose(None, 1)[0] == 1  # never 0
    monkeypatch.setattr(threads, "available_cores", lambda: 8)
    monkeypatch.setattr(threads, "busy_cores", lambda: 2)
    assert threads.choose(None, 1)[0] == 6 and threads.choose(None, 4) == (2, "default")
    assert threads.choose("2", 1) == (2, "--threads")  # an explicit count is never second-guessed


def test_busy_cores_sees_a_spinning_process():
    import time
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert threads.busy_cores(samples=8, interval_s=0.01) >= 1
    finally:
        spin.kill()
        spin.wait()


def _vpcli(*args, env=None):
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "VPCLI_THREADS")}
    return subprocess.run([sys.executable, "-m", "vpcli", *map(str, args)], capture_output=True, text=True,
                          env={**base, **(env or {})}, timeout=120)


@pytest.fixture
def clip(tmp_path):
    from vpcli.io.video import write_video
    frames = np.random.default_rng(0).integers(0, 255, (4, 16, 16, 3), dtype=np.uint8)
    return write_video(tmp_path / "c.mp4", frames, fps=5, lossless=True)


def test_the_count_reaches_torch_and_meta_json(tmp_path, clip):
    def used(*args, env=None):
        out = tmp_path / f"run{len(os.listdir(tmp_path))}"
        r = _vpcli("predict", clip, "--method", "copy-last", "--horizon", 1, "--context", 2, *args,
                   "--out", out, env=env)
        assert r.returncode == 0, r.stderr
        return json.loads(next(out.rglob("meta.json")).read_text())["threads"]
    assert used("--threads", 1) == 1
    assert used(env={"VPCLI_THREADS": "2"}) == 2
    assert used("--shard", "1/2") == max(1, threads.available_cores() // 2)
    r = _vpcli("predict", clip, "--method", "copy-last", "--threads", 0, "--out", tmp_path / "bad")
    assert r.returncode == 2 and r.stderr.startswith("error: --threads must be an integer >= 1, got '0'")

"""`vpcli.api` as a library: typed options checked on construction, then the engine behind them.

The CLI tests run the same functions through Typer; these call them directly, as a user would.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from vpcli import __version__, api
from vpcli.errors import UsageError
from vpcli.io.video import read_video, write_video


@pytest.fixture
def clips(tmp_path):
    d = tmp_path / "clips"
    d.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        write_video(d / f"{name}.mkv", rng.integers(0, 256, (5, 32, 48, 3), dtype=np.uint8), fps=10, lossless=True)
    return d


@pytest.mark.parametrize("cls, kwargs, message", [
    ("SegmentOptions", {"batch_size": 0}, "--batch-size must be an integer >= 1, got 0"),
    ("SegmentOptions", {"alpha": 1.5}, "--alpha (overlay opacity) must be in [0, 1], got 1.5"),
    ("SegmentOptions", {"size": "4x64"}, "--size 4x64: both sides must be at least 8 pixels"),
    ("SegmentOptions", {"precision": "fp16"}, "--precision must be fp32 or bf16, got 'fp16'"),
    ("SegmentOptions", {"shard": "3/2"}, "--shard 3/2: K must be between 1 and N"),
    ("FlowOptions", {"direction": "sideways"}, "unknown --direction 'sideways'"),
    ("FlowOptions", {"size": "big"}, "--size must be HxW like 128x256, got 'big'"),
    ("FlowOptions", {"shard": "1-2"}, "--shard expects K/N like 2/8, got '1-2'"),
    ("ConvertOptions", {"format": "avi"}, "unknown --format 'avi'"),
    ("ConvertOptions", {"stride": 0}, "--stride must be an integer >= 1, got 0"),
    ("ConvertOptions", {"start": 3, "end": 2}, "--end must be an integer after --start 3, got 2"),
    ("ConvertOptions", {"fps": -1.0}, "--fps must be a positive number, got -1.0"),
])
def test_options_reject_bad_values_naming_option_and_value(cls, kwargs, message):
    with pytest.raises(UsageError) as err:
        getattr(api, cls)(**kwargs)
    assert message in str(err.value)


def test_options_normalise_text_and_are_frozen_and_keyword_only():
    o = api.FlowOptions(size="24x40", shard="2/3")
    assert o.size == (24, 40) and o.shard == (2, 3)
    assert api.FlowOptions(size=(24, 40), shard=(2, 3)) == o
    with pytest.raises(AttributeError):
        o.size = (8, 8)  # frozen
    with pytest.raises(TypeError):
        api.SegmentOptions("weights.safetensors")  # keyword-only
    assert api.SegmentOptions().weights is None and api.ConvertOptions().format == "mp4"


def test_estimate_flow_and_data_tools_through_the_typed_face(clips, tmp_path):
    records = api.estimate_flow([clips], tmp_path / "flow", api.FlowOptions(method="dis", size="32x48"))
    assert [r["pairs"] for r in records] == [4, 4]
    meta = json.loads((tmp_path / "flow" / "a" / "meta.json").read_text())
    assert meta["command"] == "flow" and meta["vpcli"] == __version__
    assert np.load(tmp_path / "flow" / "b" / "flow_forward.npz")["flow"].shape[:2] == (4, 2)

    infos = api.data_info([clips], shard="2/2")
    assert [(r["frames"], r["width"], r["height"]) for r in infos] == [(5, 48, 32)]

    out = tmp_path / "conv"
    recs = api.convert([clips / "a.mkv"], out, api.ConvertOptions(format="mkv", lossless=True, stride=2))
    assert recs[0]["frames"] == 3
    frames = read_video(out / "a" / "video.mkv")[0]
    assert np.array_equal(frames, read_video(clips / "a.mkv")[0][::2])


def test_importing_the_api_stays_light():
    code = ("import sys, vpcli.api as api\n"
            "heavy = [m for m in ('torch', 'cv2', 'av') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "api.SegmentOptions\n"  # served on first access, from the engine module
            "assert 'vpcli.engine.segment_runner' in sys.modules\n"
            "print('OK')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "OK", res.stderr

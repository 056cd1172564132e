"""Flow IO: Middlebury .flo layout, npz stacks, folders, the Baker et al. colour wheel."""
from __future__ import annotations

import colorsys
import struct

import numpy as np
import pytest

from vpcli.errors import DataFormatError, OutputError
from vpcli.io import flow as F


def _flow(h=3, w=4, seed=0):
    return np.random.default_rng(seed).normal(0, 3, size=(2, h, w)).astype(np.float32)


def test_flo_byte_layout_by_hand(tmp_path):
    flow = np.zeros((2, 2, 3), np.float32)  # H=2, W=3
    flow[0] = [[1, 2, 3], [4, 5, 6]]         # u
    flow[1] = [[-1, -2, -3], [-4, -5, -6]]   # v
    data = F.write_flo(tmp_path / "a.flo", flow).read_bytes()
    assert data[:4] == b"PIEH"
    assert struct.unpack("<fii", data[:12]) == (202021.25, 3, 2)  # magic, width, height
    body = struct.unpack("<12f", data[12:])
    # Row-major pixels, u and v interleaved per pixel.
    assert body == (1, -1, 2, -2, 3, -3, 4, -4, 5, -5, 6, -6)
    assert len(data) == 12 + 2 * 3 * 2 * 4


def test_flo_roundtrip(tmp_path):
    flow = _flow(5, 7)
    flow[0, 1, 1] = np.nan
    back = F.read_flo(F.write_flo(tmp_path / "f.flo", flow))
    assert back.dtype == np.float32 and back.shape == (2, 5, 7)
    np.testing.assert_array_equal(back, flow)  # NaN positions compare equal too


def test_flo_bad_magic_truncated_absurd(tmp_path):
    bad = tmp_path / "bad.flo"
    bad.write_bytes(struct.pack("<fii", 1.0, 2, 2) + bytes(32))
    with pytest.raises(DataFormatError, match=r"bad\.flo has magic number 1\.0, expected 202021\.25"):
        F.read_flo(bad)
    short = tmp_path / "short.flo"
    short.write_bytes(F.flo_bytes(_flow())[:-5])
    with pytest.raises(DataFormatError, match=r"short\.flo is truncated"):
        F.read_flo(short)
    huge = tmp_path / "huge.flo"
    huge.write_bytes(struct.pack("<fii", 202021.25, 10**9, 3))
    with pytest.raises(DataFormatError, match=r"huge\.flo declares an impossible size"):
        F.read_flo(huge)
    tiny = tmp_path / "tiny.flo"
    tiny.write_bytes(b"PIE")
    with pytest.raises(DataFormatError, match="too short"):
        F.read_flo(tiny)


def test_flo_rejects_wrong_shape_and_overwrite(tmp_path):
    with pytest.raises(DataFormatError, match=r"\(2, H, W\)"):
        F.write_flo(tmp_path / "x.flo", np.zeros((4, 4, 2), np.float32))
    assert not (tmp_path / "x.flo").exists()
    F.write_flo(tmp_path / "y.flo", _flow())
    with pytest.raises(OutputError, match="already exists"):
        F.write_flo(tmp_path / "y.flo", _flow(), overwrite=False)


def test_flo_write_is_atomic(tmp_path, monkeypatch):
    from pathlib import Path

    def boom(self, data):
        self.open("wb").write(data[:10])  # half the file, then the disk fails
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_bytes", boom)
    with pytest.raises(OSError, match="disk full"):
        F.write_flo(tmp_path / "a.flo", _flow())
    assert list(tmp_path.iterdir()) == []


def test_npz_and_folder_roundtrip(tmp_path):
    flows = np.stack([_flow(seed=i) for i in range(11)])
    np.testing.assert_array_equal(F.read_flow_npz(F.write_flow_npz(tmp_path / "f.npz", flows)), flows)
    F.write_flo_folder(tmp_path / "flo", flows)
    names = sorted(p.name for p in (tmp_path / "flo").iterdir())
    assert names[0] == "00000.flo" and names[-1] == "00010.flo" and len(names) == 11
    np.testing.assert_array_equal(F.read_flo_folder(tmp_path / "flo"), flows)
    with pytest.raises(OutputError):
        F.write_flo_folder(tmp_path / "flo", flows, overwrite=False)
    with pytest.raises(DataFormatError, match=r"\(T, 2, H, W\)"):
        F.write_flow_npz(tmp_path / "g.npz", flows[0])


def test_color_wheel_layout():
    wheel = F.make_color_wheel()
    assert wheel.shape == (15 + 6 + 4 + 11 + 13 + 6, 3) and wheel.dtype == np.uint8
    assert tuple(wheel[0]) == (255, 0, 0)     # red
    assert tuple(wheel[15]) == (255, 255, 0)  # yellow starts YG
    assert tuple(wheel[21]) == (0, 255, 0)    # green starts GC
    assert tuple(wheel[25]) == (0, 255, 255)  # cyan starts CB
    assert tuple(wheel[36]) == (0, 0, 255)    # blue starts BM
    assert tuple(wheel[49]) == (255, 0, 255)  # magenta starts MR
    assert tuple(wheel[1]) == (255, 17, 0)    # floor(255 * 1 / 15)


def _one(u, v, **kw):
    return F.flow_to_color(np.array([u, v], np.float32).reshape(2, 1, 1), **kw)[0, 0]


def _hue(rgb):
    return colorsys.rgb_to_hsv(*(np.asarray(rgb) / 255.0))[0] * 360


def test_flow_to_color_directions():
    wheel = F.make_color_wheel().astype(float)
    assert tuple(_one(1.0, 0.0)) == (255, 0, 0)   # right: first wheel entry, full saturation
    assert tuple(_one(1.0, -0.0)) == (255, 0, 0)  # the sign of zero does not matter
    # Left: angle 0 -> fractional index 27 exactly; down (+v, y down): index 13.5; up: 40.5.
    assert tuple(_one(-1.0, 0.0)) == tuple(wheel[27].astype(int))
    # (float32 atan2 puts these a hair off .5, so allow one level of rounding)
    assert np.abs(_one(0.0, 1.0) - np.floor((wheel[13] + wheel[14]) / 2)).max() <= 1
    assert np.abs(_one(0.0, -1.0) - np.floor((wheel[40] + wheel[41]) / 2)).max() <= 1
    # Hue increases around the wheel: right (red) < down (orange) < left (cyan-blue) < up (violet).
    hues = [_hue(_one(*d)) for d in [(0.0, 1.0), (-1.0, 0.0), (0.0, -1.0)]]
    assert 0 < hues[0] < 60 < 150 < hues[1] < 220 < hues[2] < 300


def test_flow_to_color_magnitude_and_unknown():
    flow = np.zeros((2, 1, 4), np.float32)
    flow[0, 0] = [0, 1, 2, 4]  # rightward, growing
    rgb = F.flow_to_color(flow).astype(int)  # normalised by the max (4)
    assert tuple(rgb[0, 0]) == (255, 255, 255)  # zero flow is white
    assert tuple(rgb[0, 3]) == (255, 0, 0)      # max magnitude: fully saturated
    # Saturation grows linearly: 1 - r * (1 - 0) for green/blue of red.
    assert tuple(rgb[0, 1]) == (255, int(255 * 0.75), int(255 * 0.75))
    assert tuple(rgb[0, 2]) == (255, 127, 127)
    # A fixed max_flow: beyond it the colour is darkened (x0.75) to flag saturation.
    fixed = F.flow_to_color(flow, max_flow=2.0).astype(int)
    assert tuple(fixed[0, 2]) == (255, 0, 0)
    assert tuple(fixed[0, 3]) == (int(255 * 0.75), 0, 0)
    # Scaling flow and max_flow together changes nothing.
    assert np.array_equal(F.flow_to_color(flow * 3, max_flow=6.0), fixed)
    # NaN and Middlebury "unknown" (> 1e9) are black and do not affect normalisation.
    flow[0, 0, 0] = np.nan
    flow[1, 0, 1] = 1e10
    rgb2 = F.flow_to_color(flow).astype(int)
    assert tuple(rgb2[0, 0]) == (0, 0, 0) and tuple(rgb2[0, 1]) == (0, 0, 0)
    assert tuple(rgb2[0, 3]) == (255, 0, 0)
    assert F.flow_to_color(np.zeros((2, 3, 3), np.float32)).min() == 255  # all-zero flow: white, no NaN


def test_flow_video_shared_normalisation(tmp_path):
    from vpcli.io.video import read_video

    flows = np.zeros((2, 2, 16, 16), np.float32)
    flows[0, 0] = 1.0  # frame 0: slow rightward
    flows[1, 0] = 4.0  # frame 1: fast rightward -> the clip max
    F.write_flow_video(tmp_path / "f.mp4", flows, fps=5)
    video, _ = read_video(tmp_path / "f.mp4")
    assert video.shape == (2, 16, 16, 3)
    # Frame 0 is pale (1/4 of the clip max), frame 1 fully red: colours comparable across frames.
    assert np.abs(video[0, 8, 8].astype(int) - (255, 191, 191)).max() <= 16
    assert np.abs(video[1, 8, 8].astype(int) - (255, 0, 0)).max() <= 16
    with pytest.raises(OutputError):
        F.write_flow_video(tmp_path / "f.mp4", flows, overwrite=False)

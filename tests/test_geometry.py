"""Any clip size in, the same size out (vpcli/engine/geometry.py and `vpcli predict`)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from test_predict import run  # run(capsys, *args): vpcli in-process -> (exit code, stdout, stderr)
from vpcli.engine.geometry import plan
from vpcli.errors import InputError, UsageError
from vpcli.io.video import probe, read_video, write_video

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def ramp(h, w, t=2):
    """Smooth content: resizing it down and up again loses little."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([255 * x / (w - 1), 255 * y / (h - 1), 128 + 0 * x], -1)
    return np.repeat(img[None].round().astype(np.uint8), t, 0)


def test_fully_convolutional_pads_to_the_multiple_and_crops_back_exactly():
    g = plan((121, 203), multiple=32, trained=None)
    assert (g.mode, g.work, g.out) == ("pad", (128, 224), (121, 203))
    x = np.random.default_rng(0).integers(0, 255, (3, 121, 203, 3), dtype=np.uint8)
    m = g.frames_to_model(x)
    assert m.shape == (3, 128, 224, 3)
    assert (m[:, 121:, :203] == x[:, 120:121]).all() and (m[:, :121, 203:] == x[:, :, 202:203]).all()  # edges
    assert np.array_equal(g.frames_to_source(m), x)  # exact
    assert plan((128, 224), multiple=32, trained=None).identity


def test_letterbox_keeps_the_aspect_ratio_and_returns_the_clip_size():
    g = plan((480, 640), multiple=None, trained=(64, 128))
    assert (g.mode, g.scaled, g.offset, g.work, g.out) == ("letterbox", (64, 85), (0, 21), (64, 128), (480, 640))
    assert g.scaled[1] / g.scaled[0] == pytest.approx(640 / 480, rel=0.02)  # not stretched
    x = ramp(480, 640)
    m = g.frames_to_model(x)
    assert m.shape == (2, 64, 128, 3)
    assert (m[:, :, :21] == m[:, :, 21:22]).all() and (m[:, :, 106:] == m[:, :, 105:106]).all()  # edges repeated
    back = g.frames_to_source(m)
    assert back.shape == x.shape
    assert np.abs(back.astype(int) - x).mean() < 3.0  # a smooth ramp survives the round trip
    wide = plan((64, 64), multiple=None, trained=(64, 128))
    assert (wide.scaled, wide.offset) == ((64, 64), (0, 32))  # a square clip sits in the middle


def test_crop_writes_the_cropped_region_at_the_clips_scale():
    g = plan((480, 640), multiple=None, trained=(64, 128), fit="crop")
    assert (g.scaled, g.crop_at, g.content, g.out) == ((96, 128), (16, 0), (64, 128), (320, 640))
    x = ramp(480, 640)
    back = g.frames_to_source(g.frames_to_model(x))
    assert back.shape == (2, 320, 640, 3)
    assert np.abs(back.astype(int) - x[:, 80:400]).mean() < 3.0  # the centre 320 rows of the clip


def test_flow_and_labels_follow_the_frames():
    g = plan((120, 160), multiple=None, trained=(60, 120))  # letterbox: scaled 60x80, offset 20
    flow = np.zeros((1, 2, 120, 160), np.float32)
    flow[:, 0], flow[:, 1] = 4.0, -2.0
    m = g.flow_to_model(flow)
    assert m.shape == (1, 2, 60, 120)
    np.testing.assert_allclose(m[:, 0, :, 20:100], 2.0, atol=1e-5)  # half the pixels: half the vectors
    np.testing.assert_allclose(m[:, 1, :, 20:100], -1.0, atol=1e-5)
    np.testing.assert_allclose(g.flow_to_source(m), flow, atol=1e-4)
    labels = np.zeros((1, 120, 160), np.int64)
    labels[:, :, 80:] = 7
    lm = g.labels_to_model(labels)
    assert set(np.unique(lm)) == {0, 7}
    assert np.array_equal(g.labels_to_source(lm), labels)


def test_refusals_say_what_would_work():
    with pytest.raises(InputError, match="too small"):
        plan((3, 100), multiple=1, trained=None)
    with pytest.raises(UsageError, match="only takes 64x128"):
        plan((64, 64), multiple=None, trained=(64, 128), size=(32, 64), what="slamp-synthstreet")
    with pytest.raises(UsageError, match="--fit must be one of"):
        plan((64, 64), multiple=None, trained=(64, 128), fit="zoom")


def test_predict_any_size_in_same_size_out(capsys, tmp_path):
    """The promise command on clips of sizes the bundled RGB SLAMP was not trained at: its
    Cityscapes structure is fully convolutional, so a 96x160 clip and an odd 121x203 one run at
    their own resolution, padded to a multiple of 32, and come back at their own sizes; what was
    done is one line and a meta field."""
    rng = np.random.default_rng(0)
    write_video(tmp_path / "big.mp4", ramp(96, 160, t=6))
    write_video(tmp_path / "odd.mp4", rng.integers(0, 255, (6, 121, 203, 3), dtype=np.uint8))
    code, _, err = run(capsys, "predict", tmp_path / "big.mp4", tmp_path / "odd.mp4", "--method", "slamp",
                       "--horizon", 3, "--samples", 2, "--out", tmp_path / "p")
    assert code == 0, err
    assert "96x160 (HxW) padded to 96x160" not in err  # already a multiple of 32: nothing said
    assert "121x203 (HxW) padded to 128x224" in err and "needs a multiple of 32" in err
    for name, hw, mode in (("big", (96, 160), "native"), ("odd", (121, 203), "pad")):
        for f in ("sample_000.mp4", "sample_001.mp4", "context.mp4"):
            info = probe(tmp_path / "p" / name / f)
            assert (info.height, info.width) == hw, (name, f)
        meta = json.loads((tmp_path / "p" / name / "meta.json").read_text())
        assert meta["geometry"]["mode"] == mode and meta["size"] == list(hw)
    first = read_video(tmp_path / "p/big/sample_000.mp4")[0]
    assert first.std() > 1.0  # not a blank frame
    code, _, err = run(capsys, "predict", tmp_path / "big.mp4", "--method", "slamp", "--size", "64x100",
                       "--horizon", 2, "--out", tmp_path / "q")
    assert code == 0, err  # a working size: fitted, padded to 64x128, written at the clip's size
    meta = json.loads((tmp_path / "q" / "big" / "meta.json").read_text())
    assert meta["geometry"]["work"] == [64, 128] and meta["size"] == [96, 160]
    code, _, err = run(capsys, "predict", tmp_path / "odd.mp4", "--method", "copy-last", "--horizon", 2,
                       "--out", tmp_path / "c")
    assert code == 0 and "letterbox" not in err  # any size, nothing done
    assert (probe(tmp_path / "c/odd/sample_000.mp4").height, probe(tmp_path / "c/odd/sample_000.mp4").width) == (121, 203)

"""Side-by-side comparison videos: geometry, panel contents, borders, captions, MP4/GIF output."""
from __future__ import annotations

import numpy as np
import pytest

from vpcli.errors import DataFormatError, OutputError
from vpcli.io import composite as C

H, W = 24, 32


def _clip(n, seed):
    return np.random.default_rng(seed).integers(0, 256, size=(n, H, W, 3), dtype=np.uint8)


def _panel(frame, layout, i):
    y, x = layout.frame_origin(i)
    return frame[y:y + layout.frame_h, x:x + layout.frame_w]


def test_layout_size():
    lay = C.composite_layout(H, W, 3, scale=2, border=3)
    assert lay.panel_w == W * 2 + 2 * 3
    assert lay.width == 3 * (W * 2 + 6)
    assert lay.height == 2 * lay.bar_h + H * 2 + 6  # caption bar + bordered frame + footer
    assert lay.bar_h > 8
    frames = list(C.composite_frames(_clip(2, 0), [_clip(3, 1), _clip(3, 2)], scale=2, border=3))
    assert frames[0].shape == (lay.height, lay.width, 3) and frames[0].dtype == np.uint8


def test_panels_borders_and_holding():
    ctx, gt, pred = _clip(2, 0), _clip(4, 1), _clip(2, 2)  # pred shorter: holds its last frame
    out = list(C.composite_frames(ctx, [gt, pred], captions=["context", "truth", "model"], border=2))
    lay = C.composite_layout(H, W, 3, border=2)
    assert len(out) == 2 + 4  # context steps + longest column
    # Context phase: every panel shows the context frame with a green border.
    for t in range(2):
        for i in range(3):
            assert np.array_equal(_panel(out[t], lay, i), ctx[t])
        assert tuple(out[t][lay.bar_h, 0]) == C.CONTEXT_COLOR
    # Future phase: context frozen (grey), columns play, pred holds after its end (red border).
    for s in range(4):
        f = out[2 + s]
        assert np.array_equal(_panel(f, lay, 0), ctx[-1])
        assert np.array_equal(_panel(f, lay, 1), gt[s])
        assert np.array_equal(_panel(f, lay, 2), pred[min(s, 1)])
        assert tuple(f[lay.bar_h, 0]) == C.HELD_COLOR
        assert tuple(f[lay.bar_h + 1, 2 * lay.panel_w + 1]) == C.PREDICTION_COLOR


def test_scale_is_nearest_neighbour():
    ctx = _clip(1, 3)
    (f,) = C.composite_frames(ctx, [], scale=3)
    lay = C.composite_layout(H, W, 1, scale=3)
    assert np.array_equal(_panel(f, lay, 0), ctx[0].repeat(3, 0).repeat(3, 1))


def test_captions_and_frame_index_are_drawn():
    out = list(C.composite_frames(_clip(1, 0), [_clip(1, 1)], captions=["context", "a very long caption name"]))
    lay = C.composite_layout(H, W, 2)
    bg = np.array(C.BACKGROUND)
    for i in range(2):  # each caption bar has text pixels
        bar = out[0][:lay.bar_h, i * lay.panel_w:(i + 1) * lay.panel_w]
        assert (np.abs(bar.astype(int) - bg).sum(-1) > 100).sum() > 10
    footer0, footer1 = out[0][-lay.bar_h:], out[1][-lay.bar_h:]
    assert not np.array_equal(footer0, footer1)  # "t=0" vs "t=1"
    empty = np.zeros((1, H, W, 3), np.uint8)
    (plain,) = C.composite_frames(empty, [], captions=[""])
    assert (plain[:lay.bar_h] == bg).all()  # empty caption: just background


def test_errors():
    with pytest.raises(DataFormatError, match="the context is 32x24"):
        list(C.composite_frames(_clip(1, 0), [np.zeros((2, 10, 10, 3), np.uint8)], captions=["c", "small"]))
    with pytest.raises(DataFormatError, match="'x' has no frames"):
        list(C.composite_frames(_clip(1, 0), [[]], captions=["c", "x"]))
    with pytest.raises(DataFormatError, match="no frames"):
        list(C.composite_frames([], []))
    with pytest.raises(DataFormatError, match="uint8"):
        list(C.composite_frames(_clip(1, 0).astype(np.float32), []))


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_write_composite_decodes(tmp_path, suffix):
    from vpcli.io.video import read_video

    path = tmp_path / f"cmp{suffix}"
    ctx, gt = _clip(3, 0), _clip(5, 1)
    preds = {"slamp": _clip(5, 2), "lmvp": iter(_clip(4, 3))}  # generators stream too
    C.write_composite(path, ctx, gt, preds, fps=5)
    video, fps = read_video(path)
    lay = C.composite_layout(H, W, 4)
    assert video.shape[0] == 3 + 5
    # Encoders may pad to even sizes; the layout must fit inside what comes back.
    assert lay.height <= video.shape[1] <= lay.height + 1 and lay.width <= video.shape[2] <= lay.width + 1
    with pytest.raises(OutputError):
        C.write_composite(path, ctx, gt, preds, overwrite=False)


def test_write_composite_is_atomic(tmp_path):
    def failing():
        yield _clip(1, 0)[0]
        raise RuntimeError("model crashed")

    with pytest.raises(RuntimeError, match="model crashed"):
        C.write_composite(tmp_path / "cmp.mp4", _clip(2, 0), predictions={"m": failing()})
    assert list(tmp_path.iterdir()) == []

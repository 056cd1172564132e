"""Label IO: palette PNGs whose indices are the ids, npz stacks, folders, colourised videos."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vpcli.errors import DataFormatError, OutputError
from vpcli.io import labels as L


def _labels(t=None, h=6, w=8, seed=0):
    rng = np.random.default_rng(seed)
    shape = (h, w) if t is None else (t, h, w)
    lab = rng.integers(0, 19, size=shape).astype(np.int64)
    lab[..., 0, 0] = 255  # one ignored pixel per map
    return lab


def test_cityscapes_constants():
    assert len(L.CITYSCAPES_CLASSES) == 19
    assert L.CITYSCAPES_CLASSES[0] == "road" and L.CITYSCAPES_CLASSES[18] == "bicycle"
    assert L.CITYSCAPES_PALETTE.shape == (19, 3) and L.CITYSCAPES_PALETTE.dtype == np.uint8
    # Official colours at known train ids.
    assert tuple(L.CITYSCAPES_PALETTE[0]) == (128, 64, 128)   # road
    assert tuple(L.CITYSCAPES_PALETTE[10]) == (70, 130, 180)  # sky
    assert tuple(L.CITYSCAPES_PALETTE[11]) == (220, 20, 60)   # person
    assert tuple(L.CITYSCAPES_PALETTE[13]) == (0, 0, 142)     # car
    assert tuple(L.CITYSCAPES_PALETTE[18]) == (119, 11, 32)   # bicycle
    assert L.IGNORE_INDEX == 255


def test_colorize_palette_and_ignore():
    lab = np.array([[0, 13], [255, 18]])
    rgb = L.colorize(lab)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert tuple(rgb[0, 0]) == (128, 64, 128)
    assert tuple(rgb[0, 1]) == (0, 0, 142)
    assert tuple(rgb[1, 0]) == (0, 0, 0)  # ignore -> black
    assert tuple(rgb[1, 1]) == (119, 11, 32)
    # A custom palette, any leading shape.
    pal = np.array([[1, 2, 3], [4, 5, 6]], np.uint8)
    assert L.colorize(np.ones((2, 1, 1), np.int64), pal).tolist() == [[[[4, 5, 6]]], [[[4, 5, 6]]]]


@pytest.mark.parametrize("bad", [19, 254, -1, 1000])
def test_colorize_rejects_ids_beyond_palette(bad):
    with pytest.raises(DataFormatError, match=f"outside 0..18.*{bad}"):
        L.colorize(np.array([[0, bad]]))


def test_colorize_rejects_float_scores():
    with pytest.raises(DataFormatError, match="integer class ids"):
        L.colorize(np.zeros((2, 2), np.float32))


def test_overlay_matches_hand_computation():
    frames = np.array([[[100, 100, 100], [0, 50, 255]]], np.uint8)  # (1, 2, 3)
    lab = np.array([[11, 255]])
    out = L.overlay(frames, lab, alpha=0.25)
    # person (220, 20, 60): 0.75 * 100 + 0.25 * c, rounded to nearest.
    assert tuple(out[0, 0]) == (130, 80, 90)
    assert tuple(out[0, 1]) == (0, 50, 255)  # ignore keeps the frame
    assert np.array_equal(L.overlay(frames, lab, alpha=0.0), frames)
    assert tuple(L.overlay(frames, lab, alpha=1.0)[0, 0]) == (220, 20, 60)
    with pytest.raises(DataFormatError, match="differ in size"):
        L.overlay(frames, np.zeros((2, 2), np.int64))


def test_label_png_roundtrip_and_indices(tmp_path):
    lab = _labels()
    path = L.write_label_png(tmp_path / "a.png", lab)
    back = L.read_label_png(path)
    assert back.dtype == np.int64 and np.array_equal(back, lab)
    with Image.open(path) as img:  # any tool reading indices sees the ids, a viewer sees colours
        assert img.mode == "P"
        assert np.array_equal(np.array(img), lab.astype(np.uint8))
        assert np.array_equal(np.array(img.convert("RGB")), L.colorize(lab))
        assert np.array(img)[0, 0] == 255


def test_grayscale_id_png_accepted(tmp_path):
    lab = _labels()
    Image.fromarray(lab.astype(np.uint8), mode="L").save(tmp_path / "gray.png")
    assert np.array_equal(L.read_label_png(tmp_path / "gray.png"), lab)


def test_colour_png_rejected(tmp_path):
    Image.fromarray(L.colorize(_labels())).save(tmp_path / "colour.png")
    with pytest.raises(DataFormatError, match="RGB image, not a class-id image") as e:
        L.read_label_png(tmp_path / "colour.png")
    assert "colourised" in str(e.value) and "colour.png" in str(e.value)


def test_label_png_rejects_bad_ids_and_overwrite(tmp_path):
    with pytest.raises(DataFormatError):
        L.write_label_png(tmp_path / "x.png", np.array([[300]]))
    assert not (tmp_path / "x.png").exists()
    L.write_label_png(tmp_path / "y.png", _labels())
    with pytest.raises(OutputError, match="already exists"):
        L.write_label_png(tmp_path / "y.png", _labels(), overwrite=False)


def test_npz_roundtrip(tmp_path):
    lab = _labels(t=3)
    L.write_labels_npz(tmp_path / "l.npz", lab, classes=L.CITYSCAPES_CLASSES)
    back, classes = L.read_labels_npz(tmp_path / "l.npz")
    assert back.dtype == np.int64 and np.array_equal(back, lab)
    assert classes == L.CITYSCAPES_CLASSES
    # Without classes; ids beyond uint8 survive too (any class count works).
    big = np.array([[[0, 300], [1000, 255]]], np.int64)
    L.write_labels_npz(tmp_path / "big", big)  # no suffix: numpy must not rename it
    back, classes = L.read_labels_npz(tmp_path / "big")
    assert np.array_equal(back, big) and classes is None
    with pytest.raises(DataFormatError, match=r"\(T, H, W\)"):
        L.write_labels_npz(tmp_path / "bad.npz", lab[0])


def test_npz_missing_key(tmp_path):
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(DataFormatError, match="no 'labels' array"):
        L.read_labels_npz(tmp_path / "other.npz")


def test_folder_roundtrip_natural_order(tmp_path):
    lab = _labels(t=12)
    L.write_label_folder(tmp_path / "seq", lab)
    assert sorted(p.name for p in (tmp_path / "seq").iterdir())[:2] == ["00000.png", "00001.png"]
    assert np.array_equal(L.read_label_folder(tmp_path / "seq"), lab)
    # Unpadded names are read in natural order (2 before 10).
    unpadded = tmp_path / "unpadded"
    unpadded.mkdir()
    for i in range(12):
        L.write_label_png(unpadded / f"f{i}.png", lab[i])
    assert np.array_equal(L.read_label_folder(unpadded), lab)


def test_folder_refuses_overwrite_and_is_atomic(tmp_path, monkeypatch):
    L.write_label_folder(tmp_path / "seq", _labels(t=2))
    with pytest.raises(OutputError):
        L.write_label_folder(tmp_path / "seq", _labels(t=2), overwrite=False)
    # A failure mid-write leaves nothing at the final path.
    calls = {"n": 0}
    real_save = Image.Image.save

    def flaky_save(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return real_save(self, *a, **k)

    monkeypatch.setattr(Image.Image, "save", flaky_save)
    with pytest.raises(OSError, match="disk full"):
        L.write_label_folder(tmp_path / "new", _labels(t=3))
    assert not (tmp_path / "new").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["seq"]  # no temporaries left either


def test_label_video_colourised_and_overlay(tmp_path):
    from vpcli.io.video import read_video

    lab = np.zeros((3, 16, 16), np.int64)
    lab[:, :, 8:] = 10  # left road, right sky
    L.write_label_video(tmp_path / "l.gif", lab, fps=5)
    video, _ = read_video(tmp_path / "l.gif")
    assert video.shape == (3, 16, 16, 3)
    assert np.abs(video[0, 8, 2].astype(int) - (128, 64, 128)).max() <= 12
    assert np.abs(video[0, 8, 13].astype(int) - (70, 130, 180)).max() <= 12

    frames = np.full((3, 16, 16, 3), 200, np.uint8)
    L.write_label_video(tmp_path / "o.mp4", lab, frames=frames, alpha=0.5)
    video, _ = read_video(tmp_path / "o.mp4")
    assert video.shape == (3, 16, 16, 3)
    expected = L.overlay(frames[0], lab[0], 0.5).astype(int)
    assert np.abs(video[0, 8, 2].astype(int) - expected[8, 2]).max() <= 16
    with pytest.raises(DataFormatError):
        L.write_label_video(tmp_path / "bad.mp4", lab, frames=frames[:2])
    assert not (tmp_path / "bad.mp4").exists()

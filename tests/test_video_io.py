"""vpcli.io.video: probing, streaming reads, writers, atomic outputs and error messages."""
from __future__ import annotations

import dataclasses
import gc
import os
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from PIL import Image

import vpcli.io.video as vio
from vpcli.errors import DataFormatError, InputError, OutputError, UsageError, VideoError, VpcliError
from vpcli.io.video import (IMAGE_EXTS, VIDEO_EXTS, VideoInfo, VideoWriter, is_frame_folder, is_video_file,
                            iter_frames, probe, read_video, write_video)

# ---------------------------------------------------------------------------------------------
# helpers


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def bare_decode(path) -> np.ndarray:
    """Reference decode with plain PyAV, independent of vpcli."""
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def noise(t=5, h=37, w=51, seed=0) -> np.ndarray:
    """Random frames: any lossy step shows up as a difference. Odd size on purpose."""
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def few_colour_frames(t=6, h=24, w=32) -> np.ndarray:
    """A moving red box over a flat background whose colour changes per frame (< 256 colours)."""
    frames = np.empty((t, h, w, 3), np.uint8)
    for i in range(t):
        frames[i] = (10 * i, 200 - 10 * i, 50)
        frames[i, i : i + 6, 2 * i : 2 * i + 8] = (255, 0, 0)
    return frames


def leftovers(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


@pytest.fixture(scope="module")
def small_ref(small_clip) -> np.ndarray:
    """All 120 frames of carphone decoded by plain PyAV."""
    return bare_decode(small_clip)


# ---------------------------------------------------------------------------------------------
# paths and probe


def test_extensions_and_path_predicates(tmp_path, real_clip):
    assert ".mp4" in VIDEO_EXTS and ".webm" in VIDEO_EXTS and ".png" in IMAGE_EXTS
    assert is_video_file(real_clip)
    assert not is_video_file(tmp_path / "missing.mp4")
    (tmp_path / "folder.mp4").mkdir()
    assert not is_video_file(tmp_path / "folder.mp4")

    folder = tmp_path / "frames"
    folder.mkdir()
    assert not is_frame_folder(folder)
    (folder / ".hidden.png").write_bytes(b"")  # hidden files (our temporaries) do not count
    (folder / "notes.txt").write_text("x")
    assert not is_frame_folder(folder)
    cv2.imwrite(str(folder / "a.PNG"), np.zeros((4, 4, 3), np.uint8))
    assert is_frame_folder(folder)
    assert not is_frame_folder(real_clip)


def test_probe_real_clips(real_clip, small_clip):
    info = probe(real_clip)
    assert info == VideoInfo(real_clip, "video", 640, 272, 250, 25.0, "h264")
    assert info.duration == pytest.approx(10.0)
    small = probe(small_clip)
    assert (small.width, small.height, small.num_frames, small.codec) == (176, 144, 120, "h264")
    assert small.fps == pytest.approx(30000 / 1001)


# ---------------------------------------------------------------------------------------------
# reading


def test_read_real_clip_matches_plain_pyav(real_clip):
    frames, fps = read_video(real_clip)
    assert fps == 25.0
    assert frames.shape == (250, 272, 640, 3) and frames.dtype == np.uint8
    assert len(frames) == probe(real_clip).num_frames
    np.testing.assert_array_equal(frames, bare_decode(real_clip))


def test_iter_frames_matches_plain_pyav(small_clip, small_ref):
    frames = list(iter_frames(small_clip))
    assert len(frames) == 120
    assert all(f.shape == (144, 176, 3) and f.dtype == np.uint8 and f.flags.c_contiguous for f in frames)
    # Holding on to every yielded frame must not alias buffers between frames.
    np.testing.assert_array_equal(np.stack(frames), small_ref)


@pytest.mark.parametrize("start,end,stride", [(0, None, 1), (5, 17, 1), (3, 40, 4), (100, None, 7),
                                              (0, 1, 1), (119, None, 1), (10, 12, 5)])
def test_range_selects_the_right_frames(small_clip, small_ref, start, end, stride):
    expected = small_ref[start:end:stride]
    frames, _ = read_video(small_clip, start=start, end=end, stride=stride)
    np.testing.assert_array_equal(frames, expected)
    streamed = list(iter_frames(small_clip, start=start, end=end, stride=stride))
    np.testing.assert_array_equal(np.stack(streamed), expected)


class _CountingContainer:
    """Wraps a PyAV input container and counts the frames its decoder hands out."""

    def __init__(self, container, counter):
        self._c, self._counter = container, counter

    def __getattr__(self, name):
        return getattr(self._c, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._c.close()

    def decode(self, *args, **kwargs):
        for frame in self._c.decode(*args, **kwargs):
            self._counter.append(1)
            yield frame


def test_decoding_stops_at_end(small_clip, monkeypatch):
    pulled: list[int] = []
    real_open = av.open
    monkeypatch.setattr(vio.av, "open", lambda *a, **k: _CountingContainer(real_open(*a, **k), pulled))
    assert len(list(iter_frames(small_clip, start=2, end=10, stride=3))) == 3  # frames 2, 5, 8
    assert len(pulled) == 9  # frames 0..8; frame 9 is never decoded
    pulled.clear()
    assert len(read_video(small_clip, end=4)[0]) == 4
    assert len(pulled) == 4


def test_read_video_copes_with_a_wrong_frame_count(small_clip, small_ref, monkeypatch):
    # A header that undercounts (damaged files) must not lose frames.
    real_probe = vio.probe
    monkeypatch.setattr(vio, "probe", lambda p: dataclasses.replace(real_probe(p), num_frames=50))
    frames, _ = read_video(small_clip, start=30, stride=2)
    np.testing.assert_array_equal(frames, small_ref[30::2])


def test_resize_matches_cv2(small_clip, small_ref):
    shrunk, _ = read_video(small_clip, end=3, size=(100, 130))  # non-integer factor: AREA != LINEAR
    for got, src in zip(shrunk, small_ref[:3]):
        np.testing.assert_array_equal(got, cv2.resize(src, (130, 100), interpolation=cv2.INTER_AREA))
    grown = list(iter_frames(small_clip, start=7, end=9, size=(200, 300)))
    for got, src in zip(grown, small_ref[7:9]):
        np.testing.assert_array_equal(got, cv2.resize(src, (300, 200), interpolation=cv2.INTER_LINEAR))
    same, _ = read_video(small_clip, end=2, size=(144, 176))
    np.testing.assert_array_equal(same, small_ref[:2])


def test_frame_folder_natural_order_and_colour_modes(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    # Each frame's value is its number, so the read order is visible in the pixels.
    for n in (1, 2, 10, 11):
        cv2.imwrite(str(folder / f"frame{n}.png"), np.full((6, 8, 3), n, np.uint8))
    Image.fromarray(np.full((6, 8), 3, np.uint8), "L").save(folder / "frame3.png")  # greyscale
    rgba = np.zeros((6, 8, 4), np.uint8)
    rgba[..., :3] = (4, 5, 6)
    rgba[..., 3] = 17
    Image.fromarray(rgba, "RGBA").save(folder / "frame4.png")
    Image.fromarray(np.full((6, 8), 20 * 257, np.uint16)).save(folder / "frame20.png")  # 16-bit grey
    (folder / ".frame0.png").write_bytes(b"not an image")  # hidden: ignored
    (folder / "readme.txt").write_text("ignored")

    info = probe(folder)
    assert (info.kind, info.width, info.height, info.num_frames, info.codec) == ("frames", 8, 6, 7, "png")
    frames, fps = read_video(folder)
    assert fps == vio.FOLDER_FPS
    assert frames.shape == (7, 6, 8, 3)
    assert [int(f[0, 0, 0]) for f in frames] == [1, 2, 3, 4, 10, 11, 20]
    np.testing.assert_array_equal(frames[2], 3)  # grey expanded to three equal channels
    np.testing.assert_array_equal(frames[3], np.broadcast_to([4, 5, 6], (6, 8, 3)))  # alpha dropped
    np.testing.assert_array_equal(frames[6], 20)  # 16 bit scaled to 8 bit
    np.testing.assert_array_equal(np.stack(list(iter_frames(folder, start=1, end=6, stride=2))), frames[1:6:2])


def test_jpeg_folder_and_mixed_sizes(tmp_path):
    folder = tmp_path / "jpgs"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.jpg"), np.full((16, 16, 3), 100, np.uint8))
    frames, _ = read_video(folder)
    assert frames.shape == (3, 16, 16, 3) and abs(int(frames[0, 8, 8, 0]) - 100) <= 2
    cv2.imwrite(str(folder / "3.jpg"), np.full((8, 16, 3), 100, np.uint8))
    with pytest.raises(VideoError, match=r"3\.jpg is 16x8 but earlier frames are 16x16"):
        list(iter_frames(folder))


def test_gif_written_by_pillow(tmp_path):
    frames = few_colour_frames()
    images = [Image.fromarray(f) for f in frames]
    path = tmp_path / "pillow.gif"
    images[0].save(path, save_all=True, append_images=images[1:], duration=50, loop=0, optimize=True)
    info = probe(path)
    assert (info.kind, info.num_frames, info.fps, info.codec) == ("gif", 6, 20.0, "gif")
    got, fps = read_video(path)
    np.testing.assert_array_equal(got, frames)


# ---------------------------------------------------------------------------------------------
# writing


@pytest.mark.parametrize("suffix", [".mkv", ".mp4", ".mov"])
def test_lossless_roundtrip_is_bit_exact(tmp_path, suffix):
    frames = noise()  # odd size, random: nothing survives a lossy step unchanged
    path = write_video(tmp_path / f"clip{suffix}", frames, fps=12.0, lossless=True)
    got, fps = read_video(path)
    assert fps == 12.0
    np.testing.assert_array_equal(got, frames)
    streamed = list(iter_frames(path))  # decoder rows are padded at this width: still dense arrays
    assert all(f.flags.c_contiguous for f in streamed)
    np.testing.assert_array_equal(np.stack(streamed), frames)
    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        declared = c.streams.video[0].frames
    if suffix == ".mkv":
        assert declared == 0  # Matroska stores no count: probe must count packets
    assert probe(path).num_frames == 5


def test_lossy_roundtrip_psnr(tmp_path, small_clip, small_ref):
    src = small_ref[:20]
    path = write_video(tmp_path / "lossy.mp4", iter_frames(small_clip, end=20), fps=probe(small_clip).fps)
    got, fps = read_video(path)
    assert fps == pytest.approx(30000 / 1001)
    assert got.shape == src.shape
    assert psnr(got, src) > 33.0
    with av.open(str(path)) as c:
        ctx = c.streams.video[0].codec_context
        assert (ctx.name, ctx.pix_fmt) == ("h264", "yuv420p")


def test_odd_size_comes_back_at_its_exact_size(tmp_path, small_ref):
    """yuv420p cannot hold an odd size: it is written as yuv444p, not padded (issue 15: a 203x121
    clip came back 204x122)."""
    src = small_ref[:6, :31, :45]
    path = write_video(tmp_path / "odd.mp4", src)
    got, _ = read_video(path)
    assert got.shape == (6, 31, 45, 3) and probe(path).height == 31 and probe(path).width == 45
    assert psnr(got, src) > 33.0
    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv444p"
    even = write_video(tmp_path / "even.mp4", small_ref[:6, :32, :46])
    with av.open(str(even)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"  # the common case stays compatible


@pytest.mark.parametrize("name", ["c.mp4", "c.m4v", "c.mkv", "c.mov", "c.avi", "c.gif", "c_frames"])
def test_probe_count_equals_decoded_count(tmp_path, name):
    frames = few_colour_frames(t=9)
    path = write_video(tmp_path / name, frames, fps=10)
    info = probe(path)
    got, fps = read_video(path)
    assert info.num_frames == len(got) == len(list(iter_frames(path))) == 9
    assert (info.width, info.height) == (32, 24)
    assert fps == 10.0 if name.endswith((".mp4", ".mov", ".mkv", ".gif", ".avi", ".m4v")) else vio.FOLDER_FPS
    assert leftovers(tmp_path) == [name]  # no temporaries left beside the output


@pytest.mark.parametrize("codec,name", [("libvpx-vp9", "vp9.webm"), ("mpeg2video", "m2.mpg"),
                                        ("libx264", "ts.ts"), ("mpeg4", "m4.avi")])
def test_probe_counts_foreign_containers(tmp_path, codec, name):
    # Written with plain PyAV (not VideoWriter): containers with and without a stored count.
    frames = noise(t=12, h=32, w=48, seed=2)
    path = tmp_path / name
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=25)
        s.width, s.height, s.pix_fmt = 48, 32, "yuv420p"
        for f in frames:
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode(None))
    info = probe(path)
    assert info.num_frames == len(read_video(path)[0]) == 12
    assert (info.width, info.height, info.fps) == (48, 32, 25.0)


def test_gif_roundtrip_and_looping(tmp_path, small_ref):
    frames = few_colour_frames()
    path = write_video(tmp_path / "anim.gif", frames, fps=25)
    got, fps = read_video(path)
    np.testing.assert_array_equal(got, frames)  # <= 256 colours per frame: exact
    assert fps == 25.0
    with Image.open(path) as im:  # an independent decoder agrees, and the GIF loops forever
        assert im.info.get("loop") == 0 and im.n_frames == 6
        im.seek(3)
        np.testing.assert_array_equal(np.asarray(im.convert("RGB")), frames[3])
    rng = np.random.default_rng(3)  # exactly 256 distinct colours per frame, new ones each frame
    codes = np.stack([rng.choice(1 << 24, 256, replace=False) for _ in range(3)])  # (T, 256)
    busy = np.stack([(c[:, None] >> [16, 8, 0]) & 255 for c in codes]).astype(np.uint8)  # (T, 256, 3)
    busy = busy[:, rng.permutation(np.arange(32 * 32) % 256)].reshape(3, 32, 32, 3)
    np.testing.assert_array_equal(read_video(write_video(tmp_path / "busy.gif", busy))[0], busy)
    photo = small_ref[:5]  # > 256 colours: quantised per frame
    got, _ = read_video(write_video(tmp_path / "photo.gif", photo))
    assert psnr(got, photo) > 28.0


def test_frame_folder_writer(tmp_path):
    frames = noise(t=3)
    out = tmp_path / "out"
    assert write_video(out, frames) == out
    assert leftovers(out) == ["00000.png", "00001.png", "00002.png"]
    np.testing.assert_array_equal(read_video(out)[0], frames)
    assert leftovers(tmp_path) == ["out"]
    assert (out.stat().st_mode & 0o777) != 0o700  # not the private mode of the temporary
    write_video(out, frames[:1], overwrite=True)  # replaces the folder, not merged into it
    assert leftovers(out) == ["00000.png"]
    assert leftovers(tmp_path) == ["out"]


def test_writer_expands_greyscale(tmp_path):
    grey = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10)
    with VideoWriter(tmp_path / "g", fps=5) as w:
        w.write(grey)
        w.write(grey[:, :, None])
    got, _ = read_video(tmp_path / "g")
    np.testing.assert_array_equal(got, np.broadcast_to(grey[None, :, :, None], (2, 12, 10, 3)))


def test_writer_output_mode_and_fraction_fps(tmp_path):
    path = write_video(tmp_path / "ntsc.mp4", few_colour_frames(t=3), fps=30000 / 1001)
    assert probe(path).fps == pytest.approx(30000 / 1001, abs=1e-9)
    assert (path.stat().st_mode & 0o077) != 0  # readable like any other file, not 0600
    path = write_video(tmp_path / "exact.mkv", few_colour_frames(t=3), fps=Fraction(24000, 1001))
    assert probe(path).fps == pytest.approx(24000 / 1001, abs=1e-9)


# ---------------------------------------------------------------------------------------------
# errors: each is a VpcliError with a one-line message and a hint; PyAV errors never escape


def _raises(exc_type, fn, *args, match=None, **kwargs):
    with pytest.raises(VpcliError) as info:
        fn(*args, **kwargs)
    err = info.value
    assert type(err) is exc_type, f"{type(err).__name__}: {err}"
    assert not isinstance(err, av.FFmpegError)
    assert err.hint and "\n" not in str(err)
    if match:
        assert match in err.message, err.message
    return err


def test_missing_path(tmp_path):
    for fn in (probe, read_video, iter_frames):
        _raises(InputError, fn, tmp_path / "nope.mp4", match="does not exist")


def test_text_file_named_mp4(tmp_path):
    path = tmp_path / "fake.mp4"
    path.write_text("this is not a video\n")
    for fn in (probe, read_video, iter_frames):
        _raises(VideoError, fn, path, match="cannot decode")


def test_truncated_real_mp4_is_a_clear_error(tmp_path, real_clip):
    # bikes.mp4 keeps its index (moov) at the end: the first half cannot be opened at all.
    data = real_clip.read_bytes()
    path = tmp_path / "half.mp4"
    path.write_bytes(data[: len(data) // 2])
    for fn in (probe, read_video, iter_frames):
        _raises(VideoError, fn, path, match="cannot decode")


def _faststart_clip(path: Path, n=30) -> bytes:
    """An H.264 MP4 with its index first (movflags=faststart), so a truncated copy still opens."""
    with av.open(str(path), "w", options={"movflags": "+faststart"}) as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for f in noise(t=n, h=48, w=64, seed=1):
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode(None))
    return path.read_bytes()


def test_truncated_faststart_mp4_decodes_what_is_there(tmp_path):
    data = _faststart_clip(tmp_path / "full.mp4")
    half = tmp_path / "half.mp4"
    half.write_bytes(data[: len(data) // 2])
    assert probe(half).num_frames == 30  # what the header declares
    _raises(VideoError, read_video, half, match="of the 30 frames the container declares")  # never silently
    with pytest.warns(vio.TruncatedVideoWarning, match="of the 30 frames the container declares"):
        frames, _ = read_video(half, allow_truncated=True)
    assert 0 < len(frames) < 30
    err = _raises(VideoError, read_video, half, end=30, match=f"has {len(frames)} frames")
    assert "[0:30]" in err.message and "declares 30" in err.message
    # iter_frames yields the frames that exist, then says what was missing.
    it = iter_frames(half, end=30)
    got = [next(it) for _ in range(len(frames))]
    np.testing.assert_array_equal(np.stack(got), frames)
    _raises(VideoError, next, it, match="[0:30]")


def test_zero_frame_videos(tmp_path):
    # PyAV writes no video track when no frame was encoded.
    empty = tmp_path / "empty.mp4"
    with av.open(str(empty), "w") as c:
        s = c.add_stream("mpeg4", rate=25)
        s.width, s.height = 64, 48
        c.start_encoding()
    for fn in (probe, read_video, iter_frames):
        _raises(VideoError, fn, empty, match="no video stream")
    # A header that declares frames, with no frame data after it.
    data = _faststart_clip(tmp_path / "full.mp4")
    headless = tmp_path / "headless.mp4"
    headless.write_bytes(data[: data.find(b"mdat") + 4])
    _raises(VideoError, read_video, headless, match="has no frames")
    _raises(VideoError, list, iter_frames(headless), match="has no frames")


def test_range_beyond_the_clip(small_clip, tmp_path):
    err = _raises(VideoError, read_video, small_clip, start=100, end=130)
    assert "has 120 frames" in err.message and "[100:130]" in err.message
    _raises(VideoError, iter_frames, small_clip, end=121, match="has 120 frames")
    _raises(VideoError, read_video, small_clip, start=120, match="start=120")
    # Matroska records no count: the shortfall is found when the stream ends.
    mkv = write_video(tmp_path / "c.mkv", few_colour_frames(t=4))
    _raises(VideoError, read_video, mkv, end=6, match="has 4 frames")
    it = iter_frames(mkv, end=6, stride=2)
    assert len([next(it), next(it)]) == 2
    _raises(VideoError, next, it, match="[0:6:2]")


def test_bad_arguments(small_clip):
    _raises(UsageError, read_video, small_clip, stride=0, match="stride")
    _raises(UsageError, iter_frames, small_clip, start=-1, match="start")
    _raises(UsageError, iter_frames, small_clip, start=5, end=5, match="end")
    _raises(UsageError, read_video, small_clip, size=(0, 10), match="size")
    _raises(UsageError, read_video, small_clip, size=(10,), match="size")


def test_empty_frame_folder(tmp_path):
    (tmp_path / ".tmp.png").write_bytes(b"")
    for fn in (probe, read_video, iter_frames):
        _raises(VideoError, fn, tmp_path, match="holds no image files")


def test_undecodable_image_in_folder(tmp_path):
    cv2.imwrite(str(tmp_path / "0.png"), np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "1.png").write_bytes(b"garbage")
    _raises(VideoError, read_video, tmp_path, match="cannot decode image")


@pytest.mark.parametrize("name", ["out.mp4", "out.gif", "out"])
def test_unwritable_output(tmp_path, name):
    blocker = tmp_path / "somefile.txt"  # root ignores chmod, but nothing can be created under a file
    blocker.write_text("x")
    _raises(OutputError, write_video, blocker / name, few_colour_frames(t=2))
    _raises(OutputError, VideoWriter, Path("/proc") / name)


@pytest.mark.parametrize("name", ["boom.mp4", "boom.gif", "boom.mkv", "boom_frames"])
def test_exception_mid_write_leaves_nothing(tmp_path, name):
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(tmp_path / name) as w:
            for f in few_colour_frames(t=4):
                w.write(f)
            raise RuntimeError("boom")
    assert leftovers(tmp_path) == []


def test_bad_frames_abort_the_writer(tmp_path):
    frames = few_colour_frames(t=3)
    with pytest.raises(DataFormatError, match=r"frame 2 is 24x16 \(HxW\) but frame 0 was 24x32"):
        write_video(tmp_path / "mix.mp4", [frames[0], frames[1], frames[2][:, :16]])
    w = VideoWriter(tmp_path / "nowith.mp4")  # not in a with block: a bad frame still aborts
    w.write(frames[0])
    _raises(DataFormatError, w.write, frames[0].astype(np.float32) / 255, match="dtype float32")
    _raises(OutputError, w.write, frames[0], match="closed")
    _raises(DataFormatError, write_video, tmp_path / "rgba.mp4", [np.zeros((4, 4, 4), np.uint8)], match="(4, 4, 4)")
    _raises(DataFormatError, write_video, tmp_path / "one.mp4", frames[0], match="(T, H, W, 3)")
    assert leftovers(tmp_path) == []


def test_existing_output_and_overwrite(tmp_path):
    path = tmp_path / "keep.mp4"
    path.write_bytes(b"precious")
    _raises(OutputError, write_video, path, few_colour_frames(t=2), overwrite=False, match="already exists")
    assert path.read_bytes() == b"precious"
    folder = tmp_path / "keepdir"
    folder.mkdir()
    _raises(OutputError, VideoWriter, folder, overwrite=False, match="already exists")
    write_video(path, few_colour_frames(t=2))  # overwrite=True is the default
    assert probe(path).num_frames == 2


def test_unsupported_suffix_and_options(tmp_path):
    _raises(UsageError, VideoWriter, tmp_path / "x.webm", match=".webm")
    _raises(UsageError, VideoWriter, tmp_path / "x.gif", lossless=True, match="lossless")
    _raises(UsageError, VideoWriter, tmp_path / "x.mp4", fps=0, match="fps")
    _raises(UsageError, VideoWriter, tmp_path / "x.mp4", crf=60, match="crf")
    assert leftovers(tmp_path) == []


def test_closing_without_frames_or_dropping_the_writer(tmp_path):
    _raises(OutputError, write_video, tmp_path / "none.mp4", [], match="no frames")
    w = VideoWriter(tmp_path / "dropped.mp4")
    w.write(few_colour_frames(t=1)[0])
    del w
    gc.collect()
    assert leftovers(tmp_path) == []

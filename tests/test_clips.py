"""ClipDataset: window indexing, exact values, splits, DataLoader workers, companions, bad input."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from vpcli.data.clips import ClipDataset, make_dataset
from vpcli.data.layouts import ClipRecord
from vpcli.errors import DataFormatError, InputError, UsageError, VideoError
from vpcli.io.video import read_video, write_video

RNG = np.random.default_rng(0)
FRAMES = RNG.integers(0, 256, (23, 32, 48, 3), dtype=np.uint8)  # (T, H, W, 3)


def frame_folder(folder, frames):
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{i:05d}.png")
    return folder


def label_folder(folder, labels):
    folder.mkdir(parents=True, exist_ok=True)
    for i, lab in enumerate(labels):
        Image.fromarray(lab.astype(np.uint8)).save(folder / f"{i:05d}.png")
    return folder


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """a.mp4 (23 frames, lossless), b/ (12 PNG frames), c.mp4 (3 frames: too short)."""
    root = tmp_path_factory.mktemp("clips")
    write_video(root / "a.mp4", FRAMES, 10, lossless=True)
    frame_folder(root / "b", FRAMES[:12])
    write_video(root / "c.mp4", FRAMES[:3], 10, lossless=True)
    return root


def test_window_counts(clips):
    ds = ClipDataset(clips, context=2, future=3)  # 5 frames, non-overlapping windows
    assert [s.windows for s in ds.sources] == [(23 - 5) // 5 + 1, (12 - 5) // 5 + 1]
    assert len(ds) == 4 + 2
    summary = ds.summary()
    assert summary["too_short"] == [{"path": str(clips / "c.mp4"), "frames": 3, "needed": 5}]
    stepped = ClipDataset(clips, context=2, future=3, frame_step=2)  # span 9
    assert len(stepped) == ((23 - 9) // 9 + 1) + ((12 - 9) // 9 + 1)
    every = ClipDataset(clips, context=2, future=3, window_stride=1)
    assert len(every) == (23 - 5 + 1) + (12 - 5 + 1)
    assert every.locate(19) == (every.sources[1], 0)


def test_window_values_equal_direct_decoding(clips):
    ds = ClipDataset(clips, context=3, future=2, frame_step=2, window_stride=3)
    for index in (0, 2, len(ds) - 1):
        item = ds[index]
        path, start = item["meta"]["path"], item["meta"]["start"]
        direct, _ = read_video(path, start=start, end=start + ds.span, stride=2)
        expected = torch.from_numpy(direct).permute(0, 3, 1, 2).float() / 255  # (T, H, W, 3) -> (T, 3, H, W)
        assert item["rgb"].dtype == torch.float32 and item["rgb"].shape == (5, 3, 32, 48)
        torch.testing.assert_close(item["rgb"], expected, rtol=0, atol=0)
    # The mp4 is lossless, so the pixels are the ones written.
    torch.testing.assert_close(ds[1]["rgb"][0], torch.from_numpy(FRAMES[3]).permute(2, 0, 1).float() / 255)


def test_resize_crop_grayscale(clips):
    ds = ClipDataset(clips, context=2, future=2, size=(16, 24), crop=(8, 12), grayscale=True)
    x = ds[0]["rgb"]
    assert x.shape == (4, 1, 8, 12) and 0 <= float(x.min()) and float(x.max()) <= 1
    rnd = ClipDataset(clips, context=2, future=2, crop=(16, 16), crop_mode="random", seed=1)
    a = rnd[0]["rgb"]
    torch.testing.assert_close(rnd[0]["rgb"], a)  # same index, same epoch: same crop
    origins = set()
    for epoch in range(8):
        rnd.set_epoch(epoch)
        y = rnd[0]["rgb"]
        full = torch.from_numpy(FRAMES[:4]).permute(0, 3, 1, 2).float() / 255
        hits = [(i, j) for i in range(32 - 15) for j in range(48 - 15)
                if torch.equal(full[:, :, i:i + 16, j:j + 16], y)]
        origins.add(hits[0])
    assert len(origins) > 1  # epochs move the random crop


def many_clips(root, n=30):
    for i in range(n):
        frame_folder(root / f"clip{i:02d}", np.full((3, 4, 4, 3), i, np.uint8))
    return root


def test_split_is_deterministic_and_disjoint(tmp_path):
    root = many_clips(tmp_path / "data")
    paths = {}
    for split in ("train", "val", "test"):
        ds = ClipDataset(root, context=1, future=1, split=split)
        paths[split] = {s.rel for s in ds.sources}
        again = ClipDataset(root, context=1, future=1, split=split)
        assert {s.rel for s in again.sources} == paths[split]
    assert not (paths["train"] & paths["val"] or paths["train"] & paths["test"] or paths["val"] & paths["test"])
    assert set.union(*paths.values()) == {f"clip{i:02d}" for i in range(30)}
    assert len(paths["train"]) > len(paths["test"])
    # A split file lists the clips of one split.
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "val.txt").write_text("# held out\nclip03\nclip07/\n")
    ds = ClipDataset(root, context=1, future=1, split="val", split_file=tmp_path / "splits")
    assert [s.rel for s in ds.sources] == ["clip03", "clip07"]
    (tmp_path / "bad.txt").write_text("clip99\n")
    with pytest.raises(InputError, match="not among the inputs"):
        ClipDataset(root, context=1, future=1, split="test", split_file=tmp_path / "bad.txt")


def test_dataloader_workers_match_single_process(clips):
    ds = ClipDataset(clips, context=2, future=2, window_stride=2, crop=(16, 16), crop_mode="random", seed=3)

    def batches(workers):
        loader = DataLoader(ds, batch_size=3, shuffle=True, num_workers=workers,
                            generator=torch.Generator().manual_seed(0))
        return list(loader)

    single, multi = batches(0), batches(2)
    assert len(single) == len(multi) == -(-len(ds) // 3)
    for a, b in zip(single, multi):
        assert a["rgb"].shape[1:] == (4, 3, 16, 16)  # B, T, C, H, W
        torch.testing.assert_close(a["rgb"], b["rgb"], rtol=0, atol=0)
        assert a["meta"]["path"] == b["meta"]["path"]
        torch.testing.assert_close(a["meta"]["start"], b["meta"]["start"])


def test_companions_and_flow_rescaling(tmp_path):
    root = tmp_path / "data"
    frame_folder(root / "x", RNG.integers(0, 256, (6, 16, 24, 3), dtype=np.uint8))
    labels = np.zeros((6, 16, 24), np.uint8)
    labels[:, :, 12:] = 5
    labels[2, 0, 0] = 255
    label_folder(root / "x.labels", labels)
    flow = np.zeros((5, 2, 16, 24), np.float32)
    flow[:, 0], flow[:, 1] = 2.0, 1.0  # u = 2 px right, v = 1 px down, everywhere
    np.savez(root / "x.flow.npz", flow=flow)
    ds = ClipDataset(root, context=2, future=2, size=(32, 72))
    item = ds[0]
    assert ds.summary()["companions"] == ["labels", "flow"]
    assert item["labels"].dtype == torch.int64 and item["labels"].shape == (4, 32, 72)
    assert set(item["labels"][0].unique().tolist()) == {0, 5} and int(item["labels"][2, 0, 0]) == 255
    assert item["flow"].shape == (3, 2, 32, 72)
    torch.testing.assert_close(item["flow"][:, 0], torch.full((3, 32, 72), 2.0 * 72 / 24))  # u * W'/W
    torch.testing.assert_close(item["flow"][:, 1], torch.full((3, 32, 72), 1.0 * 32 / 16))  # v * H'/H
    # frame_step 2 chains two one-step flows: a constant flow doubles.
    stepped = ClipDataset(root, context=2, future=1, frame_step=2)
    torch.testing.assert_close(stepped[0]["flow"][:, 0], torch.full((2, 16, 24), 4.0))
    # Batches keep the DESIGN layout.
    batch = next(iter(DataLoader(ds, batch_size=1)))
    assert batch["labels"].shape == (1, 4, 32, 72) and batch["flow"].shape == (1, 3, 2, 32, 72)
    # Asking for a companion a clip lacks is an error; too few label maps is too.
    (root / "x.flow.npz").unlink()
    with pytest.raises(InputError, match="no flow"):
        ClipDataset(root, context=2, future=2, companions=("flow",))
    assert ClipDataset(root, context=2, future=2).summary()["companions"] == ["labels"]
    (root / "x.labels" / "00005.png").unlink()
    with pytest.raises(DataFormatError, match="5 label maps"):
        ClipDataset(root, context=2, future=2)


def test_synth_street_folder_and_sparse_record_labels(tmp_path):
    seq = tmp_path / "street" / "seq_000"
    frame_folder(seq / "frames", RNG.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8))
    label_folder(seq / "labels", np.full((4, 8, 8), 3))
    np.savez(seq / "flow_forward.npz", flow=np.ones((3, 2, 8, 8), np.float32))
    (seq / "meta.json").write_text("{}")
    ds = ClipDataset(tmp_path / "street", context=2, future=2)
    assert len(ds) == 1 and [s.rel for s in ds.sources] == ["seq_000"]
    item = ds[0]
    assert int(item["labels"].max()) == 3 and item["flow"].shape == (3, 2, 8, 8)
    # Cityscapes-style record: only the 20th frame is annotated (label ids, mapped to train ids).
    frames = tuple(frame_folder(tmp_path / "cs", RNG.integers(0, 256, (30, 8, 8, 3), dtype=np.uint8)).glob("*.png"))
    frames = tuple(sorted(frames))
    gt = tmp_path / "gt.png"
    Image.fromarray(np.full((8, 8), 26, np.uint8)).save(gt)  # 26 = car -> train id 13
    rec = ClipRecord("cs", "val", "cityscapes", frames=frames,
                     companions={"labels": {19: gt}, "labels_format": "cityscapes_label_ids"})
    ds = ClipDataset([rec], context=10, future=10, split="val")
    lab = ds[0]["labels"]
    assert (lab[19] == 13).all() and (lab[:19] == 255).all() and (lab[20:] == 255).all()


def test_mixed_resolutions_warn_once(tmp_path):
    root = tmp_path / "mixed"
    frame_folder(root / "a", np.zeros((4, 16, 16, 3), np.uint8))
    for name in ("b", "c"):
        frame_folder(root / name, np.zeros((4, 8, 12, 3), np.uint8))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = ClipDataset(root, context=2, future=2)
    assert len(caught) == 1 and "2 of 3 clips" in str(caught[0].message)
    assert all(ds[i]["rgb"].shape == (4, 3, 16, 16) for i in range(len(ds)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ClipDataset(root, context=2, future=2, size=(8, 8))  # an explicit size: no warning


def test_unreadable_files(tmp_path):
    root = tmp_path / "bad"
    frame_folder(root / "good", np.zeros((4, 8, 8, 3), np.uint8))
    (root / "broken.mp4").write_bytes(b"this is not a video" * 10)
    with pytest.raises(VideoError, match="broken.mp4"):
        ClipDataset(root, context=2, future=2)
    ds = ClipDataset(root, context=2, future=2, skip_unreadable=True)
    assert len(ds) == 1
    assert [u["path"] for u in ds.summary()["unreadable"]] == [str(root / "broken.mp4")]
    # A frame that fails to decode later names the window and the file.
    (root / "good" / "00002.png").write_bytes(b"garbage")
    with pytest.raises(VideoError, match=r"window 0 of good.*00002\.png"):
        ds[0]


def test_empty_and_bad_arguments(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no videos or frame folders"):
        ClipDataset(tmp_path / "empty")
    with pytest.raises(InputError, match="does not exist"):
        ClipDataset(tmp_path / "missing")
    frame_folder(tmp_path / "short" / "s", np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(InputError, match="no clip is long enough"):
        ClipDataset(tmp_path / "short", context=2, future=2)
    with pytest.raises(UsageError, match="split"):
        ClipDataset(tmp_path / "short", split="dev")
    with pytest.raises(UsageError, match="crop_mode"):
        ClipDataset(tmp_path / "short", context=1, future=1, crop_mode="corner")


def test_synthetic_moving_digits_and_npz_folder(tmp_path):
    ds = make_dataset("synthetic:moving-digits?num_digits=1&seed=4", context=5, future=10, num_clips=8)
    x = ds[3]["rgb"]
    assert x.shape == (15, 1, 64, 64) and x.dtype == torch.float32
    again = make_dataset("synthetic:moving-digits", num_digits=1, seed=4, context=5, future=10, num_clips=8)
    torch.testing.assert_close(again[3]["rgb"], x, rtol=0, atol=0)
    val = make_dataset("synthetic:moving-digits", split="val", num_clips=2)
    test = make_dataset("synthetic:moving-digits", split="test", num_clips=2)
    assert not torch.equal(val[0]["rgb"], test[0]["rgb"])
    with pytest.raises(UsageError, match="unknown synthetic"):
        make_dataset("synthetic:nope")
    # Our npz output is itself a clip source.
    from vpcli.data.moving_digits import MovingDigits, generate_moving_digits

    generate_moving_digits(tmp_path, num_sequences=3, length=6, num_digits=1, split="test")
    ds = make_dataset(tmp_path, context=2, future=4, grayscale=True)
    assert len(ds) == 3
    ref = MovingDigits(num_digits=1, length=6, split="test", num_sequences=3)[2]
    torch.testing.assert_close(ds[2]["rgb"][:, 0], torch.from_numpy(ref[..., 0]).float() / 255)


def test_synth_street_generated_folder_and_on_the_fly(tmp_path):
    from vpcli.data import synth_street

    cfg = synth_street.SynthStreetConfig(height=16, width=32, length=5)
    synth_street.generate(tmp_path / "ss", num_sequences=2, config=cfg, seed=1)
    ds = ClipDataset(tmp_path / "ss", context=2, future=3, size=(32, 64))
    assert len(ds) == 2 and ds.summary()["companions"] == ["labels", "flow"]
    seq = synth_street.render_sequence(cfg, synth_street.sequence_seed(1, 0))
    item = ds[0]
    expected_flow = torch.from_numpy(seq.flow_forward)
    # Rendered at 16x32, loaded at 32x64: flow doubles in both components (exactly, as u and v
    # are scaled by 64/32 and 32/16 after a bilinear resize of a smooth field -- compare means).
    torch.testing.assert_close(item["flow"].mean(dim=(2, 3)), 2 * expected_flow.mean(dim=(2, 3)), rtol=0.05, atol=0.05)
    assert item["labels"].shape == (5, 32, 64)
    assert set(item["labels"].unique().tolist()) <= set(seq.labels.ravel().tolist()) | {255}
    # On the fly: deterministic per index, distinct per split.
    fly = make_dataset("synthetic:synth-street", context=1, future=2, size=(16, 32), num_clips=2)
    a = fly[1]
    assert a["rgb"].shape == (3, 3, 16, 32) and a["labels"].shape == (3, 16, 32) and a["flow"].shape == (2, 2, 16, 32)
    torch.testing.assert_close(fly[1]["rgb"], a["rgb"], rtol=0, atol=0)
    other = make_dataset("synthetic:synth-street", context=1, future=2, size=(16, 32), num_clips=2, split="test")
    assert not torch.equal(other[1]["rgb"], a["rgb"])


def test_flo_folder_and_labels_npz_companions(tmp_path):
    from vpcli.io.flow import write_flo_folder
    from vpcli.io.labels import write_labels_npz

    root = tmp_path / "data"
    write_video(root / "v.mp4", RNG.integers(0, 256, (5, 8, 12, 3), dtype=np.uint8), 10, lossless=True)
    flow = RNG.normal(size=(4, 2, 8, 12)).astype(np.float32)
    labels = RNG.integers(0, 19, (5, 8, 12))
    write_flo_folder(root / "v.flow", flow)
    write_labels_npz(root / "v.labels.npz", labels)
    ds = ClipDataset(root, context=2, future=2, window_stride=1)
    assert len(ds) == 2 and [s.rel for s in ds.sources] == ["v.mp4"]  # companions are not clips
    item = ds[1]
    torch.testing.assert_close(item["flow"], torch.from_numpy(flow[1:4]))
    torch.testing.assert_close(item["labels"], torch.from_numpy(labels[1:5]))


def test_a_converted_folder_is_one_clip_named_after_it(tmp_path):
    """`vpcli data convert` writes NAME/video.mp4 + meta.json: datasets see the clip NAME (so the
    hash split and sequence ids are those of the source clip's name, not 'NAME/video.mp4')."""
    from vpcli.io.video import write_video
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        write_video(tmp_path / "conv" / name / "video.mp4", rng.integers(0, 255, (6, 16, 16, 3), dtype=np.uint8))
        (tmp_path / "conv" / name / "meta.json").write_text("{}")
    ds = ClipDataset(tmp_path / "conv", context=2, future=2)
    assert sorted(s.rel for s in ds.sources) == ["a", "b"]
    assert {ds[i]["meta"]["sequence_id"] for i in range(len(ds))} == {"a", "b"}

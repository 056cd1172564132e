"""Dataset layout readers on tiny fixtures that mimic each real folder structure."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vpcli.data.layouts import (
    CITYSCAPES_ID_TO_TRAIN_ID,
    KITTI_SPLITS,
    PROTOCOLS,
    cityscapes_to_train_ids,
    detect_layout,
    scan,
    scan_bair,
    scan_cityscapes,
    scan_kitti,
    scan_kth,
    scan_moving_digits,
    scan_synth_street,
)
from vpcli.data.moving_digits import generate_moving_digits, write_npz_reproducible
from vpcli.errors import InputError, UsageError


def png(path, value=0, shape=(4, 6), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full(shape + ((3,) if mode == "RGB" else ()), value, np.uint8)
    Image.fromarray(arr).save(path)
    return path


# ----------------------------------------------------------------------------- KTH


@pytest.fixture
def kth_root(tmp_path):
    root = tmp_path / "kth"
    for person in (1, 20, 21, 25):
        for action in ("boxing", "walking"):
            f = root / action / f"person{person:02d}_{action}_d1_uncomp.avi"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(b"")  # scanning never decodes
    (root / "boxing" / "README.txt").write_text("not a clip")
    (root / "00sequences.txt").write_text(
        "person01_boxing_d1\t\tframes\t1-95, 96-185, 186-245, 246-360\n"
        "person21_walking_d1\t\tframes\t1-120\n")
    return root


def test_kth_split_and_subsequences(kth_root):
    train = scan_kth(kth_root, split="train")
    test = scan_kth(kth_root, split="test")
    assert {r.meta["person"] for r in train} == {1, 20}
    assert {r.meta["person"] for r in test} == {21, 25}
    boxing1 = [r for r in train if r.sequence_id.startswith("person01_boxing_d1")]
    assert [(r.start, r.end) for r in boxing1] == [(0, 95), (95, 185), (185, 245), (245, 360)]
    assert boxing1[1].sequence_id == "person01_boxing_d1_s2" and boxing1[1].num_frames == 90
    assert all(r.video.suffix == ".avi" and r.split == "train" for r in train)
    assert len(train) == 4 + 3  # person01 boxing: 4 subsequences; 3 other videos whole
    # MCnet split: persons 1-16 train, 17-25 test.
    mc = scan_kth(kth_root, split="test", protocol="mcnet")
    assert {r.meta["person"] for r in mc} == {20, 21, 25}
    assert detect_layout(kth_root) == "kth"


def test_kth_frame_folders(tmp_path):
    clip = tmp_path / "processed_64" / "running" / "person22_running_d3"
    for i in range(3):
        png(clip / f"image-{i + 1:03d}.png")
    (rec,) = scan_kth(tmp_path, split="test", subsequences=False)
    assert rec.video is None and [f.name for f in rec.frames] == ["image-001.png", "image-002.png", "image-003.png"]
    assert rec.num_frames == 3


def test_kth_nothing_found(tmp_path):
    (tmp_path / "x.avi").write_bytes(b"")
    with pytest.raises(InputError, match="no KTH data") as e:
        scan_kth(tmp_path)
    assert "person01_boxing_d1_uncomp.avi" in str(e.value)
    with pytest.raises(UsageError):
        scan_kth(tmp_path, split="val")


# ----------------------------------------------------------------------------- Cityscapes


@pytest.fixture
def cityscapes_root(tmp_path):
    root = tmp_path / "cityscapes"
    seq = root / "leftImg8bit_sequence" / "train"
    # aachen 000000: one 30-frame snippet (frames 0..29), labelled at its 20th frame (19).
    for n in range(30):
        png(seq / "aachen" / f"aachen_000000_{n:06d}_leftImg8bit.png", n)
    # bochum 000001: frames 100..159, consecutive -> two snippets; then a gap and 5 frames.
    for n in list(range(100, 160)) + list(range(300, 305)):
        png(seq / "bochum" / f"bochum_000001_{n:06d}_leftImg8bit.png")
    gt = root / "gtFine" / "train"
    ids = np.array([[7, 8, 26, 0], [33, 24, 13, 23]], np.uint8)  # road sidewalk car unlabeled / bicycle person fence sky
    Image.fromarray(ids).save(png(gt / "aachen" / "aachen_000000_000019_gtFine_labelIds.png", 0, (2, 4), "L"))
    png(gt / "bochum" / "bochum_000001_000149_gtFine_labelIds.png", 7, (2, 4), "L")
    return root


def test_cityscapes_snippets_and_labels(cityscapes_root):
    from vpcli.io.labels import read_label_png

    recs = scan_cityscapes(cityscapes_root, split="train")
    assert [r.sequence_id for r in recs] == [
        "aachen_000000_000000", "bochum_000001_000100", "bochum_000001_000130", "bochum_000001_000300"]
    assert [r.num_frames for r in recs] == [30, 30, 30, 5]
    assert [r.meta["complete"] for r in recs] == [True, True, True, False]
    a = recs[0]
    assert a.frames[19].name == "aachen_000000_000019_leftImg8bit.png"
    assert list(a.companions["labels"]) == [19] and a.companions["labels_format"] == "cityscapes_label_ids"
    assert list(recs[2].companions["labels"]) == [19]  # frame 149 = index 19 of the 130.. snippet
    assert "labels" not in recs[1].companions
    train_ids = cityscapes_to_train_ids(read_label_png(a.companions["labels"][19]))
    np.testing.assert_array_equal(train_ids, [[0, 1, 13, 255], [18, 11, 4, 10]])
    # The leftImg8bit_sequence folder itself also works as root.
    assert len(scan_cityscapes(cityscapes_root / "leftImg8bit_sequence")) == 4
    assert detect_layout(cityscapes_root) == "cityscapes"
    with pytest.raises(InputError, match="leftImg8bit_sequence/<split>"):
        scan_cityscapes(cityscapes_root, split="val")


def test_cityscapes_train_id_table():
    assert len(CITYSCAPES_ID_TO_TRAIN_ID) == 34
    table = dict(enumerate(CITYSCAPES_ID_TO_TRAIN_ID))
    assert sorted(v for v in table.values() if v != 255) == list(range(19))
    assert (table[7], table[11], table[17], table[23], table[26], table[31], table[33]) == (0, 2, 5, 10, 13, 16, 18)
    np.testing.assert_array_equal(cityscapes_to_train_ids(np.array([34, 255, -1])), [255, 255, 255])


# ----------------------------------------------------------------------------- KITTI


@pytest.fixture
def kitti_root(tmp_path):
    root = tmp_path / "kitti_raw"
    for date, drive in (("2011_09_26", 1), ("2011_09_26", 2), ("2011_09_26", 5), ("2011_09_26", 3)):
        d = root / date / f"{date}_drive_{drive:04d}_sync"
        for i in range(3):
            png(d / "image_02" / "data" / f"{i:010d}.png")
        png(d / "image_03" / "data" / "0000000000.png")
        (d / "oxts").mkdir()
    return root


def test_kitti_splits(kitti_root):
    train = scan_kitti(kitti_root, split="train")
    test = scan_kitti(kitti_root, split="test")
    assert [r.sequence_id for r in train] == ["2011_09_26_drive_0001_sync_image_02",
                                              "2011_09_26_drive_0005_sync_image_02"]
    assert [r.sequence_id for r in test] == ["2011_09_26_drive_0002_sync_image_02"]
    assert train[0].num_frames == 3 and train[0].frames[0].name == "0000000000.png"
    # Drive 0003 is in neither SLAMP list; "all" reports it as unlisted.
    unlisted = [r for r in scan_kitti(kitti_root, split="all") if r.split == "unlisted"]
    assert [r.meta["drive"] for r in unlisted] == [3]
    # PredNet/HVP: 0005 is validation, everything else not in test trains.
    pn = scan_kitti(kitti_root, split="val", protocol="prednet")
    assert [r.meta["drive"] for r in pn] == [5]
    assert {r.meta["drive"] for r in scan_kitti(kitti_root, split="train", protocol="prednet")} == {1, 2, 3}
    both = scan_kitti(kitti_root, split="test", cameras=("image_02", "image_03"))
    assert [r.num_frames for r in both] == [3, 1]
    assert detect_layout(kitti_root) == "kitti"
    assert len(KITTI_SPLITS["slamp"]["train"]) == 32 and len(KITTI_SPLITS["slamp"]["test"]) == 28


def test_kitti_nothing(tmp_path):
    with pytest.raises(InputError, match=r"image_02/data"):
        scan_kitti(tmp_path)


# ----------------------------------------------------------------------------- BAIR


def test_bair_srvp_export(tmp_path):
    base = tmp_path / "bair" / "processed_data"
    for split, rec in (("train", "traj_0_to_255"), ("test", "traj_0_to_255")):
        for k in (1, 2):
            for i in range(3):
                png(base / split / rec / f"{k:03d}" / f"{i:03d}.png")
    train = scan_bair(tmp_path / "bair", split="train")
    assert [r.sequence_id for r in train] == ["traj_0_to_255/001", "traj_0_to_255/002"]
    assert train[0].num_frames == 3 and train[0].frames[-1].name == "002.png"
    assert len(scan_bair(base, split="test")) == 2
    assert detect_layout(tmp_path / "bair") == "bair"
    with pytest.raises(InputError, match="processed_data"):
        scan_bair(tmp_path / "bair" / "processed_data" / "train" / "traj_0_to_255" / "001")


# ----------------------------------------------------------------------------- moving MNIST


def test_moving_digits_npz_both_axis_orders(tmp_path):
    ours = generate_moving_digits(tmp_path / "ours", num_sequences=3, length=4, num_digits=1, split="test")
    recs = scan_moving_digits(tmp_path / "ours", split="test")
    assert [r.array_index for r in recs] == [0, 1, 2]
    assert recs[0].array == ours and recs[0].array_axes == "NTHW" and recs[0].num_frames == 4
    assert scan_moving_digits(ours, split="all")[2].sequence_id == f"{ours.stem}/00002"
    with pytest.raises(InputError):
        scan_moving_digits(tmp_path / "ours", split="train")
    # SRVP's test file stores (T, N, H, W) and carries 'latents'.
    srvp = tmp_path / "srvp"
    srvp.mkdir()
    seqs = np.zeros((100, 5, 64, 64), np.uint8)
    write_npz_reproducible(srvp / "smmnist_test_2digits_64.npz",
                           {"sequences": seqs, "latents": np.zeros((100, 5, 2, 4), np.int64)})
    recs = scan_moving_digits(srvp)
    assert len(recs) == 5 and recs[0].array_axes == "TNHW" and recs[0].num_frames == 100
    assert detect_layout(srvp) == "moving_digits"


def test_moving_digits_png_folders(tmp_path):
    generate_moving_digits(tmp_path, num_sequences=2, length=3, num_digits=1, split="train", format="png")
    recs = scan_moving_digits(tmp_path, split="train")
    assert [r.sequence_id for r in recs] == ["seq_00000", "seq_00001"]
    assert recs[1].num_frames == 3 and recs[1].split == "train"
    assert detect_layout(tmp_path) == "moving_digits"
    assert scan(tmp_path, split="train")[0].layout == "moving_digits"


# ----------------------------------------------------------------------------- synth-street & misc


def test_synth_street_folders(tmp_path):
    for name in ("seq_000", "seq_001"):
        d = tmp_path / name
        for i in range(3):
            png(d / "frames" / f"{i:05d}.png")
            png(d / "labels" / f"{i:05d}.png", 1, mode="L")
        np.savez(d / "flow_forward.npz", flow=np.zeros((2, 2, 4, 6), np.float32))
        (d / "meta.json").write_text("{}")
    recs = scan_synth_street(tmp_path)
    assert [r.sequence_id for r in recs] == ["seq_000", "seq_001"]
    assert recs[0].companions["labels"] == tmp_path / "seq_000" / "labels"
    assert recs[0].companions["flow"].name == "flow_forward.npz"
    assert detect_layout(tmp_path) == "synth_street"
    assert len(scan_synth_street(tmp_path / "seq_001")) == 1


def test_detect_unknown_and_scan_errors(tmp_path):
    (tmp_path / "random.txt").write_text("x")
    assert detect_layout(tmp_path) is None
    assert detect_layout(tmp_path / "missing") is None
    with pytest.raises(InputError, match="cannot tell which dataset layout"):
        scan(tmp_path)
    with pytest.raises(UsageError, match="unknown layout"):
        scan(tmp_path, layout="ucf101")
    with pytest.raises(InputError, match="does not exist"):
        scan_bair(tmp_path / "missing")


def test_protocols_record_the_papers():
    assert PROTOCOLS["slamp"]["kitti"].size == (92, 310)
    assert PROTOCOLS["slamp"]["cityscapes"].size == (128, 256)
    assert (PROTOCOLS["slamp"]["moving_mnist"].context, PROTOCOLS["slamp"]["moving_mnist"].future_train) == (5, 10)
    assert (PROTOCOLS["slamp"]["kth"].context, PROTOCOLS["slamp"]["kth"].future_test) == (10, 30)
    assert (PROTOCOLS["slamp"]["bair"].context, PROTOCOLS["slamp"]["bair"].future_test) == (2, 28)
    assert PROTOCOLS["hvp"]["cityscapes"].frame_step == 3
    for paper in PROTOCOLS.values():
        for p in paper.values():
            assert p.source and p.context >= 1 and len(p.size) == 2

"""Camera motion over photographs (vpcli.data.camera_motion) and its on-the-fly dataset."""
from __future__ import annotations

import hashlib
import json

import cv2
import numpy as np
import pytest
import torch

from vpcli.data import camera_motion as cm
from vpcli.data.clips import CameraMotionClips, make_dataset
from vpcli.errors import ConfigError, UsageError

STILL_OBJECTS = dict(max_objects=0, noise=0.0)


def test_clip_is_a_deterministic_function_of_the_seed():
    cfg = cm.CameraMotionConfig(height=32, width=48, length=5)
    a, b, c = cm.render_clip(cfg, 3), cm.render_clip(cfg, 3), cm.render_clip(cfg, 4)
    assert a.shape == (5, 32, 48, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_still_camera_without_objects_repeats_its_first_frame():
    cfg = cm.CameraMotionConfig(height=32, width=48, length=4, p_still=1.0, **STILL_OBJECTS)
    clip = cm.render_clip(cfg, 0)
    assert all(np.array_equal(clip[0], f) for f in clip[1:])
    assert clip[0].std() > 1  # a textured photograph, not a flat frame


def test_steady_pan_moves_by_the_same_shift_every_frame():
    """A pure pan with no change: every step of the camera is the same translation, within
    max_shift, and each frame is the previous one shifted by it (up to interpolation)."""
    cfg = cm.CameraMotionConfig(height=48, width=64, length=6, max_rotation=0.0, max_zoom=0.0, max_perspective=0.0,
                                p_still=0.0, p_change=0.0, zoom_range=(1.0, 1.0), max_shift=3.0, **STILL_OBJECTS)
    moved = 0
    for seed in range(6):
        clip, cams = cm.render_clip(cfg, seed, return_camera=True)
        steps = [cams[t + 1] @ np.linalg.inv(cams[t]) for t in range(len(cams) - 1)]
        for M in steps:
            assert np.allclose(M, steps[0], atol=1e-9)
            assert np.allclose(M[:2, :2], np.eye(2)) and np.allclose(M[2], [0, 0, 1])
        shift = steps[0][:2, 2]
        assert np.all(np.abs(shift) <= 3.0 * 64 / 128 + 1e-9)
        moved += np.abs(shift).max() > 0.2
        for t in range(len(clip) - 1):  # frame t+1 is frame t moved by the shift, inside a margin
            # compared after a blur: resampling an already resampled texture differs at the pixel scale
            def smooth(img):
                return cv2.GaussianBlur(img.astype(np.float32), (0, 0), 1.5)[5:-5, 5:-5]
            warped = cv2.warpAffine(clip[t], steps[0][:2], (64, 48), flags=cv2.INTER_LINEAR)
            err = np.abs(smooth(warped) - smooth(clip[t + 1])).mean()
            still = np.abs(smooth(clip[t]) - smooth(clip[t + 1])).mean()
            assert err < 2.0 and (err < 0.3 * still or np.abs(shift).max() < 0.2), (seed, t, err, still)
    assert moved >= 3


def test_every_frame_stays_inside_the_photograph():
    cfg = cm.CameraMotionConfig(height=64, width=128, length=20, max_shift=6.0, max_zoom=0.06)
    rng = np.random.default_rng(0)
    for _ in range(20):
        src_shape = (int(rng.integers(200, 600)), int(rng.integers(200, 600)))
        Ts = cm._fit_trajectory(rng, cfg, src_shape)
        assert len(Ts) == 20
        assert all(cm._inside(T, 64, 128, *src_shape) for T in Ts)


def _digest(img: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(img).tobytes()).hexdigest()


def test_held_out_photographs_are_never_training_sources():
    import skimage.data as skd
    held = {_digest(cm.rgb_uint8(getattr(skd, n)())) for n in cm.HELD_OUT}
    train = {_digest(img) for img in cm._sources("train")}
    assert len(train) >= 15 and not held & train
    assert {_digest(img) for img in cm._sources("heldout")} <= held
    assert [_digest(i) for i in cm._sources("rocket")] == [_digest(cm.rgb_uint8(skd.rocket()))]


def test_config_errors_name_the_problem():
    with pytest.raises(ConfigError, match="unknown key.*'speed'"):
        cm.CameraMotionConfig.from_dict({"speed": 3})
    with pytest.raises(ConfigError, match="photos must be"):
        cm.CameraMotionConfig(photos="astronauts")
    with pytest.raises(ConfigError, match="at least 8x8"):
        cm.CameraMotionConfig(height=4)


def test_dataset_items_splits_and_query_parameters():
    ds = make_dataset("synthetic:camera-motion?max_objects=0", context=2, future=2, size=(32, 48), num_clips=6,
                      split="train", seed=1)
    assert isinstance(ds, CameraMotionClips) and len(ds) == 6 and ds.config.max_objects == 0
    item = ds[2]
    assert item["rgb"].shape == (4, 3, 32, 48) and 0 <= item["rgb"].min() and item["rgb"].max() <= 1
    assert torch.equal(item["rgb"], ds[2]["rgb"])
    val = make_dataset("synthetic:camera-motion?max_objects=0", context=2, future=2, size=(32, 48), num_clips=6,
                       split="val", seed=1)
    assert not torch.equal(val[2]["rgb"], item["rgb"])
    grey = make_dataset("synthetic:camera-motion", context=2, future=1, size=(32, 48), num_clips=2, channels=1)
    assert grey[0]["rgb"].shape == (3, 1, 32, 48)
    with pytest.raises(IndexError):
        ds[6]
    with pytest.raises(UsageError, match="street_fraction"):
        CameraMotionClips(street_fraction=1.5)


def test_street_mix_draws_the_given_fraction_from_the_folder(tmp_path):
    from vpcli.data.synth_street import SynthStreetConfig, generate
    generate(tmp_path / "st", num_sequences=5, config=SynthStreetConfig(height=32, width=64, length=5), seed=0)
    kw = dict(context=2, future=2, size=(32, 64), num_clips=40, seed=0)
    everything = CameraMotionClips(streets=tmp_path / "st", street_fraction=1.0, split="train", **kw)
    windows = [everything.streets[i]["rgb"] for i in range(len(everything.streets))]
    assert all(any(torch.equal(everything[i]["rgb"], w) for w in windows) for i in range(10))
    mixed = CameraMotionClips(streets=tmp_path / "st", street_fraction=0.25, split="train", **kw)
    from_streets = sum(any(torch.equal(mixed[i]["rgb"], w) for w in windows) for i in range(40))
    assert 3 <= from_streets <= 18, from_streets
    assert mixed.summary()["streets"] == {"fraction": 0.25, "windows": len(windows)}
    batch = torch.utils.data.default_collate([mixed[i] for i in range(8)])  # street and photo items collate
    assert batch["rgb"].shape == (8, 4, 3, 32, 64)


def _cli(capsys, *args):
    from vpcli.cli.app import main
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exc.value.code, err


def test_cli_writes_clips_vpcli_reads_and_refuses_bad_input(tmp_path, capsys):
    from vpcli.io.video import read_video
    out = tmp_path / "pans"
    args = ("data", "camera-motion", "--out", out, "--num", 2, "--length", 4, "--size", "32x48")
    assert _cli(capsys, *args, "--json")[0] == 0
    frames, _ = read_video(out / "clip_00001")
    cfg = cm.CameraMotionConfig(height=32, width=48, length=4)
    assert np.array_equal(frames, cm.render_clip(cfg, cm.clip_seed(0, 1)))  # clip i regenerates on its own
    meta = json.loads((out / "meta.json").read_text())
    assert meta["config"]["photos"] == "train" and "astronaut" in meta["held_out_photographs"]
    code, err = _cli(capsys, *args)
    assert code == 1 and "already exists" in err
    bad = tmp_path / "bad"
    code, err = _cli(capsys, "data", "camera-motion", "--out", bad, "--photos", "astronauts")
    assert code == 2 and "photos must be" in err and len(err.strip().splitlines()) == 1 and not bad.exists()

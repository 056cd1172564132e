"""Validation on a user's folder: a small folder still validates (one held-out clip, or the last
window of a single clip), and `--val DIR` names a validation folder."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from vpcli.cli.app import main
from vpcli.data.clips import assign_splits
from vpcli.engine.run import resolve_config
from vpcli.engine.train_runner import build_datasets
from vpcli.errors import ConfigError
from vpcli.io.video import write_video

BASE = ["data.size=[16, 16]", "data.context=2", "data.future=2", "data.channels=1"]


def _clips(folder, names, frames=8, seed=0):
    """PNG frame folders (lossless, so frames can be compared exactly)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in names:
        video = rng.integers(0, 255, (frames, 16, 16, 3), dtype=np.uint8)
        write_video(folder / name, video)  # no extension: a PNG frame folder
        out[name] = video
    return out


def _names_without_val(count):
    """Clip names that the 80/10/10 hash split puts in train only (none in val or test)."""
    names, i = [], 0
    while len(names) < count:
        cand = f"clip{i:03d}"
        i += 1
        from vpcli.data.clips import _split_of
        if _split_of(cand, (0.8, 0.1, 0.1)) == "train":
            names.append(cand)
    return names


def _cfg(source, *extra):
    return resolve_config(None, "convlstm-mmnist-tiny", [f"data.source={source}", *BASE, *extra])


def test_small_folder_holds_out_one_clip_that_training_never_sees(tmp_path):
    names = _names_without_val(5)
    _clips(tmp_path / "clips", names)
    assert assign_splits(tmp_path / "clips")["val"] == []  # the hash split alone gives no validation
    train, val, note = build_datasets(_cfg(tmp_path / "clips"), seed=0)
    val_paths = {s.record.path for s in val.sources}
    train_paths = {s.record.path for s in train.sources}
    assert len(val_paths) == 1 and len(train_paths) == 4 and not val_paths & train_paths
    held = next(iter(val_paths)).name
    assert f"held out clip {held}" in note
    # deterministic: the same clip on a second call
    assert {s.record.path for s in build_datasets(_cfg(tmp_path / "clips"), seed=0)[1].sources} == val_paths


def test_single_clip_validates_on_its_last_window(tmp_path):
    video = _clips(tmp_path / "one", ["only"], frames=12)["only"]
    train, val, note = build_datasets(_cfg(tmp_path / "one"), seed=0)
    assert len(val) == 1 and "last 4 frames" in note and "frames 8..11" in note
    assert len(train) == 2  # windows at 0 and 4 of frames 0..7: none reaches the held-out frames
    assert max(train[i]["meta"]["start"] for i in range(len(train))) + 4 <= 8
    luma = (0.299 * video[..., 0] + 0.587 * video[..., 1] + 0.114 * video[..., 2]) / 255.0
    got = val[0]["rgb"][:, 0].numpy()
    assert np.abs(got - luma[8:12]).max() < 1.5 / 255  # exactly the clip's last four frames


def test_single_short_clip_says_why_there_is_no_validation(tmp_path):
    _clips(tmp_path / "one", ["only"], frames=6)
    _, val, note = build_datasets(_cfg(tmp_path / "one"), seed=0)
    assert val is None and "fewer than two windows" in note and "--val DIR" in note


def test_val_folder_with_no_validation_windows_is_a_config_error(tmp_path):
    _clips(tmp_path / "a", ["x"], frames=8)
    with pytest.raises(ConfigError, match="val_clips is 0"):
        build_datasets(_cfg(tmp_path / "a", f"data.val_source={tmp_path / 'a'}", "data.val_clips=0"), seed=0)


def test_train_with_val_folder_writes_best_checkpoint_and_samples(tmp_path, capsys):
    _clips(tmp_path / "train", _names_without_val(2), frames=8)
    _clips(tmp_path / "val", ["v0"], frames=8, seed=1)
    args = ["--threads", "1", "train", "--config", "convlstm-mmnist-tiny", "--data", str(tmp_path / "train"),
            "--val", str(tmp_path / "val"), "--out", str(tmp_path / "run"), "--json",
            *[x for kv in BASE for x in ("--set", kv)],
            "--set", "train.steps=2", "--set", "train.val_every=2", "--set", "train.batch_size=2"]
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    assert exc.value.code == 0, err
    start = json.loads(out.splitlines()[0])
    assert start["event"] == "start" and start["validation"] == f"validation: 2 windows from {tmp_path / 'val'}"
    cfg = yaml.safe_load((tmp_path / "run/config.yaml").read_text())
    assert cfg["data"]["val_source"] == str(tmp_path / "val")
    assert (tmp_path / "run/checkpoints/best.safetensors").exists()
    assert (tmp_path / "run/samples/step_0000002.mp4").exists()


def test_train_says_where_validation_comes_from(tmp_path, capsys):
    _clips(tmp_path / "one", ["only"], frames=12)
    args = ["--threads", "1", "train", "--config", "convlstm-mmnist-tiny", "--data", str(tmp_path / "one"),
            "--out", str(tmp_path / "run"), *[x for kv in BASE for x in ("--set", kv)],
            "--set", "train.steps=2", "--set", "train.val_every=2", "--set", "train.batch_size=2"]
    with pytest.raises(SystemExit) as exc:
        main(args)
    _, err = capsys.readouterr()
    assert exc.value.code == 0, err
    assert "validation: the last 4 frames of only (frames 8..11)" in err
    assert (tmp_path / "run/checkpoints/best.safetensors").exists()


def test_too_few_windows_for_a_batch_is_a_one_line_error(tmp_path, capsys):
    _clips(tmp_path / "one", ["only"], frames=8)
    args = ["--threads", "1", "train", "--config", "convlstm-mmnist-tiny", "--data", str(tmp_path / "one"),
            "--out", str(tmp_path / "run"), *[x for kv in BASE for x in ("--set", kv)], "--set", "train.steps=2"]
    with pytest.raises(SystemExit) as exc:
        main(args)
    _, err = capsys.readouterr()
    assert exc.value.code == 2 and "training windows cannot fill one batch of 8" in err and "--batch-size" in err
    assert len(err.strip().splitlines()) <= 2 and not (tmp_path / "run").exists()

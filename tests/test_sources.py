"""Input expansion (files, frame folders, folders of clips, globs, stdin), sharding, output names."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vpcli.errors import InputError, UsageError
from vpcli.io.sources import expand_inputs, input_name, input_names, natural_key, shard


def _video(path: Path) -> Path:
    # Expansion looks at names and folder contents only; the bytes need not decode.
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00" * 16)
    return path


def _frames(folder: Path, n: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(folder / f"{i:03d}.png")
    return folder


@pytest.fixture()
def tree(tmp_path, monkeypatch):
    """clips/{v2.mp4, v10.mp4, a.gif, notes.txt, .hidden.part.mp4, shot/ (frames), deep/more/x.mp4}"""
    monkeypatch.chdir(tmp_path)
    clips = tmp_path / "clips"
    for name in ["v2.mp4", "v10.mp4", "a.gif", ".v3.part.mp4"]:
        _video(clips / name)
    (clips / "notes.txt").write_text("not a clip")
    _frames(clips / "shot")
    _video(clips / "deep" / "more" / "x.mp4")
    _frames(clips / "deep" / "frames1")
    return tmp_path


def names(paths):
    return [p.as_posix() for p in paths]


def test_natural_key_orders_numbers_by_value():
    assert sorted(["f10.png", "f2.png", "F1.png"], key=natural_key) == ["F1.png", "f2.png", "f10.png"]


def test_single_file_and_frame_folder(tree):
    assert names(expand_inputs(["clips/v2.mp4"])) == ["clips/v2.mp4"]
    assert names(expand_inputs(["clips/a.gif"])) == ["clips/a.gif"]
    assert names(expand_inputs(["clips/shot"])) == ["clips/shot"]  # a frame folder is ONE input
    with pytest.raises(InputError, match="not a video file"):
        expand_inputs(["clips/notes.txt"])


def test_folder_of_clips_natural_order(tree):
    got = names(expand_inputs(["clips"]))
    # Natural order, hidden temporaries and non-clips skipped, subfolders not searched.
    assert got == ["clips/a.gif", "clips/shot", "clips/v2.mp4", "clips/v10.mp4"]
    deep = names(expand_inputs(["clips"], recursive=True))
    assert deep == ["clips/a.gif", "clips/deep/frames1", "clips/deep/more/x.mp4",
                    "clips/shot", "clips/v2.mp4", "clips/v10.mp4"]


def test_empty_folder_errors_and_recursive_hint(tree):
    (tree / "empty").mkdir()
    with pytest.raises(InputError, match="no videos or frame folders in empty") as e:
        expand_inputs(["empty"])
    assert "--recursive" not in str(e.value)
    _video(tree / "nested" / "sub" / "x.mp4")
    with pytest.raises(InputError, match="no videos or frame folders in nested") as e:
        expand_inputs(["nested"])
    assert "--recursive" in str(e.value)


def test_missing_path_error(tree):
    with pytest.raises(InputError, match="input nope.mp4 does not exist") as e:
        expand_inputs(["nope.mp4"])
    assert e.value.hint and "glob" in e.value.hint


def test_globs(tree):
    assert names(expand_inputs(["clips/*.mp4"])) == ["clips/v2.mp4", "clips/v10.mp4"]
    # "**" spans folders; images inside frame folders and other files are not clips.
    assert names(expand_inputs(["clips/**"])) == [
        "clips/a.gif", "clips/deep/frames1", "clips/deep/more/x.mp4", "clips/shot", "clips/v2.mp4", "clips/v10.mp4"]
    with pytest.raises(InputError, match="matches nothing"):
        expand_inputs(["clips/*.avi"])
    with pytest.raises(InputError, match="no video or frame folder"):
        expand_inputs(["clips/*.txt"])


def test_spec_order_and_dedup(tree):
    got = names(expand_inputs(["clips/v10.mp4", "clips/*.mp4", "clips/shot", "./clips/shot/"]))
    assert got == ["clips/v10.mp4", "clips/v2.mp4", "clips/shot"]


def test_stdin(tree):
    stream = io.StringIO("# my list\nclips/v10.mp4\n\n  clips/shot  \nclips/v2.mp4\n")
    got = names(expand_inputs(["clips/a.gif", "-"], stdin=stream))
    assert got == ["clips/a.gif", "clips/v10.mp4", "clips/shot", "clips/v2.mp4"]  # stdin keeps its order
    with pytest.raises(InputError, match="no paths were given on stdin"):
        expand_inputs(["-"], stdin=io.StringIO("\n# nothing\n"))
    with pytest.raises(InputError, match="missing.mp4 does not exist"):
        expand_inputs(["-"], stdin=io.StringIO("missing.mp4\n"))
    with pytest.raises(UsageError):
        expand_inputs(["-", "-"], stdin=io.StringIO(""))


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_shard_partitions(n):
    items = [Path(f"clip{i}.mp4") for i in range(20)]
    shuffled = list(np.random.default_rng(n).permutation(items))
    shards = [shard(shuffled, k, n) for k in range(1, n + 1)]
    flat = [p for s in shards for p in s]
    assert len(flat) == len(items) and set(flat) == set(items)  # disjoint and complete
    assert max(map(len, shards)) - min(map(len, shards)) <= 1  # balanced
    assert shards == [shard(items, k, n) for k in range(1, n + 1)]  # independent of input order
    if n == 3:
        assert shards[0][:3] == [Path("clip0.mp4"), Path("clip3.mp4"), Path("clip6.mp4")]  # round-robin


@pytest.mark.parametrize("k,n", [(0, 2), (3, 2), (1, 0), (1.5, 2)])
def test_shard_rejects_bad_k_n(k, n):
    with pytest.raises(UsageError):
        shard(["a"], k, n)


def test_input_names(tree):
    assert input_name("clips/v2.mp4") == "v2"
    assert input_name("clips/shot") == "shot"
    assert input_name("clips/shot/") == "shot"
    os.chdir(tree / "clips" / "shot")
    assert input_name(".") == "shot"
    os.chdir(tree)
    # Duplicate stems from different folders get their parent folder; same folder -> extension.
    _video(tree / "b" / "v2.mp4")
    _video(tree / "clips" / "v2.gif")
    paths = ["clips/v2.mp4", "b/v2.mp4", "clips/a.gif", "clips/v2.gif", "my clip.mp4"]
    got = input_names(paths)
    assert got == ["clips_v2_mp4", "b_v2", "a", "clips_v2_gif", "my_clip"]
    assert len(set(got)) == len(got)
    assert input_names(list(reversed(paths))) == list(reversed(got))  # order does not matter
    assert input_name("b/v2.mp4", among=paths) == "b_v2"

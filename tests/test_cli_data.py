"""`vpcli data info` and `vpcli data convert` end to end, including bad inputs."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from vpcli.cli.app import main
from vpcli.io.video import read_video, write_video


def run(capsys, *args):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


@pytest.fixture
def clips(tmp_path, small_clip):
    d = tmp_path / "clips"
    d.mkdir()
    shutil.copy(small_clip, d / "real.mp4")
    rng = np.random.default_rng(0)
    write_video(d / "synthetic.mkv", rng.integers(0, 256, (7, 32, 48, 3), dtype=np.uint8), fps=10, lossless=True)
    return d


def test_info_json_reports_counts(capsys, clips):
    code, out, _ = run(capsys, "data", "info", clips, "--json")
    assert code == 0
    recs = {json.loads(line)["input"].split("/")[-1]: json.loads(line) for line in out.splitlines()}
    assert recs["real.mp4"]["frames"] == 120 and recs["real.mp4"]["width"] == 176
    assert recs["synthetic.mkv"]["frames"] == 7 and recs["synthetic.mkv"]["height"] == 32


def test_convert_lossless_roundtrip_and_meta(capsys, clips, tmp_path):
    out = tmp_path / "out"
    code, stdout, _ = run(capsys, "data", "convert", clips / "synthetic.mkv", "--out", out, "--format", "png",
                          "--start", "2", "--stride", "2", "--json")
    assert code == 0, stdout
    frames, _ = read_video(out / "synthetic" / "frames")
    src, _ = read_video(clips / "synthetic.mkv")
    assert np.array_equal(frames, src[2::2])
    meta = json.loads((out / "synthetic" / "meta.json").read_text())
    assert meta["frames"] == 3 and meta["stride"] == 2 and meta["source"]["frames"] == 7


def test_existing_output_is_kept_without_overwrite(capsys, clips, tmp_path):
    out = tmp_path / "out"
    assert run(capsys, "data", "convert", clips / "synthetic.mkv", "--out", out)[0] == 0
    before = (out / "synthetic" / "video.mp4").read_bytes()
    code, _, err = run(capsys, "data", "convert", clips / "synthetic.mkv", "--out", out, "--end", "3")
    assert code == 1 and "already exists" in err and "--overwrite" in err
    assert (out / "synthetic" / "video.mp4").read_bytes() == before
    assert run(capsys, "data", "convert", clips / "synthetic.mkv", "--out", out, "--end", "3", "--overwrite")[0] == 0


@pytest.mark.parametrize("case", ["missing", "empty-folder", "text-as-mp4", "truncated", "too-short"])
def test_bad_inputs_give_one_line_and_nonzero_exit(capsys, tmp_path, real_clip, case):
    target = tmp_path / "bad"
    extra = []
    if case == "missing":
        target = tmp_path / "nope.mp4"
    elif case == "empty-folder":
        target.mkdir()
        (target / "notes.txt").write_text("no videos here")
    elif case == "text-as-mp4":
        target = tmp_path / "fake.mp4"
        target.write_text("this is not a video\n" * 10)
    elif case == "truncated":
        target = tmp_path / "half.mp4"
        data = real_clip.read_bytes()
        target.write_bytes(data[: len(data) // 2])
    elif case == "too-short":
        target = real_clip
        extra = ["--start", "200", "--end", "400"]
    out = tmp_path / "out"
    code, _, err = run(capsys, "data", "convert", target, "--out", out, *extra)
    if case == "truncated" and code == 0:
        # FFmpeg decodes the frames that are present; the output must then be complete and valid.
        frames, _ = read_video(next(out.glob("*/video.mp4")))
        assert 0 < len(frames) < 250
        return
    assert code != 0
    assert "Traceback" not in err and err.strip().splitlines()[0].startswith("error:")
    assert not any(p.name.endswith(".part") or ".part." in p.name for p in out.rglob("*")) if out.exists() else True
    assert not list(out.glob("*/video.mp4")) if out.exists() else True


def test_unwritable_output_folder(capsys, clips, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    code, _, err = run(capsys, "data", "convert", clips / "synthetic.mkv", "--out", blocker / "sub")
    assert code == 2 and "error:" in err and "--out" in err  # a usage error, found before any input is read


def test_shard_splits_inputs_disjointly(capsys, clips):
    names = []
    for k in (1, 2):
        code, out, _ = run(capsys, "data", "info", clips, "--shard", f"{k}/2", "--json")
        assert code == 0
        names.append({json.loads(line)["input"] for line in out.splitlines()})
    assert names[0].isdisjoint(names[1]) and len(names[0] | names[1]) == 2


def test_paths_from_stdin(capsys, clips, monkeypatch):
    import io
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{clips / 'real.mp4'}\n\n# comment\n"))
    code, out, _ = run(capsys, "data", "info", "-", "--json")
    assert code == 0 and len(out.splitlines()) == 1 and json.loads(out)["frames"] == 120


def test_generators_split_and_info_over_generated_data(capsys, tmp_path):
    root = tmp_path / "data"
    assert run(capsys, "data", "moving-digits", "--out", root / "md", "--num", "3", "--length", "6",
               "--format", "png")[0] == 0
    assert run(capsys, "data", "synth-street", "--out", root / "st", "--num", "2", "--length", "3",
               "--size", "32x64")[0] == 0
    code, out, _ = run(capsys, "data", "info", root, "--recursive", "--json")
    assert code == 0
    recs = [json.loads(line) for line in out.splitlines()]
    # a synth-street sequence is one clip (its frames/), its labels/ is a companion, not a clip
    assert sorted(r["frames"] for r in recs) == [3, 3, 6, 6, 6]
    assert not any("labels" in r["input"] for r in recs)
    code, out, _ = run(capsys, "data", "split", root, "--out", tmp_path / "splits", "--json")
    assert code == 0 and sum(json.loads(out)["counts"].values()) == 5
    listed = [ln for n in ("train", "val", "test") for ln in (tmp_path / "splits" / f"{n}.txt").read_text().split()]
    assert sorted(listed) == ["md/seq_00000", "md/seq_00001", "md/seq_00002", "st/seq_00000", "st/seq_00001"]
    code, _, err = run(capsys, "data", "split", root, "--out", tmp_path / "splits")
    assert code == 1 and "already exists" in err


def test_moving_digits_cli_is_bit_identical(capsys, tmp_path):
    for name in ("a", "b"):
        assert run(capsys, "data", "moving-digits", "--out", tmp_path / name, "--num", "4", "--length", "5",
                   "--seed", "7")[0] == 0
    fa, fb = sorted((tmp_path / "a").glob("*.npz")), sorted((tmp_path / "b").glob("*.npz"))
    assert len(fa) == 1 and fa[0].read_bytes() == fb[0].read_bytes()

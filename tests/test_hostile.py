"""What a hostile manifest, a second writer and a damaged input do (issue 13, items 1-4 and 7).

Each test reproduces one case through the CLI where a user would meet it (or at the layer that
every command shares) and checks the one-line error, the exit code, and that nothing was lost
or written outside the output or the cache.
"""
from __future__ import annotations

import dataclasses
import os
import re
import warnings
from pathlib import Path

import av
import numpy as np
import pytest

from hub_server import entry, hub, sha256, weights_env, write_manifest  # noqa: F401  (fixtures)
from test_predict import make_run, run  # run(capsys, *args): vpcli in-process -> (exit code, stdout, stderr)
from vpcli.errors import OutputError, VideoError, WeightsError
from vpcli.io import atomic
from vpcli.io import video
from vpcli.io.video import iter_frames, probe, read_video, write_video

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tree(root: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes | None]:
    """Every path under ``root`` (folders as None, files with their bytes), except under ``skip``."""
    found: dict[str, bytes | None] = {}
    for folder, dirs, files in os.walk(root):
        rel = Path(folder).relative_to(root)
        dirs[:] = [d for d in dirs if (rel / d).parts[0] not in skip]
        for d in dirs:
            found[str(rel / d)] = None
        for f in files:
            if (rel / f).parts[0] not in skip:
                found[str(rel / f)] = Path(folder, f).read_bytes()
    return found


def one_line_error(err: str) -> str:
    """The one ``error: ...`` line on stderr (per-input commands add a summary of failed inputs)."""
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err and "internal error" not in err, err
    return lines[0]


# ---------------------------------------------------------------------------------------------
# 1. paths from a manifest stay inside the cache / the manifest's folder

TRAVERSAL = "/files/..%2F..%2F..%2Fvictim"  # unquoted: ../../../victim, three folders above <cache>/url/<sha>/


@pytest.mark.parametrize("victim_exists", [True, False], ids=["folder-outside-exists", "nothing-outside"])
def test_url_whose_file_name_escapes_the_cache_is_refused(capsys, hub, weights_env, victim_exists):
    tmp = weights_env
    data = b"weights bytes"
    url = hub.page(TRAVERSAL, data, content_type="application/octet-stream")
    manifest = write_manifest(tmp / "evil.yaml", [entry("evil", {"url": url}, data)])
    victim = tmp / "victim"  # where <VPCLI_CACHE>/url/<sha>/../../../victim lands
    if victim_exists:
        victim.mkdir()
        (victim / "thesis.tex").write_text("three years of work")
    before = tree(tmp)
    code, out, err = run(capsys, "weights", "download", "evil", "--manifest", manifest)
    line = one_line_error(err)
    assert code == 2 and out == ""
    assert "weights[0] 'evil'" in line and "'source.url'" in line and "../../../victim" in line
    assert "filename" in line  # the hint says how to name the file
    assert hub.count() == 0  # refused while reading the manifest, before any download
    assert tree(tmp) == before  # the victim folder and its file survive; nothing new anywhere


def test_cache_path_outside_the_cache_is_refused_even_without_the_manifest_check(hub, weights_env):
    # Defence in depth: an entry built in code (no manifest validation) with an escaping file name.
    from vpcli.weights import UrlSource, load_manifest, resolve_entry

    tmp = weights_env
    data = b"weights bytes"
    url = hub.page(TRAVERSAL, data, content_type="application/octet-stream")
    good = load_manifest(write_manifest(tmp / "m.yaml", [entry("evil", {"url": hub.url("/files/w.bin")}, data)]))[0]
    evil = dataclasses.replace(good, source=UrlSource(url=url))
    before = tree(tmp)
    with pytest.raises(WeightsError, match=r"outside the cache") as exc:
        resolve_entry(evil, trust_first_use=True)
    assert "'evil'" in exc.value.message and "\n" not in str(exc.value)
    assert hub.count() == 0 and tree(tmp) == before


@pytest.mark.parametrize("filename", ["../../../victim.safetensors", "sub/../../x.safetensors", "/etc/x.safetensors",
                                      "sub//x.safetensors", "..\\x.safetensors"])
def test_hub_filename_that_leaves_the_repo_is_a_manifest_error(capsys, hub, weights_env, monkeypatch, filename):
    tmp = weights_env
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    revision = hub.add("vpcli/test-weights", filename, b"x")
    source = {"hub": {"repo_id": "vpcli/test-weights", "revision": revision, "filename": filename}}
    manifest = write_manifest(tmp / "evil.yaml", [entry("evil", source, b"x")])
    before = tree(tmp)
    code, out, err = run(capsys, "weights", "download", "evil", "--manifest", manifest)
    line = one_line_error(err)
    assert code == 2 and out == ""
    assert "weights[0] 'evil'" in line and "'source.hub.filename'" in line and "internal error" not in line
    assert hub.count() == 0 and tree(tmp) == before


def test_bundled_path_outside_the_manifest_folder_is_refused(capsys, weights_env):
    tmp = weights_env
    outside = tmp / "secret.safetensors"
    outside.write_bytes(b"not shipped with this manifest")
    folder = tmp / "pkg"
    folder.mkdir()
    manifest = write_manifest(folder / "manifest.yaml",
                              [entry("evil", {"bundled": "../secret.safetensors"}, outside.read_bytes())])
    code, out, err = run(capsys, "weights", "download", "evil", "--manifest", manifest)
    line = one_line_error(err)
    assert code == 2 and out == ""
    assert "weights[0] 'evil'" in line and "'source.bundled'" in line and "outside" in line
    assert outside.read_bytes() == b"not shipped with this manifest"
    # A path that only passes through '..' and stays inside is still fine.
    (folder / "assets").mkdir()
    (folder / "ok.safetensors").write_bytes(b"ok")
    manifest = write_manifest(folder / "manifest.yaml",
                              [entry("fine", {"bundled": "assets/../ok.safetensors"}, b"ok")])
    code, _, err = run(capsys, "weights", "download", "fine", "--manifest", manifest)
    assert code == 0, err


# ---------------------------------------------------------------------------------------------
# 2. the sha256 memo cannot be fooled by restoring size and mtime


def test_in_place_edit_with_restored_mtime_is_caught_on_load(capsys, weights_env):
    tmp = weights_env
    folder = tmp / "pkg"
    folder.mkdir()
    weights = folder / "w.safetensors"
    data = bytes(range(256)) * 64
    weights.write_bytes(data)
    manifest = write_manifest(folder / "manifest.yaml", [entry("w", {"bundled": "w.safetensors"}, data)])
    code, _, err = run(capsys, "weights", "download", "w", "--manifest", manifest)
    assert code == 0, err  # hashed once; the hash is remembered (in memory and in the cache's JSON)

    st = os.stat(weights)
    with open(weights, "r+b") as f:  # flip one byte in place: same inode, same size
        f.seek(1000)
        f.write(bytes([data[1000] ^ 0xFF]))
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))  # and put the times back
    st2 = os.stat(weights)
    assert (st2.st_size, st2.st_mtime_ns, st2.st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)

    code, out, err = run(capsys, "weights", "download", "w", "--manifest", manifest)
    line = one_line_error(err)
    assert code == 1 and "sha256 mismatch for weights 'w'" in line and f"expected {sha256(data)}" in line
    assert weights.exists()  # a bundled file is reported, never deleted

    from vpcli.weights import hashing  # a new process (empty in-memory memo) reads the JSON memo: same answer
    hashing.clear_memory()
    code, _, err = run(capsys, "weights", "download", "w", "--manifest", manifest)
    assert code == 1 and "sha256 mismatch" in err


# ---------------------------------------------------------------------------------------------
# 3. a second writer to the same output


def test_atomic_dir_refuses_a_folder_that_appeared_while_writing(tmp_path):
    final = tmp_path / "out"
    with pytest.raises(OutputError, match="appeared while") as exc:
        with atomic.atomic_dir(final) as tmp:
            (tmp / "ours.txt").write_text("ours")
            final.mkdir()  # the other writer finished first
            (final / "theirs.txt").write_text("theirs")
    assert "--overwrite" in str(exc.value) and "--out" in str(exc.value)
    assert os.listdir(tmp_path) == ["out"] and os.listdir(final) == ["theirs.txt"]  # no temporary left
    assert (final / "theirs.txt").read_text() == "theirs"


def test_atomic_path_refuses_a_file_that_appeared_while_writing(tmp_path):
    final = tmp_path / "w.safetensors"
    with pytest.raises(OutputError, match="appeared while"):
        with atomic.atomic_path(final, overwrite=False) as tmp:
            tmp.write_bytes(b"ours")
            final.write_bytes(b"theirs")
    assert os.listdir(tmp_path) == ["w.safetensors"] and final.read_bytes() == b"theirs"


def test_overwrite_still_replaces_what_appeared(tmp_path):
    final = tmp_path / "out"
    with atomic.atomic_dir(final, overwrite=True) as tmp:
        (tmp / "ours.txt").write_text("ours")
        final.mkdir()
        (final / "theirs.txt").write_text("theirs")
    assert os.listdir(final) == ["ours.txt"] and os.listdir(tmp_path) == ["out"]
    with atomic.atomic_path(tmp_path / "f", overwrite=True) as tmp:
        tmp.write_bytes(b"ours")
        (tmp_path / "f").write_bytes(b"theirs")
    assert (tmp_path / "f").read_bytes() == b"ours"


def test_no_replace_fallbacks_without_renameat2(tmp_path, monkeypatch):
    # Kernels/filesystems without RENAME_NOREPLACE: os.link for files, an exclusive mkdir for folders.
    monkeypatch.setattr(atomic, "_renameat2", None)
    with pytest.raises(OutputError, match="appeared while"):
        with atomic.atomic_path(tmp_path / "f", overwrite=False) as tmp:
            tmp.write_bytes(b"ours")
            (tmp_path / "f").write_bytes(b"theirs")
    with pytest.raises(OutputError, match="appeared while"):
        with atomic.atomic_dir(tmp_path / "d") as tmp:
            (tmp_path / "d").mkdir()
    assert sorted(os.listdir(tmp_path)) == ["d", "f"] and (tmp_path / "f").read_bytes() == b"theirs"
    with atomic.atomic_path(tmp_path / "g", overwrite=False) as tmp:
        tmp.write_bytes(b"ours")
    with atomic.atomic_dir(tmp_path / "e") as tmp:
        (tmp / "x").write_text("x")
    assert (tmp_path / "g").read_bytes() == b"ours" and os.listdir(tmp_path / "e") == ["x"]
    assert sorted(os.listdir(tmp_path)) == ["d", "e", "f", "g"]


def test_two_predict_runs_into_one_out_do_not_replace_each_other(capsys, tmp_path, monkeypatch):

    clip = write_video(tmp_path / "clip.mkv", np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), np.uint8),
                       lossless=True)
    out = tmp_path / "p"
    theirs = out / "clip"
    real_close = video.VideoWriter.close

    def close_then_the_other_run_finishes(self):
        path = real_close(self)
        if not theirs.exists():  # the other `vpcli predict` publishes while this one is still writing
            theirs.mkdir(parents=True)
            (theirs / "meta.json").write_text('{"theirs": true}')
        return path

    monkeypatch.setattr(video.VideoWriter, "close", close_then_the_other_run_finishes)
    code, out_text, err = run(capsys, "predict", clip, "--method", "copy-last", "--context", 2, "--horizon", 2,
                              "--out", out)
    assert code == 1 and out_text == ""
    assert "appeared while" in err and "--overwrite" in err and "Traceback" not in err
    assert os.listdir(theirs) == ["meta.json"] and (theirs / "meta.json").read_text() == '{"theirs": true}'
    assert os.listdir(out) == ["clip"]  # no hidden temporary left beside it


# ---------------------------------------------------------------------------------------------
# 4. a file output never replaces a folder


def test_export_overwrite_never_replaces_a_folder_with_a_file(capsys, tmp_path):
    run_dir = make_run(tmp_path / "r", "convlstm-mmnist-tiny", [])
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    before = tree(tmp_path)
    code, out, err = run(capsys, "weights", "export", run_dir, "--name", "tiny", "--out", target, "--overwrite")
    line = one_line_error(err)
    assert code == 1 and out == "" and "is a folder" in line and "never replaces a folder" in line
    assert tree(tmp_path) == before  # the folder, its file, the run: all as they were; no manifest beside it
    # The run folder itself as --out: the same.
    code, _, err = run(capsys, "weights", "export", run_dir, "--name", "tiny", "--out", run_dir, "--overwrite")
    assert code == 1 and "is a folder" in err and tree(tmp_path) == before


def test_atomic_path_never_replaces_a_folder(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("x")
    with pytest.raises(OutputError, match="is a folder"):
        with atomic.atomic_path(tmp_path / "d", overwrite=True) as tmp:
            tmp.write_bytes(b"file")
    # ... also when the folder appears while the file is being written
    with pytest.raises(OutputError, match="is a folder"):
        with atomic.atomic_path(tmp_path / "e", overwrite=True) as tmp:
            tmp.write_bytes(b"file")
            (tmp_path / "e").mkdir()
            (tmp_path / "e" / "y").write_text("y")
    assert sorted(os.listdir(tmp_path)) == ["d", "e"]
    assert (tmp_path / "d" / "x").read_text() == "x" and (tmp_path / "e" / "y").read_text() == "y"


# ---------------------------------------------------------------------------------------------
# 7. truncated videos


def truncated_mp4(folder: Path, n: int = 120, keep: float = 0.36) -> Path:
    """An H.264 MP4 declaring ``n`` frames whose data is cut after ``keep`` of its bytes (its index
    is at the front, movflags=faststart, so the cut copy still opens: a download that stopped)."""
    full = folder / "full.mp4"
    with av.open(str(full), "w", options={"movflags": "+faststart"}) as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for f in np.random.default_rng(1).integers(0, 256, (n, 48, 64, 3), dtype=np.uint8):
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode(None))
    data = full.read_bytes()
    cut = folder / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * keep)])
    full.unlink()
    return cut


DECODED = re.compile(r"decoded (\d+) of the 120 frames the container declares")


def test_truncated_video_is_an_error_in_every_reader(tmp_path):
    cut = truncated_mp4(tmp_path)
    assert probe(cut).num_frames == 120
    with pytest.raises(VideoError, match=DECODED) as exc:
        list(iter_frames(cut))
    have = int(DECODED.search(exc.value.message)[1])
    assert 0 < have < 100
    with pytest.raises(VideoError, match=DECODED):
        read_video(cut)
    with pytest.raises(VideoError, match=DECODED):
        list(iter_frames(cut, start=10, stride=3))
    # Asked for explicitly: the frames that decode, and a warning naming both counts.
    with pytest.warns(video.TruncatedVideoWarning, match=f"decoded {have} of the 120 frames the container declares"):
        frames, _ = read_video(cut, allow_truncated=True)
    assert len(frames) == have
    with pytest.warns(video.TruncatedVideoWarning, match=DECODED):
        assert len(list(iter_frames(cut, allow_truncated=True))) == have


def test_unknown_or_matching_frame_counts_are_not_refused(tmp_path):
    # Matroska declares no count (0): a cut file decodes what it has, as before.
    frames = np.random.default_rng(2).integers(0, 256, (40, 32, 48, 3), dtype=np.uint8)
    mkv = write_video(tmp_path / "c.mkv", frames, lossless=True)
    data = mkv.read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[: len(data) // 2])
    with av.open(str(tmp_path / "cut.mkv")) as c:
        assert c.streams.video[0].frames == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning either
        assert 0 < len(list(iter_frames(tmp_path / "cut.mkv"))) < 40
        for name in ("a.mp4", "a.gif", "a_frames", "a.avi"):  # complete files: no error, no warning
            path = write_video(tmp_path / name, frames[:9])
            assert len(read_video(path)[0]) == 9 == probe(path).num_frames


def test_a_count_one_frame_off_only_warns(tmp_path):
    # A declared count a frame above what decodes is a header quirk more often than a cut file:
    # a warning naming both counts. Falling clearly short (here 3 of 120) is an error.
    with pytest.warns(video.TruncatedVideoWarning, match="decoded 119 of the 120 frames the container declares"):
        video._check_decoded(tmp_path / "a.mp4", 119, 120, allow_truncated=False)
    with pytest.raises(VideoError, match="decoded 117 of the 120 frames the container declares"):
        video._check_decoded(tmp_path / "a.mp4", 117, 120, allow_truncated=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        video._check_decoded(tmp_path / "a.mp4", 120, 120, allow_truncated=False)
        video._check_decoded(tmp_path / "a.mkv", 7, 0, allow_truncated=False)  # 0: the container does not say


@pytest.mark.parametrize("command", ["flow", "segment", "data convert"])
def test_truncated_video_is_refused_by_every_command(capsys, tmp_path, command):
    cut = truncated_mp4(tmp_path)
    out = tmp_path / "out"
    args = {"flow": ["flow", cut, "--out", out, "--method", "dis"],
            "data convert": ["data", "convert", cut, "--out", out]}.get(command)
    if command == "segment":
        from test_segment_cli import save_tiny
        args = ["segment", cut, "--out", out, "--weights", save_tiny(tmp_path)]
    before = tree(tmp_path, skip=("out",))
    code, stdout, err = run(capsys, *args)
    line = one_line_error(err)
    assert code == 1, err
    assert DECODED.search(line) and "cut.mp4" in line
    assert not out.exists() or os.listdir(out) == []  # no output, no hidden temporary
    assert tree(tmp_path, skip=("out",)) == before


# ---------------------------------------------------------------------------------------------
# 8-12. every mistake is one line with a hint (exit 2 for usage); SIGTERM cleans up like Ctrl-C
#
# The one shape every error has: ``error: <what> (hint: <how>)`` on one line, nothing on stdout,
# no traceback, and nothing written (the tree of tmp_path is compared before and after).

HINTED = re.compile(r"error: .+ \(hint: .+\)")


def usage_error(code: int, out: str, err: str) -> str:
    """Exit 2, no stdout, and stderr exactly one hinted ``error:`` line (Click's usage block is four)."""
    lines = err.splitlines()
    assert code == 2 and out == "" and len(lines) == 1 and HINTED.fullmatch(lines[0]), (code, out, err)
    assert "internal error" not in err and "Usage:" not in err
    return lines[0]


def hinted_error(err: str) -> str:
    """The one ``error:`` line of a per-input failure, with its hint (a summary may follow it)."""
    line = one_line_error(err)
    assert HINTED.fullmatch(line), err
    return line


@pytest.fixture
def clip(tmp_path) -> Path:
    return write_video(tmp_path / "clip.mkv", np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), np.uint8),
                       lossless=True)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A real two-step `vpcli train` run folder (step checkpoint folder, state.pt, config.yaml)."""
    from vpcli import api
    out = tmp_path_factory.mktemp("trained") / "run"
    api.train(api.TrainOptions(out=out, config="convlstm-mmnist-tiny", overrides=["train.steps=2"]))
    return out


# --- 8. the device is checked up front, the same way in every command ------------------------

def device_case(command: str, tmp: Path, clip: Path) -> list:
    out = tmp / "out"
    if command == "segment":
        from test_segment_cli import save_tiny
        return ["segment", clip, "--weights", save_tiny(tmp), "--out", out]
    return {"predict": ["predict", clip, "--method", "copy-last", "--context", 2, "--horizon", 2, "--out", out],
            "eval": ["eval", "--method", "copy-last", "--data", "synthetic:moving-digits", "--num-sequences", 2,
                     "--samples", 1, "--out", out],
            "train": ["train", "--config", "convlstm-mmnist-tiny", "--set", "train.steps=1", "--out", out],
            "flow": ["flow", clip, "--out", out],
            "flow pwcnet": ["flow", clip, "--method", "pwcnet", "--out", out]}[command]


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "nonsense", "gpu:0"])
@pytest.mark.parametrize("command", ["predict", "eval", "train", "segment", "flow", "flow pwcnet"])
def test_unusable_device_is_a_usage_error_in_every_command(capsys, tmp_path, monkeypatch, clip, command, device):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same answer on a machine with a GPU
    args = device_case(command, tmp_path, clip)
    before = tree(tmp_path)
    line = usage_error(*run(capsys, *args, "--device", device))
    assert f"--device {device if device.startswith('cuda') else repr(device)}" in line and "--device cpu" in line
    assert ("CUDA is not available" if device.startswith("cuda") else "is not a device") in line
    assert tree(tmp_path) == before  # refused before any weights, data or output were touched


def test_device_check_accepts_what_the_machine_has(monkeypatch):
    from vpcli.engine.options import check_device
    from vpcli.errors import UsageError
    assert check_device("cpu") == "cpu"
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check_device("cuda") == "cuda" and check_device("cuda:1") == "cuda:1"
    with pytest.raises(UsageError, match=r"--device cuda:2: this machine has 2 CUDA devices") as exc:
        check_device("cuda:2")
    assert exc.value.hint == "use cuda:0 .. cuda:1, or --device cpu"


# --- 9. damaged weights, code in a resume state, hostile sizes, endless horizons ---------------

def damage(path: Path, how: str) -> Path:
    data = path.read_bytes()
    path.write_bytes({"garbage": b"\x89not safetensors at all" * 64, "empty": b"",
                      "truncated": data[: len(data) // 2]}[how])
    return path


@pytest.mark.parametrize("how", ["garbage", "empty", "truncated"])
@pytest.mark.parametrize("command", ["predict", "predict file", "eval", "segment", "flow pwcnet", "train --init"])
def test_damaged_weights_are_one_line_errors(capsys, tmp_path, clip, command, how):
    out = tmp_path / "out"
    if command == "segment":
        from test_segment_cli import save_tiny
        weights = damage(save_tiny(tmp_path), how)
        args = ["segment", clip, "--weights", weights, "--out", out]
    elif command == "flow pwcnet":
        from vpcli.weights.manifest import PACKAGE_DIR
        weights = tmp_path / "pwc.safetensors"
        weights.write_bytes((PACKAGE_DIR / "assets" / "weights" / "pwcnet-slim-synth.safetensors").read_bytes())
        args = ["flow", clip, "--method", "pwcnet", "--weights", damage(weights, how), "--out", out]
    else:
        run_dir = make_run(tmp_path / "r", "convlstm-mmnist-tiny", ["data.channels=3"])
        weights = damage(run_dir / "checkpoints" / "last.safetensors", how)
        args = {"predict": ["predict", clip, "--weights", run_dir, "--horizon", 2, "--out", out],
                "predict file": ["predict", clip, "--weights", weights, "--horizon", 2, "--out", out],
                "eval": ["eval", "--weights", run_dir, "--num-sequences", 2, "--samples", 1, "--out", out],
                "train --init": ["train", "--config", "convlstm-mmnist-tiny", "--set", "train.steps=1",
                                 "--init", weights, "--out", out]}[command]
    before = tree(tmp_path, skip=("out",))
    code, stdout, err = run(capsys, *args)
    line = hinted_error(err)
    assert code == 1 and stdout == "", err
    assert weights.name in line and ("not a readable safetensors file" in line or "cannot read" in line), line
    assert tree(tmp_path, skip=("out",)) == before
    assert not out.exists() or os.listdir(out) == []  # no output, no temporary


class _RunsCode:
    """Unpickling this creates a file: the proof that code ran (it must not)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_resume_state_that_is_a_pickle_carrying_code_is_refused_in_one_line(capsys, tmp_path, trained_run):
    import shutil

    import torch
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    (state,) = (run_dir / "checkpoints").glob("*/state.pt")
    marker = tmp_path / "code-ran"
    torch.save({"step": 2, "optimizers": {}, "payload": _RunsCode(str(marker))}, state)
    before = tree(tmp_path)
    code, out, err = run(capsys, "train", "--resume", run_dir, "--set", "train.steps=4")
    line = hinted_error(err)
    assert code == 1 and out == "" and err.count("\n") == 1, err
    assert f"{state} is not a vpcli training state file; nothing was loaded" in line
    assert "weights_only" not in err and not marker.exists()
    assert tree(tmp_path) == before  # the run folder as it was: no metrics line, no new checkpoint


@pytest.mark.parametrize("out", ["file", "file/run"])
def test_train_out_naming_a_file_is_a_usage_error(capsys, tmp_path, out):
    (tmp_path / "file").write_text("my notes")
    before = tree(tmp_path)
    line = usage_error(*run(capsys, "train", "--config", "convlstm-mmnist-tiny", "--out", tmp_path / out))
    assert "is a file" in line and "--out" in line
    assert tree(tmp_path) == before


@pytest.mark.parametrize("size", ["1x1", "4x64", "11x11"])
def test_flow_size_below_what_dis_takes_is_refused_before_opencv(capsys, tmp_path, clip, size):
    before = tree(tmp_path)
    line = usage_error(*run(capsys, "flow", clip, "--size", size, "--out", tmp_path / "out"))
    assert f"--size {size}: both sides must be at least 12 pixels" in line
    assert tree(tmp_path) == before


def test_flow_of_a_clip_too_small_for_dis_is_an_input_error(capsys, tmp_path):
    tiny = write_video(tmp_path / "tiny.mkv", np.zeros((3, 6, 6, 3), np.uint8), lossless=True)
    code, out, err = run(capsys, "flow", tiny, "--out", tmp_path / "out")
    line = hinted_error(err)
    assert code == 1 and "6x6" in line and "--size" in line and "OpenCV" not in err
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []
    code, _, err = run(capsys, "flow", tiny, "--size", "12x12", "--out", tmp_path / "out")  # the limit itself works
    assert code == 0, err


@pytest.mark.parametrize("command", ["segment", "flow", "data convert", "eval"])
def test_sizes_past_the_documented_limit_are_refused(capsys, tmp_path, clip, command):
    from vpcli.io.sources import MAX_SIDE
    size = ["--size", "40000x40000"]
    args = {"segment": ["segment", clip, *size, "--out", tmp_path / "out"],
            "flow": ["flow", clip, *size, "--out", tmp_path / "out"],
            "data convert": ["data", "convert", clip, *size, "--out", tmp_path / "out"],
            "eval": ["eval", "--method", "copy-last", *size, "--out", tmp_path / "out"]}[command]
    before = tree(tmp_path)
    line = usage_error(*run(capsys, *args))
    assert f"--size 40000x40000: sides are limited to {MAX_SIDE} pixels" in line
    assert tree(tmp_path) == before


@pytest.mark.parametrize("command", ["segment", "flow"])
def test_a_size_and_batch_that_do_not_fit_in_memory_are_refused_before_allocating(capsys, tmp_path, clip,
                                                                                   monkeypatch, command):
    from vpcli.engine import options
    monkeypatch.setattr(options, "available_memory", lambda device="cpu": 2 ** 30)  # a machine with 1 GiB free
    if command == "segment":
        from test_segment_cli import save_tiny
        args = ["segment", clip, "--weights", save_tiny(tmp_path), "--size", "4096x4096", "--batch-size", 8]
    else:
        args = ["flow", clip, "--size", "4096x4096", "--batch-size", 8, "--direction", "both"]
    before = tree(tmp_path)
    line = usage_error(*run(capsys, *args, "--out", tmp_path / "out"))
    assert "4096x4096" in line and "GiB of memory on cpu, but only 1.0 GiB is free" in line
    assert "--batch-size" in line.split("(hint:")[1]
    assert tree(tmp_path) == before
    # What fits still runs.
    code, _, err = run(capsys, *args[:args.index("--size")], "--size", "64x64", "--out", tmp_path / "out")
    assert code == 0, err


def test_long_horizons_report_progress_on_stderr(capsys, tmp_path, clip, monkeypatch):
    from vpcli.cli import render
    monkeypatch.setattr(render.PredictRenderer, "plain_every_s", 0.0)  # stderr is no terminal here: plain lines
    code, out, err = run(capsys, "predict", clip, "--method", "copy-last", "--context", 2, "--horizon", 40,
                         "--out", tmp_path / "p")
    assert code == 0 and out == "", err
    steps = re.findall(r"clip\.mkv: (\d+)/40 steps", err)
    assert [int(s) for s in steps] == list(range(1, 41))
    assert err.splitlines()[-1].startswith(f"{clip}: 1 x 40 frames")
    code, out, err = run(capsys, "predict", clip, "--method", "copy-last", "--context", 2, "--horizon", 40,
                         "--out", tmp_path / "q", "--json")
    assert code == 0 and "step" not in err and json_lines(out)[0]["frames"] == 40  # --json: records only


def json_lines(text: str) -> list[dict]:
    import json
    return [json.loads(line) for line in text.splitlines()]


# --- 10. Click's range and type errors, and every usage error, as one line with a hint --------

def _yaml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


USAGE_CASES = {
    # Click's own checks (range, type, unknown option, missing argument)
    "predict --horizon 0": (["predict", "CLIP", "--method", "copy-last", "--horizon", 0, "--out", "OUT"],
                            "'--horizon'"),
    "predict --samples 0": (["predict", "CLIP", "--method", "copy-last", "--samples", 0, "--out", "OUT"],
                            "'--samples'"),
    "predict --horizon abc": (["predict", "CLIP", "--horizon", "abc", "--out", "OUT"], "'--horizon'"),
    "predict --frobnicate": (["predict", "CLIP", "--frobnicate"], "--frobnicate"),
    "predict (no input)": (["predict", "--out", "OUT"], "missing argument"),
    "eval --samples 0": (["eval", "--method", "copy-last", "--samples", 0, "--out", "OUT"], "'--samples'"),
    "moving-digits --num 0": (["data", "moving-digits", "--num", 0, "--out", "OUT"], "'--num'"),
    "moving-digits --length 1": (["data", "moving-digits", "--length", 1, "--out", "OUT"], "'--length'"),
    # --out naming a file (or a path under one)
    "predict --out FILE": (["predict", "CLIP", "--method", "copy-last", "--out", "FILE"], "is a file"),
    "predict --out FILE/x": (["predict", "CLIP", "--method", "copy-last", "--out", "FILE/x"], "which is a file"),
    "segment --out FILE": (["segment", "CLIP", "--out", "FILE"], "is a file"),
    "eval --out FILE": (["eval", "--method", "copy-last", "--out", "FILE"], "is a file"),
    "moving-digits --out FILE": (["data", "moving-digits", "--out", "FILE"], "is a file"),
    # vpcli's own checks, which used to have no hint
    "predict --shard abc": (["predict", "CLIP", "--method", "copy-last", "--shard", "abc", "--out", "OUT"],
                            "--shard expects K/N"),
    "flow --shard 3/2": (["flow", "CLIP", "--shard", "3/2", "--out", "OUT"], "K must be between 1 and N"),
    "segment --size 0x0": (["segment", "CLIP", "--size", "0x0", "--out", "OUT"], "--size must be positive"),
    "flow --size 0x0": (["flow", "CLIP", "--size", "0x0", "--out", "OUT"], "--size must be positive"),
    "eval --size 0x0": (["eval", "--method", "copy-last", "--size", "0x0", "--out", "OUT"], "--size must be positive"),
    "synth-street --size 0x0": (["data", "synth-street", "--size", "0x0", "--out", "OUT"], "--size must be positive"),
    "eval --split nope": (["eval", "--method", "copy-last", "--split", "nope", "--out", "OUT"], "--split"),
    # data convert: the same mistakes exit 2 as in segment
    "convert --size 10x": (["data", "convert", "CLIP", "--size", "10x", "--out", "OUT"], "--size must be HxW"),
    "convert --size 0x0": (["data", "convert", "CLIP", "--size", "0x0", "--out", "OUT"], "--size must be positive"),
    "convert --start 5 --end 2": (["data", "convert", "CLIP", "--start", 5, "--end", 2, "--out", "OUT"],
                                  "--end must be an integer after --start 5"),
    "convert --fps -1": (["data", "convert", "CLIP", "--fps", -1, "--out", "OUT"], "--fps"),
    # configs: YAML syntax, types, --set
    "train --config bad YAML": (["train", "--config", "BADYAML", "--out", "OUT"], "is not valid YAML at line 4"),
    "train --config wrong type": (["train", "--config", "BADTYPE", "--out", "OUT"],
                                  "train.steps: expected an integer, got 'many'"),
    "train --config a list": (["train", "--config", "LISTYAML", "--out", "OUT"], "must hold a mapping"),
    "train --config missing.yaml": (["train", "--config", "MISSINGYAML", "--out", "OUT"], "does not exist"),
    "train --set wrong type": (["train", "--config", "convlstm-mmnist-tiny", "--set", "train.steps=abc",
                                "--out", "OUT"], "train.steps: expected an integer"),
    "train --set not a section": (["train", "--config", "convlstm-mmnist-tiny", "--set", "train.steps.x=1",
                                   "--out", "OUT"], "'steps' is not a section"),
    # manifests: YAML syntax and types
    "manifest bad YAML": (["weights", "list", "--manifest", "BADMANIFEST"], "not valid YAML"),
    "manifest wrong type": (["weights", "list", "--manifest", "TYPEMANIFEST"], "field 'name' must be"),
    "manifest entry not a mapping": (["weights", "list", "--manifest", "LISTMANIFEST"], "an entry must be a mapping"),
}


@pytest.mark.parametrize("case", list(USAGE_CASES))
def test_usage_errors_are_one_line_with_a_hint_and_exit_2(capsys, tmp_path, weights_env, clip, case):
    files = {
        "CLIP": clip, "OUT": tmp_path / "out", "FILE": _yaml(tmp_path / "notes.txt", "mine"),
        "FILE/x": tmp_path / "notes.txt" / "x",
        "BADYAML": _yaml(tmp_path / "bad.yaml", "method: convlstm\ntrain:\n  steps: 3\n lr: [1\n"),
        "BADTYPE": _yaml(tmp_path / "type.yaml", "method: convlstm\ntrain:\n  steps: many\n"),
        "LISTYAML": _yaml(tmp_path / "list.yaml", "- method: convlstm\n"),
        "MISSINGYAML": tmp_path / "missing.yaml",
        "BADMANIFEST": _yaml(tmp_path / "m1.yaml", "version: 1\nweights:\n  - name: a\n  task: [predictor\n"),
        "TYPEMANIFEST": _yaml(tmp_path / "m2.yaml", "version: 1\nweights:\n  - {name: 5, task: predictor, arch: x, "
                                                    "config: {}, source: {bundled: x.safetensors}, sha256: x, "
                                                    "license: MIT, trained_on: x, metrics: {}}\n"),
        "LISTMANIFEST": _yaml(tmp_path / "m3.yaml", "version: 1\nweights:\n  - just a string\n"),
    }
    args, expected = USAGE_CASES[case]
    args = [files.get(a, a) if isinstance(a, str) else a for a in args]
    before = tree(tmp_path)
    line = usage_error(*run(capsys, *args))
    assert expected in line, line
    assert tree(tmp_path) == before


# --- 11. SIGTERM (and SIGINT) mid-run: the unfinished output is removed, exit 143 (130) --------

def long_clip(folder: Path, frames: int = 3000) -> Path:
    """A small clip with many frames, so a command run on it lasts long enough to be signalled."""
    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, (16, 16, 3), np.uint8)
    return write_video(folder / "long.mkv", np.stack([np.roll(base, t, axis=1) for t in range(frames)]),
                       lossless=True)


def hidden(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.startswith(".")) if folder.is_dir() else []


SIGNAL_CASES = {
    "predict": lambda t, clip: (["predict", clip, "--method", "copy-last", "--context", 2, "--horizon", 1_000_000,
                                 "--out", t / "out"], t / "out"),
    "segment": lambda t, clip: (["segment", long_clip(t), "--weights", _tiny_deeplab(t), "--size", "128x128",
                                 "--batch-size", 1, "--out", t / "out"], t / "out"),
    "flow": lambda t, clip: (["flow", long_clip(t), "--size", "96x96", "--batch-size", 1, "--direction", "both",
                              "--occlusion", "--out", t / "out"], t / "out"),
    "data convert": lambda t, clip: (["data", "convert", long_clip(t), "--size", "256x256", "--out", t / "out"],
                                     t / "out"),
    "eval": lambda t, clip: (["eval", "--method", "copy-last", "--data", "synthetic:moving-digits",
                              "--num-sequences", 5000, "--samples", 1, "--out", t / "evaluation"], t),
}


def _tiny_deeplab(folder: Path) -> Path:
    from test_segment_cli import save_tiny
    return save_tiny(folder)


def signal_when(proc, ready, sig: str, settle: float = 0.0) -> str:
    """Send ``sig`` to ``proc`` once ``ready()`` is true (and ``settle`` seconds later); its stderr."""
    import signal
    import time
    try:
        deadline = time.monotonic() + 120
        while not ready():
            assert proc.poll() is None, f"ended before it was signalled: {proc.communicate()}"
            assert time.monotonic() < deadline, "never became ready to be signalled"
            time.sleep(0.02)
        time.sleep(settle)
        proc.send_signal(getattr(signal, sig))
        return proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("command, sig", [("predict", "SIGTERM"), ("predict", "SIGINT"), ("segment", "SIGTERM"),
                                          ("flow", "SIGTERM"), ("data convert", "SIGTERM"), ("eval", "SIGTERM")])
def test_a_signal_mid_run_removes_the_unfinished_output(tmp_path, clip, command, sig):
    import subprocess
    import sys
    args, watched = SIGNAL_CASES[command](tmp_path, clip)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VPCLI_DEBUG": ""}
    proc = subprocess.Popen([sys.executable, "-m", "vpcli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    # once the temporary output folder appears, and well inside the work (frames written into it)
    err = signal_when(proc, lambda: [n for n in hidden(watched) if n.endswith(".part")], sig, settle=0.3)
    assert proc.returncode == {"SIGTERM": 143, "SIGINT": 130}[sig], (proc.returncode, err)
    assert "Traceback" not in err and "internal error" not in err, err
    if sig == "SIGTERM":
        assert err.splitlines()[-1] == "terminated (SIGTERM): the unfinished output was removed", err
    assert hidden(watched) == [] and hidden(tmp_path) == []  # no .part folder or file anywhere
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []
    assert not (tmp_path / "evaluation").exists()


SWALLOWED = """
import os, signal, sys, time
from vpcli.cli import app
from vpcli.cli.progress import Progress

class Finalised:
    def __del__(self):  # the signal's exception is raised here, printed as "Exception ignored", dropped
        os.kill(os.getpid(), getattr(signal, sys.argv[1]))
        time.sleep(0.2)

try:
    with app._sigterm_unwinds(), Progress(quiet=True) as progress:
        progress.start("work", total=10)
        Finalised()          # collected at once: the handler runs inside __del__
        print("carried on", flush=True)
        progress.update(1)   # the next progress update raises it again
        print("never printed", flush=True)
except KeyboardInterrupt:
    print("interrupted")
except app.Terminated:
    print("terminated")
"""


@pytest.mark.parametrize("sig, word", [("SIGINT", "interrupted"), ("SIGTERM", "terminated")])
def test_a_signal_whose_exception_is_swallowed_is_raised_again_at_the_next_progress_update(tmp_path, sig, word):
    # Found by the signal test above on a loaded CPU: Ctrl-C landed in a finaliser, Python dropped
    # its KeyboardInterrupt, and `vpcli predict` ran on for two minutes.
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-c", SWALLOWED, sig], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["carried", "on", word], (done.stdout, done.stderr)
    assert "Exception ignored" in done.stderr


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_signal_stops_training_with_a_checkpoint_and_the_signal_s_exit_code(tmp_path, sig):
    # Training finishes instead of discarding: it stops after the current step and saves a
    # checkpoint that --resume continues exactly (tests/test_trainer.py); the exit code says which
    # signal it was, 143 for SIGTERM like every other command, 130 for Ctrl-C.
    import subprocess
    import sys
    log = tmp_path / "events.jsonl"
    with open(log, "w") as stdout:
        proc = subprocess.Popen([sys.executable, "-m", "vpcli", "train", "--config", "convlstm-mmnist-tiny",
                                 "--set", "train.steps=100000", "--set", "train.log_every=1", "--out",
                                 str(tmp_path / "run"), "--json"], stdout=stdout, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
        err = signal_when(proc, lambda: '"event": "train"' in log.read_text(), sig)  # training has started
    assert proc.returncode == {"SIGTERM": 143, "SIGINT": 130}[sig], (proc.returncode, err)
    end = json_lines(log.read_text())[-1]
    assert end["event"] == "end" and end["status"] == "interrupted" and "Traceback" not in err
    (ckpt,) = (tmp_path / "run" / "checkpoints").glob("0*_train_step*")
    assert int(ckpt.name.rsplit("step", 1)[1]) == end["step"] and sorted(os.listdir(ckpt)) == ["model.safetensors",
                                                                                               "state.pt"]
    assert not [p for p in (tmp_path / "run").rglob(".*")]  # no temporary left anywhere in the run


# --- 12. a refused resume names exactly the keys that differ ----------------------------------

def test_resume_with_a_changed_key_names_only_that_key(capsys, trained_run):
    before = tree(trained_run)
    line = usage_error(*run(capsys, "train", "--resume", trained_run, "--set", "train.optim.lr=0.01"))
    assert re.search(r"the config differs from the run in \S+: (.*) \(hint:", line)[1] == "train.optim.lr", line
    line = usage_error(*run(capsys, "train", "--resume", trained_run, "--set", "train.optim.lr=0.01",
                            "--set", "model.hidden=4"))
    assert re.search(r"differs from the run in \S+: (.*) \(hint:", line)[1] == "model.hidden, train.optim.lr", line
    assert tree(trained_run) == before

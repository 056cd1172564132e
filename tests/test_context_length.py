"""Context lengths agree across methods: a parameter-free baseline says which length it uses and
takes another method's with `--context WEIGHTS`."""
from __future__ import annotations

import json

import numpy as np
import pytest

from test_predict import run  # run(capsys, *args): vpcli in-process -> (exit code, stdout, stderr)
from vpcli.io.video import write_video

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


@pytest.fixture
def clip(tmp_path):
    rng = np.random.default_rng(0)
    return write_video(tmp_path / "clip.mp4", rng.integers(0, 255, (9, 64, 128, 3), dtype=np.uint8), lossless=True)


def test_copy_last_names_the_context_it_uses(capsys, tmp_path, clip):
    code, _, err = run(capsys, "predict", clip, "--method", "copy-last", "--horizon", 2, "--out", tmp_path / "p")
    assert code == 0, err
    assert "copy-last has no context length of its own: using 5 frames" in err and "--context WEIGHTS" in err
    m = json.loads((tmp_path / "p/clip/meta.json").read_text())
    assert m["context"]["indices"] == [4, 5, 6, 7, 8]


def test_copy_last_takes_the_context_of_named_weights(capsys, tmp_path, clip):
    from vpcli.engine.loading import context_of
    assert context_of("slamp-synthstreet") == 4  # the bundled RGB SLAMP
    code, _, err = run(capsys, "predict", clip, "--method", "copy-last", "--context", "slamp-synthstreet",
                       "--start", 2, "--horizon", 2, "--out", tmp_path / "p")
    assert code == 0, err
    assert "no context length of its own" not in err
    m = json.loads((tmp_path / "p/clip/meta.json").read_text())
    assert m["context"]["indices"] == [2, 3, 4, 5]  # what slamp-synthstreet sees with --start 2


@pytest.mark.parametrize("value, message", [("0", "--context must be"), ("-2", "--context must be"),
                                            ("no-such-weights", "weights no-such-weights do not exist")])
def test_bad_context_is_a_one_line_error(capsys, tmp_path, clip, value, message):
    code, _, err = run(capsys, "predict", clip, "--method", "copy-last", "--context", value, "--out", tmp_path / "p")
    assert code != 0 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "p").exists()


def test_eval_baseline_with_the_context_of_named_weights(capsys, tmp_path):
    code, out, err = run(capsys, "eval", "--method", "copy-last", "--context", "slamp-synthstreet", "--horizon", "2",
                         "--data", "synthetic:synth-street", "--size", "64x128", "--num-sequences", "2",
                         "--samples", "1", "--metric", "psnr", "--out", tmp_path / "e", "--json")
    assert code == 0, err
    results = json.loads((tmp_path / "e/results.json").read_text())
    assert results["inputs"]["context"] == 4 and results["inputs"]["horizon"] == 2
    assert "the 4 context frames are encoded once" in results["protocol"]


def test_set_changes_a_model_setting_and_refuses_other_keys(capsys, tmp_path, clip):
    """--set model.KEY=VALUE reaches the weights' model config (meta.json records it); data keys
    and malformed values are usage errors."""
    code, _, err = run(capsys, "predict", clip, "--weights", "slamp-synthstreet", "--set", "model.batchnorm=batch-per-sample",
                       "--horizon", 1, "--samples", 2, "--out", tmp_path / "p")
    assert code == 0, err
    assert json.loads((tmp_path / "p/clip/meta.json").read_text())["model"]["batchnorm"] == "batch-per-sample"
    for bad in ("data.context=3", "batchnorm"):
        code, _, err = run(capsys, "predict", clip, "--weights", "slamp-synthstreet", "--set", bad, "--out", tmp_path / "q")
        assert code == 2 and "--set takes model.KEY=VALUE" in err and not (tmp_path / "q").exists()
    code, _, err = run(capsys, "predict", clip, "--weights", "slamp-synthstreet", "--set", "model.batchnorm=nope",
                       "--out", tmp_path / "r")
    assert code != 0 and "batchnorm" in err and len(err.strip().splitlines()) == 1

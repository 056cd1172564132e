"""Predict's memory check (vpcli/engine/memory.py): the tensor-byte meter against analytic sizes, the
probe's scaling against a direct measurement, the budget's sources, and the CLI's refusal -- one
line, nothing written, a suggested fix that then runs under the same limit."""
from __future__ import annotations

import json
import re

import pytest
import torch
from test_predict import SLAMP_TINY, make_run, moving_clip, run

from vpcli.engine.loading import load_predictor
from vpcli.engine.memory import ENV, PeakTensorBytes, _peak, available_bytes, estimate, parse_bytes
from vpcli.errors import UsageError
from vpcli.io.video import write_video

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def test_the_meter_counts_what_operators_allocate_and_not_views():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 8, 3, padding=1))
    x = torch.randn(2, 3, 20, 30)
    act1, act2 = 2 * 16 * 20 * 30 * 4, 2 * 8 * 20 * 30 * 4
    with torch.no_grad(), PeakTensorBytes() as meter:
        v = x.view(2, 3, 600).transpose(1, 2)      # views of a tensor made outside: no new memory
        assert meter.peak == 0
        y = net(x)
        del v
    # conv1 out (act1) and ReLU out (act1) are alive together, then conv2's out (act2) beside ReLU's
    assert meter.peak == max(2 * act1, act1 + act2)
    assert meter.live == act2                      # y is still alive
    del y


def test_the_probe_scales_to_what_the_full_size_measures(tmp_path):
    run_dir = make_run(tmp_path / "convlstm", "convlstm-mmnist-tiny", ["data.channels=3", "model.hidden=8"])
    model, cfg, _ = load_predictor("convlstm", str(run_dir))
    off = torch.autocast("cpu", enabled=False)
    for work, samples in (((256, 384), 1), ((192, 320), 3)):
        est = estimate(model, context=5, work=work, samples=samples)
        assert est.probe[0] * est.probe[1] < work[0] * work[1] / 3           # probed small, then scaled
        real = _peak(model, 5, work, samples, None, frozenset(), off)[0]
        assert 0.9 < est.bytes / real < 1.15, (work, samples, est.bytes, real)


@pytest.mark.parametrize("text,value", [("4G", 4 * 2 ** 30), ("512M", 512 * 2 ** 20), ("1.5g", int(1.5 * 2 ** 30)),
                                        ("2GiB", 2 * 2 ** 30), ("123456", 123456), ("none", None), ("off", None)])
def test_sizes_parse(text, value):
    assert parse_bytes(text) == value


def test_a_bad_limit_is_a_usage_error(monkeypatch):
    monkeypatch.setenv(ENV, "lots")
    with pytest.raises(UsageError, match="VPCLI_MEMORY_LIMIT='lots' is not a size"):
        available_bytes()


def test_the_budget_comes_from_the_environment_or_the_system(monkeypatch):
    monkeypatch.setenv(ENV, "300M")
    assert available_bytes() == (300 * 2 ** 20, "VPCLI_MEMORY_LIMIT=300M")
    monkeypatch.delenv(ENV)
    budget, source = available_bytes()
    assert budget is not None and budget > 2 ** 26 and "MemAvailable" in source


def _clip(path, h, w, t=7):
    return write_video(path, moving_clip(t, h, w, grey=False), fps=10, lossless=True)


def test_too_big_for_memory_is_refused_before_decoding_with_a_size_that_then_runs(capsys, tmp_path, monkeypatch):
    run_dir = make_run(tmp_path / "convlstm", "convlstm-mmnist-tiny", ["data.channels=3"])
    clip = _clip(tmp_path / "wide.mp4", 320, 640)
    monkeypatch.setenv(ENV, "64G")                                 # measured, not refused: meta.json says what
    code, _, err = run(capsys, "predict", clip, "--weights", run_dir, "--horizon", 2, "--out", tmp_path / "m")
    assert code == 0, err
    check = json.loads((tmp_path / "m" / "wide" / "meta.json").read_text())["memory_check"]
    assert check["work"] == [320, 640] and check["tensor_bytes"] > 0 and check["encoder_bytes"] > 0
    limit = int((check["encoder_bytes"] + check["persistent_bytes"] + 0.5 * check["tensor_bytes"]) / 0.8)
    monkeypatch.setenv(ENV, str(limit))                           # room for half the tensors
    out = tmp_path / "p"
    code, _, err = run(capsys, "predict", clip, "--weights", run_dir, "--horizon", 2, "--out", out)
    assert code == 1
    line = next(x for x in err.splitlines() if x.startswith("error:"))
    assert "predicting 320x640" in line and "needs about" in line and f"VPCLI_MEMORY_LIMIT={limit}" in line
    size = re.search(r"--size (\d+)x(\d+)", line)
    assert size
    assert not out.exists() or not any(out.rglob("*.mp4"))        # nothing written
    h, w = int(size[1]), int(size[2])
    assert abs(w / h - 2) < 0.1                                    # the clip's aspect ratio kept
    code, _, err = run(capsys, "predict", clip, "--weights", run_dir, "--horizon", 2, "--size", f"{h}x{w}",
                       "--out", out)
    assert code == 0, err


def test_fixed_size_weights_get_fewer_samples_as_the_fix(capsys, tmp_path, monkeypatch):
    run_dir = make_run(tmp_path / "slamp", "slamp-mmnist-tiny", SLAMP_TINY)
    clip = _clip(tmp_path / "c.mp4", 64, 64)
    monkeypatch.setenv(ENV, "6M")
    code, _, err = run(capsys, "predict", clip, "--weights", run_dir, "--horizon", 2, "--samples", 200,
                       "--out", tmp_path / "p")
    assert code == 1
    line = next(x for x in err.splitlines() if x.startswith("error:"))
    assert "--size" not in line                                   # no size exists for fixed-size weights
    n = int(re.search(r"--samples (\d+)", line)[1])
    assert 1 <= n < 200
    code, _, err = run(capsys, "predict", clip, "--weights", run_dir, "--horizon", 2, "--samples", n,
                       "--out", tmp_path / "q")
    assert code == 0, err


def test_a_probe_that_cannot_run_skips_the_check_instead_of_failing_the_run(monkeypatch):
    from vpcli.engine import memory

    class Broken(torch.nn.Module):
        inputs, size_multiple, config = frozenset({"rgb"}), 8, None

        def predict(self, *a, **k):
            raise RuntimeError("no probe for me")
    monkeypatch.setenv(ENV, "1G")
    facts = memory.check_predict_memory(Broken(), context=2, work=(1024, 1024), samples=1)
    assert "the probe failed (RuntimeError: no probe for me)" in facts["skipped"]


def test_a_bad_limit_stops_predict_before_anything_loads(capsys, tmp_path, monkeypatch):
    clip = _clip(tmp_path / "c.mp4", 64, 64)
    monkeypatch.setenv(ENV, "12 apples")
    code, _, err = run(capsys, "predict", clip, "--method", "copy-last", "--out", tmp_path / "p")
    assert code == 2 and "VPCLI_MEMORY_LIMIT='12 apples' is not a size" in err and "inputs failed" not in err
    assert not (tmp_path / "p").exists()

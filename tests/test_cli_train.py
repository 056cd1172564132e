"""`vpcli train` end to end: presets, overrides, run-folder rules, resume checks, torchrun."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from vpcli.cli.app import main

FAST = ["--config", "convlstm-mmnist-tiny", "--set", "train.steps=4", "--set", "train.val_every=2",
        "--set", "data.train_clips=16", "--set", "data.val_clips=4", "--set", "train.log_every=1"]


def run(capsys, *args):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_tiny_preset_trains_and_writes_a_run_folder(capsys, tmp_path):
    code, out, err = run(capsys, "train", *FAST, "--out", tmp_path / "r", "--json")
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert events[0]["event"] == "start" and events[-1]["event"] == "end" and events[-1]["step"] == 4
    cfg = yaml.safe_load((tmp_path / "r/config.yaml").read_text())
    assert cfg["method"] == "convlstm" and cfg["train"]["steps"] == 4 and cfg["model"]["hidden"] == 8
    for name in ("checkpoints/last.safetensors", "checkpoints/000003_train_step0000004/state.pt", "checkpoints/best.safetensors", "stages.json",
                 "samples/step_0000002.mp4", "metrics.jsonl"):
        assert (tmp_path / "r" / name).exists(), name


def test_resume_extends_steps_and_matches_uninterrupted(capsys, tmp_path):
    assert run(capsys, "train", *FAST, "--set", "train.steps=6", "--out", tmp_path / "a")[0] == 0
    assert run(capsys, "train", *FAST, "--set", "train.steps=3", "--out", tmp_path / "b")[0] == 0
    code, out, err = run(capsys, "train", "--resume", tmp_path / "b", "--set", "train.steps=6", "--json")
    assert code == 0, err
    start = json.loads(out.splitlines()[0])
    assert start["event"] == "start" and start["resumed_from"] == 3  # the checkpoint's step (was reported as 0)
    wa, wb = load_file(tmp_path / "a/checkpoints/last.safetensors"), load_file(tmp_path / "b/checkpoints/last.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_existing_run_is_refused_without_resume_or_overwrite(capsys, tmp_path):
    assert run(capsys, "train", *FAST, "--out", tmp_path / "r")[0] == 0
    before = (tmp_path / "r/checkpoints/last.safetensors").read_bytes()
    code, _, err = run(capsys, "train", *FAST, "--out", tmp_path / "r")
    assert code == 1 and "already holds a run" in err and "--resume" in err
    assert (tmp_path / "r/checkpoints/last.safetensors").read_bytes() == before


def test_resume_with_another_method_or_config_is_refused(capsys, tmp_path):
    assert run(capsys, "train", *FAST, "--out", tmp_path / "r")[0] == 0
    before = (tmp_path / "r/metrics.jsonl").read_text()
    code, _, err = run(capsys, "train", "--resume", tmp_path / "r", "--method", "copy-last")
    assert code == 1 and "is a convlstm run, not copy-last" in err
    code, _, err = run(capsys, "train", "--resume", tmp_path / "r", "--set", "model.hidden=16")
    assert code == 2 and "model.hidden" in err
    assert (tmp_path / "r/metrics.jsonl").read_text() == before


@pytest.mark.parametrize("args, code, text", [
    (["--method", "slampp"], 2, "unknown predictor 'slampp'"),
    (["--config", "convlstm-mnist-tiny"], 2, "did you mean 'convlstm-mmnist-tiny'"),
    (FAST + ["--set", "train.lr=0.1"], 2, "unknown config key 'train.lr'"),
    (FAST + ["--set", "train.steps=many"], 2, "train.steps: expected an integer"),
    (FAST + ["--set", "model.hiden=3"], 2, "did you mean 'hidden'"),
    (FAST + ["--set", "nonsense"], 2, "--set expects KEY=VALUE"),
    (["--method", "copy-last", "--data", "synthetic:moving-digits"], 2, "copy-last has nothing to train"),
])
def test_config_errors_name_the_key(capsys, tmp_path, args, code, text):
    got, _, err = run(capsys, "train", *args, "--out", tmp_path / "r")
    assert got == code and text in err, err
    assert len(err.strip().splitlines()) == 1


def test_data_folder_without_clips(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "train", *FAST, "--data", str(tmp_path / "empty"), "--out", tmp_path / "r")
    assert code == 1 and "error:" in err and str(tmp_path / "empty") in err


def test_torchrun_two_processes(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "vpcli", "train", *FAST, "--out", str(tmp_path / "ddp"), "--json"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    ends = [json.loads(line) for line in res.stdout.splitlines() if '"event": "end"' in line]
    assert len(ends) == 1 and ends[0]["step"] == 4  # rank 0 alone reports and writes
    assert (tmp_path / "ddp/checkpoints/last.safetensors").exists()


def test_export_then_init_from_the_manifest_entry(capsys, tmp_path, monkeypatch):
    assert run(capsys, "train", *FAST, "--out", tmp_path / "r")[0] == 0
    code, out, err = run(capsys, "weights", "export", tmp_path / "r", "--name", "tiny-convlstm", "--fp16", "--json")
    assert code == 0, err
    rec = json.loads(out)
    entry = yaml.safe_load(open(rec["manifest"]))["weights"][0]
    assert entry["sha256"] == rec["sha256"] and entry["arch"] == "convlstm" and "val/loss" in entry["metrics"]
    assert entry["config"]["model"]["hidden"] == 8 and "synthetic:moving-digits" in entry["trained_on"]
    # the scores are those of the exported (best) checkpoint, not the last validation's
    vals = [r for r in map(json.loads, (tmp_path / "r/metrics.jsonl").read_text().splitlines()) if r["event"] == "val"]
    assert entry["metrics"]["val/loss"] == round(min(r["val/loss"] for r in vals), 6)
    records = [json.loads(line) for line in (tmp_path / "r/metrics.jsonl").read_text().splitlines()]
    i = max(k for k, r in enumerate(records) if r["event"] == "val")
    records[i]["val/loss"] = 9.0  # the last validation is now the worst
    (tmp_path / "r/metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    code, out, err = run(capsys, "weights", "export", tmp_path / "r", "--name", "worst-last", "--json")
    entry2 = yaml.safe_load(open(json.loads(out)["manifest"]))["weights"][0]
    assert code == 0 and entry2["metrics"]["val/loss"] != 9.0
    monkeypatch.setenv("VPCLI_MANIFEST", rec["manifest"])
    monkeypatch.setenv("VPCLI_CACHE", str(tmp_path / "cache"))
    code, out, _ = run(capsys, "weights", "verify", "tiny-convlstm", "--json")
    assert code == 0 and json.loads(out)["status"] == "ok"
    # fine-tune from it: the new run starts from the exported (fp16-rounded) weights
    code, _, err = run(capsys, "train", *FAST, "--set", "train.steps=1", "--set", "train.optim.lr=1e-12",
                       "--init", "tiny-convlstm", "--out", tmp_path / "ft")
    assert code == 0, err
    exported = load_file(rec["weights"])
    tuned = load_file(tmp_path / "ft/checkpoints/last.safetensors")
    for k in exported:
        torch.testing.assert_close(tuned[k], exported[k].float(), rtol=0, atol=1e-6)
    # a model with another shape refuses the weights with a clear message
    code, _, err = run(capsys, "train", *FAST, "--set", "model.hidden=4", "--init", "tiny-convlstm",
                       "--out", tmp_path / "bad")
    assert code == 1 and "does not fit this model" in err


def test_window_stride_gives_every_start_of_a_folder_clip_for_training(tmp_path):
    import numpy as np

    from vpcli.engine.train_runner import build_datasets as _build_datasets
    from vpcli.errors import ConfigError
    from vpcli.engine.run import resolve_config
    from vpcli.io.video import write_video
    rng = np.random.default_rng(0)
    for i in range(6):
        write_video(tmp_path / "clips" / f"c{i}", rng.integers(0, 255, (12, 16, 16, 3), dtype=np.uint8))
    base = ["data.source=" + str(tmp_path / "clips"), "data.size=[16, 16]", "data.context=2", "data.future=2"]
    default, *_ = _build_datasets(resolve_config(None, "convlstm-mmnist-tiny", base), seed=0)
    every, *_ = _build_datasets(resolve_config(None, "convlstm-mmnist-tiny", base + ["data.window_stride=1"]), seed=0)
    clips = len(default) // 3  # 12 frames, span 4: starts 0, 4, 8
    assert len(every) == clips * 9  # starts 0..8
    assert torch.equal(every[1]["rgb"][0], every[0]["rgb"][1])  # consecutive windows overlap by one frame
    with pytest.raises(ConfigError, match="window_stride must be >= 0"):
        resolve_config(None, "convlstm-mmnist-tiny", base + ["data.window_stride=-1"])

"""examples/pipeline.sh, run as a user would: synth-street -> data convert -> segment / flow / predict
-> eval, each command reading the previous one's output folder with no glue flags."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "pipeline.sh"


def _results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_pipeline_script_chains_every_command_and_scores_sanely(tmp_path):
    env = dict(os.environ, VPCLI_THREADS="1", PATH=os.pathsep.join([str(Path(sys.executable).parent),
                                                                     os.environ.get("PATH", "")]))
    env.pop("VPCLI_MANIFEST", None)
    work = tmp_path / "work"
    proc = subprocess.run(["bash", str(SCRIPT), str(work)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    commands = [line for line in SCRIPT.read_text().splitlines() if line.startswith("vpcli ")]
    assert len(commands) == 8
    for glue in ("--align", "--gt-offset", "--recursive", " -r "):  # each output feeds the next as it is
        assert not any(glue in line for line in commands), glue

    # names survive every step: converted/seq_00000/video.mp4 -> seg/, flow/, pred/seq_00000
    for out in ("converted", "seg", "flow", "pred"):
        assert sorted(p.name for p in (work / out).iterdir() if p.is_dir()) == ["seq_00000", "seq_00001"], out
    meta = json.loads((work / "pred" / "seq_00000" / "meta.json").read_text())
    assert meta["first_predicted_frame"] == 4 and meta["context"]["indices"] == [0, 1, 2, 3]

    frames = _results(work / "eval_frames")
    assert frames["sequences"] == 2 and frames["missing"] == [] and frames["warnings"] == []
    assert frames["inputs"]["gt_offsets"] == {"seq_00000": 4, "seq_00001": 4}
    assert frames["inputs"]["samples_per_sequence"] == [3]
    psnr, ssim, mse = (frames["metrics"][m] for m in ("psnr", "ssim", "mse"))
    assert psnr["curve"]["t"] == [5, 6, 7, 8, 9, 10]  # frames 4..9 (1-based 5..10): never the context
    assert 12 < psnr["mean"] < 45 and not psnr["capped"]  # a real prediction, not a copy of the truth
    assert 0.2 < ssim["mean"] < 1 and 0 < mse["mean"] < 0.1
    assert all(math.isfinite(v) for m in (psnr, ssim, mse) for v in m["curve"]["mean"])

    labels = _results(work / "eval_labels")["metrics"]["miou"]
    assert labels["n"] == 2 and 0.05 < labels["mean"] <= 1 and 0 < labels["dataset_miou"] <= 1
    assert len(labels["curve"]["t"]) == 10
    flow = _results(work / "eval_flow")
    epe = flow["metrics"]["epe"]
    assert epe["n"] == 2 and len(epe["curve"]["t"]) == 9 and 0 < epe["mean"] < 8  # pixels at 64x128
    assert any("ground truth resized to it" in w and "128x256 -> 64x128" in w for w in flow["warnings"])
    for name in ("eval_frames", "eval_labels", "eval_flow"):
        assert (work / name / "best.mp4").stat().st_size > 0


def _bash(script: str, *args, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, VPCLI_THREADS="1", PATH=os.pathsep.join([str(Path(sys.executable).parent),
                                                                     os.environ.get("PATH", "")]))
    env.pop("VPCLI_MANIFEST", None)
    return subprocess.run(["bash", str(SCRIPT.parent / script), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_convert_folder_script_converts_every_clip_in_two_shards(tmp_path):
    import numpy as np

    from vpcli.io.video import probe, write_video
    rng = np.random.default_rng(0)
    for name in ("a.mp4", "b.mp4", "sub/c.avi"):
        write_video(tmp_path / "clips" / name, rng.integers(0, 255, (5, 48, 80, 3), dtype=np.uint8))
    proc = _bash("convert_folder.sh", tmp_path / "clips", tmp_path / "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "converted 3 clips" in proc.stdout
    videos = sorted(tmp_path.glob("out/*/video.mp4"))
    assert [v.parent.name for v in videos] == ["a", "b", "c"]
    for v in videos:
        info = probe(v)
        assert (info.height, info.width, info.num_frames) == (64, 64, 5)
    infos = [json.loads(line) for line in (tmp_path / "out.info.jsonl").read_text().splitlines()]
    assert len(infos) == 3


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_train_resume_export_script_resumes_and_exports_verified_weights(tmp_path):
    proc = _bash("train_resume_export.sh", tmp_path / "run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ok       example-convlstm" in proc.stdout
    steps = [json.loads(line)["step"] for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()
             if '"step"' in line]
    assert max(steps) == 20
    assert (tmp_path / "run/export/example-convlstm.safetensors").is_file()

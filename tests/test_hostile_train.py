"""Training under a hostile world (issue 13, items 5 and 6), through the CLI in real processes: a
SIGKILL between the two files of a checkpoint, and a start that fails before the run exists."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

TINY = ["--config", "convlstm-mmnist-tiny", "--set", "train.steps=6", "--set", "train.checkpoint_every=2",
        "--set", "train.val_every=0", "--set", "data.train_clips=16", "--set", "data.val_clips=0"]

# Runs `vpcli ...` in this process, killed by SIGKILL right after the weights of step 4 are written
# and before its state is: the worst moment for a checkpoint made of two files.
KILLER = textwrap.dedent("""
    import os, signal, sys, torch
    real = torch.save
    def save(obj, f, *a, **k):
        if isinstance(obj, dict) and obj.get("step") == 4 and "optimizers" in obj:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(obj, f, *a, **k)
    torch.save = save
    from vpcli.cli.app import main
    main(sys.argv[1:])
""")


def vpcli(*args, killer: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", KILLER] if killer else [sys.executable, "-m", "vpcli"]
    return subprocess.run(cmd + [str(a) for a in args], env=env, capture_output=True, text=True, timeout=300)


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    [folder] = [p for p in (run / "checkpoints").iterdir() if p.is_dir() and not p.name.startswith(".")]
    return load_file(folder / "model.safetensors")


def test_sigkill_between_the_checkpoint_files_resumes_exactly(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert vpcli("train", *TINY, "--out", a).returncode == 0
    r = vpcli("train", *TINY, "--out", b, killer=True)
    assert r.returncode == -9, r.stderr  # killed, not finished
    published = sorted(p.name for p in (b / "checkpoints").iterdir() if not p.name.startswith("."))
    assert "000001_train_step0000002" in published and not any("step0000004" in n for n in published)
    r = vpcli("train", "--resume", b)
    assert r.returncode == 0, r.stderr
    wa, wb = final_weights(a), final_weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)  # as if never killed
    assert not [p for p in (b / "checkpoints").iterdir() if p.name.startswith(".")]  # temporaries cleaned


@pytest.mark.parametrize("bad", [
    ["--data", "/nonexistent/clips"],                    # data cannot be opened
    ["--set", "model.hiden=3"],                          # config typo
    ["--init", "/nonexistent/w.safetensors"],            # init weights missing
    ["--stage", "nope"],                                 # no such stage
])
def test_a_failed_start_writes_nothing(tmp_path, bad):
    out = tmp_path / "run"
    r = vpcli("train", *TINY, *bad, "--out", out)
    assert r.returncode in (1, 2) and r.stderr.strip().startswith("error:") and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()  # so the rerun cannot be refused as "already holds a run"


def test_the_corrected_rerun_trains_into_the_same_folder(tmp_path):
    out = tmp_path / "run"
    assert vpcli("train", *TINY, "--set", "model.hiden=3", "--out", out).returncode != 0
    r = vpcli("train", *TINY, "--out", out)
    assert r.returncode == 0, r.stderr
    assert (out / "checkpoints" / "last.safetensors").is_file()

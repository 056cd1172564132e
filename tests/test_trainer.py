"""The training engine: learning, exact resume, signals, NaN handling, schedules, DDP parity."""
from __future__ import annotations

import json
import math
import os
import signal

import pytest
import torch
from ddp_util import free_port, join_env
from safetensors.torch import load_file

from vpcli.engine.schedules import LRSchedule, inverse_sigmoid
from vpcli.engine.trainer import OptimConfig, TrainConfig, Trainer, TrainingError
from vpcli.predictors.baselines import ConvLSTMConfig, ConvLSTMPredictor

# One intra-op thread in this process (tests/conftest.py); the DDP test's spawned workers set
# their own (_ddp_worker).
pytestmark = pytest.mark.usefixtures("one_thread")


class MovingSquares(torch.utils.data.Dataset):
    """A white square moving with a per-clip constant velocity: a learnable, deterministic toy."""

    def __init__(self, n=16, t=6, size=16):
        self.n, self.t, self.size = n, t, size

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        x, y = torch.randint(2, self.size - 6, (2,), generator=g).tolist()
        vx, vy = torch.randint(-1, 2, (2,), generator=g).tolist()
        rgb = torch.zeros(self.t, 1, self.size, self.size)
        for k in range(self.t):
            xx, yy = min(max(x + vx * k, 0), self.size - 4), min(max(y + vy * k, 0), self.size - 4)
            rgb[k, 0, yy:yy + 4, xx:xx + 4] = 1.0
        return {"rgb": rgb}


def make_trainer(run_dir, steps, *, seed=0, k=0.0, val=False, lr=3e-3, **kw):
    torch.manual_seed(123)  # model init
    model = ConvLSTMPredictor(ConvLSTMConfig(channels=1, hidden=8, layers=1, context=2))
    cfg = TrainConfig(steps=steps, batch_size=4, optim=OptimConfig(lr=lr), log_every=1, seed=seed,
                      scheduled_sampling_k=k, val_every=kw.pop("val_every", 0), **kw)
    return Trainer(model, MovingSquares(), cfg, run_dir, val_set=MovingSquares(8) if val else None,
                   context_frames=2)


def losses(run_dir):
    return [r["loss"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
            if r["event"] == "train"]


def test_training_lowers_the_loss(tmp_path):
    tr = make_trainer(tmp_path, 100, lr=1e-2)
    tr.fit()
    ls = losses(tmp_path)
    assert sum(ls[-10:]) / 10 < 0.2 * sum(ls[:10]) / 10, (ls[:10], ls[-10:])


def test_resume_is_bit_exact(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    make_trainer(a, 10, k=3.0).fit()                      # uninterrupted: 10 steps (> one epoch of 4)
    make_trainer(b, 5, k=3.0).fit()                       # stopped at k = 5 ...
    tr = make_trainer(b, 10, k=3.0)
    tr.fit(resume=True)                                   # ... resumed to 2k
    wa, wb = load_file(a / "checkpoints/last.safetensors"), load_file(b / "checkpoints/last.safetensors")
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    assert losses(a)[5:] == losses(b)[5:]


def test_bf16_training_in_channels_last_saves_contiguous_and_resumes_exactly(tmp_path, monkeypatch):
    """A predictor with ``train_channels_last_bf16`` (SLAMP) trains in channels-last under bf16
    autocast on the CPU: its conv weights are channels-last while training, checkpoints hold
    ordinary contiguous tensors, and an interrupted run resumes to the same weights."""
    from vpcli import precision
    from vpcli.predictors.slamp import SLAMP
    assert SLAMP.train_channels_last_bf16
    monkeypatch.setattr(ConvLSTMPredictor, "train_channels_last_bf16", True, raising=False)
    monkeypatch.setattr(precision, "resolve", lambda *a, **k: ("bf16", None))
    a, b = tmp_path / "a", tmp_path / "b"
    tr = make_trainer(a, 6, amp="bf16")
    convs = [m.weight for m in tr.model.modules() if isinstance(m, torch.nn.Conv2d)
             if m.weight.shape[1] > 1 and m.weight.shape[-1] > 1]  # (layouts of 1-channel weights coincide)
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in convs)
    tr.fit()
    make_trainer(b, 3, amp="bf16").fit()
    make_trainer(b, 6, amp="bf16").fit(resume=True)
    wa, wb = load_file(a / "checkpoints/last.safetensors"), load_file(b / "checkpoints/last.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert losses(a)[3:] == losses(b)[3:]
    monkeypatch.setattr(precision, "resolve", lambda *a, **k: ("fp32", None))  # fp32: layout untouched
    assert all(m.weight.is_contiguous() for m in make_trainer(tmp_path / "c", 1, amp="bf16").model.modules()
               if isinstance(m, torch.nn.Conv2d))


def test_fp32_training_in_channels_last_only_on_avx512_and_resumes_exactly(tmp_path, monkeypatch):
    from vpcli.predictors.slamp import SLAMP
    assert SLAMP.train_channels_last_fp32_avx512
    monkeypatch.setattr(ConvLSTMPredictor, "train_channels_last_fp32_avx512", True, raising=False)

    def convs(tr):
        return [m.weight for m in tr.model.modules() if isinstance(m, torch.nn.Conv2d)
                if m.weight.shape[1] > 1 and m.weight.shape[-1] > 1]
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert all(w.is_contiguous() for w in convs(make_trainer(tmp_path / "c", 1)))
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    a, b = tmp_path / "a", tmp_path / "b"
    tr = make_trainer(a, 6)
    assert convs(tr) and all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
                             for w in convs(tr))
    tr.fit()
    make_trainer(b, 3).fit()
    make_trainer(b, 6).fit(resume=True)
    wa, wb = load_file(a / "checkpoints/last.safetensors"), load_file(b / "checkpoints/last.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert all(v.is_contiguous() for v in wa.values())
    assert losses(a)[3:] == losses(b)[3:]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_and_resumes_exactly(tmp_path, sig):
    a, b = tmp_path / "a", tmp_path / "b"
    make_trainer(a, 8).fit()
    before = signal.getsignal(sig)
    tr = make_trainer(b, 8)
    tr.callback = lambda event, rec: os.kill(os.getpid(), sig) if event == "train" and rec["step"] == 3 else None
    summary = tr.fit()
    assert summary["status"] == "interrupted" and summary["step"] == 3
    assert signal.getsignal(sig) is before  # handler restored
    make_trainer(b, 8).fit(resume=True)
    wa, wb = load_file(a / "checkpoints/last.safetensors"), load_file(b / "checkpoints/last.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_nan_loss_stops_with_step_and_term_and_keeps_checkpoint(tmp_path, monkeypatch):
    real_loss = ConvLSTMPredictor.loss

    def poisoned(self, batch, state):
        out = real_loss(self, batch, state)
        if state.step == 5:
            out["mse"] = out["mse"] * float("nan")
        return out
    monkeypatch.setattr(ConvLSTMPredictor, "loss", poisoned)
    tr = make_trainer(tmp_path, 10, checkpoint_every=2)
    with pytest.raises(TrainingError, match=r"loss term mse is nan at step 5"):
        tr.fit()
    from safetensors import safe_open
    with safe_open(str(tmp_path / "checkpoints/last.safetensors"), "pt") as f:
        assert f.metadata()["step"] == "4"


def test_validation_writes_best_and_samples(tmp_path):
    tr = make_trainer(tmp_path, 6, val=True, val_every=3)
    tr.fit()
    recs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    vals = [r for r in recs if r["event"] == "val"]
    assert [r["step"] for r in vals] == [3, 6] and all("val/mse" in r for r in vals)
    assert (tmp_path / "checkpoints/best.safetensors").exists()
    assert (tmp_path / "samples/step_0000003.mp4").stat().st_size > 0


def test_schedules():
    s = LRSchedule(kind="step", step_size=10, gamma=0.5)
    assert [s.factor(i, 100) for i in (0, 9, 10, 25)] == [1.0, 1.0, 0.5, 0.25]
    m = LRSchedule(kind="multistep", milestones=[5, 8], gamma=0.1)
    assert [round(m.factor(i, 100), 6) for i in (4, 5, 8)] == [1.0, 0.1, 0.01]
    assert inverse_sigmoid(0, 0) == 1.0
    assert inverse_sigmoid(0, 100) == pytest.approx(100 / 101)
    assert inverse_sigmoid(1000, 100) == pytest.approx(100 / (100 + math.exp(10)))
    with pytest.raises(ValueError, match="step_size"):
        LRSchedule(kind="step")


def _ddp_worker(rank, world, port, run_dir):
    join_env(rank, world, port)
    tr = make_trainer(run_dir, 6)
    tr.fit()
    from vpcli.engine.distributed import shutdown
    shutdown(tr.info)


def test_two_process_ddp_matches_single_process(tmp_path):
    single, multi = tmp_path / "single", tmp_path / "multi"
    make_trainer(single, 6).fit()
    torch.multiprocessing.spawn(_ddp_worker, args=(2, free_port(), multi), nprocs=2, join=True)
    ws, wm = load_file(single / "checkpoints/last.safetensors"), load_file(multi / "checkpoints/last.safetensors")
    for k in ws:
        torch.testing.assert_close(wm[k], ws[k], rtol=1e-4, atol=1e-5)

"""Training-engine overhead and two-process data parallel throughput.

1. Engine vs a hand-written minimal loop (same tiny ConvLSTM, same data in memory, same
   optimiser, batch, steps): the ratio of wall times, rounds interleaved, medians.
   Target: at most 1.05.
2. Two CPU processes (torchrun-style env, gloo) vs one, same global batch: steps/s of each.

Run:  python benchmarks/bench_engine.py [--steps 60] [--rounds 5]
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from vpcli.engine.trainer import OptimConfig, TrainConfig, Trainer  # noqa: E402
from vpcli.predictors.base import TrainState  # noqa: E402
from vpcli.predictors.baselines import ConvLSTMConfig, ConvLSTMPredictor  # noqa: E402


class InMemory(torch.utils.data.Dataset):
    def __init__(self, n=64, t=10, size=32):
        g = torch.Generator().manual_seed(0)
        self.x = torch.rand(n, t, 1, size, size, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"rgb": self.x[i]}


def model():
    torch.manual_seed(0)
    return ConvLSTMPredictor(ConvLSTMConfig(channels=1, hidden=16, layers=2, context=5))


def run_engine(steps, batch):
    with tempfile.TemporaryDirectory() as d:
        cfg = TrainConfig(steps=steps, batch_size=batch, optim=OptimConfig(lr=1e-3), log_every=10)
        tr = Trainer(model(), InMemory(), cfg, d)
        t = time.perf_counter()
        tr.fit()
        return time.perf_counter() - t


def run_minimal(steps, batch):
    m, data = model(), InMemory()
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=True, drop_last=True)
    state = TrainState()
    t = time.perf_counter()
    step = 0
    while step < steps:
        for batch_ in loader:
            opt.zero_grad()
            m.loss(batch_, state)["loss"].backward()
            opt.step()
            step += 1
            if step >= steps:
                break
    return time.perf_counter() - t


def _worker(rank, world, port, steps, batch, q):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        cfg = TrainConfig(steps=steps, batch_size=batch, optim=OptimConfig(lr=1e-3), log_every=10)
        tr = Trainer(model(), InMemory(), cfg, d)
        t = time.perf_counter()
        tr.fit()
        if rank == 0:
            q.put(time.perf_counter() - t)
        from vpcli.engine.distributed import shutdown
        shutdown(tr.info)


def run_ddp(steps, batch, world):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = torch.multiprocessing.get_context("spawn")
    q = ctx.SimpleQueue()
    torch.multiprocessing.start_processes(_worker, args=(world, port, steps, batch, q), nprocs=world,
                                          start_method="spawn", join=True)
    return q.get()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    run_engine(5, a.batch), run_minimal(5, a.batch)  # warm-up
    eng, mini = [], []
    for r in range(a.rounds):
        order = [(run_engine, eng), (run_minimal, mini)]
        for fn, out in (order if r % 2 == 0 else order[::-1]):
            out.append(fn(a.steps, a.batch))
    e, m = statistics.median(eng), statistics.median(mini)
    print(f"engine vs minimal loop, {a.steps} steps, batch {a.batch}, ConvLSTM 16x2 on 32x32x10, "
          f"{torch.get_num_threads()} threads, median of {a.rounds} interleaved rounds")
    print(f"  engine  {e:.3f} s  ({a.steps / e:.1f} steps/s)")
    print(f"  minimal {m:.3f} s  ({a.steps / m:.1f} steps/s)")
    print(f"  ratio engine/minimal = {e / m:.3f}  (target <= 1.05)")
    torch.set_num_threads(1)
    one = run_engine(a.steps, a.batch)
    two = run_ddp(a.steps, a.batch, 2)
    print(f"data parallel, global batch {a.batch}, 1 thread per process:")
    print(f"  1 process  {a.steps / one:.2f} steps/s")
    print(f"  2 processes {a.steps / two:.2f} steps/s  (speed-up {one / two:.2f}x)")


if __name__ == "__main__":
    main()

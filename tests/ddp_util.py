"""Helpers for tests that train in two CPU processes (torch.multiprocessing.spawn, gloo)."""
from __future__ import annotations

import os
import socket

import torch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def join_env(rank: int, world: int, port: int) -> None:
    """What torchrun would set for process ``rank`` of ``world``; one thread per process."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)

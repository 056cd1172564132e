"""Data-parallel training over torch.distributed (gloo on CPU, NCCL on GPU), started by torchrun.

Gradients are averaged with one flattened all-reduce per optimisation step instead of wrapping
the model in ``DistributedDataParallel``: adversarial methods run several partial backward passes
per iteration (D, then M, then G) over different parameter sets, which DDP's hooks handle only
with ``find_unused_parameters`` and extra synchronisation. The arithmetic is DDP's (sum then
divide by the world size), so a run matches single-process training with the same global batch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_from_env(device: str = "cpu") -> DistInfo:
    """Join the process group torchrun describes in the environment (no-op for one process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    return DistInfo(rank, world, local)


def broadcast_module(module: torch.nn.Module, info: DistInfo) -> None:
    """Start every rank from rank 0's parameters and buffers."""
    if info.enabled:
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


def average_gradients(params: list[torch.nn.Parameter], info: DistInfo) -> None:
    if not info.enabled or not params:
        return
    for p in params:  # every rank must contribute the same layout, missing grads count as zero
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= info.world
    offset = 0
    for p in params:
        n = p.grad.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
        offset += n


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True on every rank when ``flag`` is true on some rank (stop requests, errors)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()

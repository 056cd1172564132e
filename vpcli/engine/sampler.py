"""A resumable, shardable batch sampler: the data order is a pure function of (seed, epoch).

Exact resume needs the batches after step k of a resumed run to be the ones the uninterrupted
run saw; so the order is recomputed from the seed, and ``start`` skips the batches already
consumed in the current epoch without loading them. Under distributed training each rank takes
its own interleaved slice of the same permutation (global batch = per-rank batch x world).
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochBatchSampler(Sampler[list[int]]):
    def __init__(self, num_items: int, batch_size: int, *, seed: int = 0, shuffle: bool = True,
                 rank: int = 0, world: int = 1):
        if num_items < batch_size * world:
            from vpcli.errors import ConfigError
            raise ConfigError(f"{num_items} training windows cannot fill one batch of {batch_size} x {world} "
                              f"process{'es' * (world != 1)}",
                              "lower train.batch_size (--batch-size), or add clips / lower data.window_stride")
        self.num_items, self.batch_size, self.seed, self.shuffle = num_items, batch_size, seed, shuffle
        self.rank, self.world = rank, world
        self.epoch, self.start = 0, 0

    def set_position(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:  # batches per epoch (incomplete global batches are dropped)
        return self.num_items // (self.batch_size * self.world)

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.num_items, generator=g).tolist()
        else:
            order = list(range(self.num_items))
        gb = self.batch_size * self.world
        for b in range(self.start, len(self)):
            chunk = order[b * gb:(b + 1) * gb]  # one global batch
            yield chunk[self.rank::self.world]

"""Samplers that make every epoch a pure function of (seed, epoch).

Each training item is an (index, augmentation seed) pair drawn from a generator seeded by the run seed and
the epoch number. So a resumed run replays exactly the epochs an uninterrupted run would have, whatever the
number of DataLoader workers, and DDP ranks see disjoint parts of the same global batches as one process.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

from bodycomp_cli.core.seeds import epoch_seed


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(epoch_seed(seed, epoch))


class TrainSampler(Sampler):
    """Shuffled (index, seed) items, global batches of `batch_size`, this rank's share of each in turn.

    With `steps_per_epoch` the epoch is that many batches drawn from back-to-back permutations (the
    original's 1000 steps); otherwise one pass, dropping a last partial batch so every step is full.
    """

    def __init__(
        self,
        n_items: int,
        batch_size: int,
        seed: int,
        steps_per_epoch: int | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.n_items, self.batch_size, self.seed = n_items, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.steps = steps_per_epoch or max(1, n_items // batch_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def global_batch(self) -> int:
        return min(self.batch_size, self.n_items) if self.steps == 1 else self.batch_size

    def __len__(self) -> int:
        return self.steps * self.global_batch // self.world_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = epoch_generator(self.seed, self.epoch)
        total = self.steps * self.global_batch
        rounds = -(-total // self.n_items)
        order = torch.cat([torch.randperm(self.n_items, generator=generator) for _ in range(rounds)])[:total]
        seeds = torch.randint(0, 2**62, (total,), generator=generator)
        local = self.global_batch // self.world_size
        for step in range(self.steps):
            start = step * self.global_batch + self.rank * local
            for position in range(start, start + local):
                yield int(order[position]), int(seeds[position])


class ShardSampler(Sampler):
    """Every index once, in order, split between ranks without padding (so reduced sums count each once)."""

    def __init__(self, n_items: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, n_items, world_size))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

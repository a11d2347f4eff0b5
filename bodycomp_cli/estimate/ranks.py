"""The processes of a torchrun launch, as estimate sees them: who does which series, and who writes the outputs.

estimate has no tensors to reduce, only a few messages to pass (the folder is ready, the earlier results, every
rank's rows at the end), so the process group is gloo on GPUs as on the CPU, with a long timeout: rank 0
waits at the end for the rank with the slowest series, which may take hours on a large cohort (NCCL and gloo
give up after 10 and 30 minutes by default).
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

from bodycomp_cli.engine.devices import resolve_devices, under_torchrun
from bodycomp_cli.errors import BodycompError

T = TypeVar("T")
WAIT_FOR_SLOWEST_RANK = datetime.timedelta(days=7)


@dataclass(frozen=True)
class Ranks:
    """This process's place among world_size processes (one process: rank 0 of 1, and no process group).

    joined: the processes of one torchrun launch, in a process group. world_size > 1 without it is one task
    of `--shard K/N` (a Slurm array): alone, it estimates its share and leaves the merge to a later --resume.
    """

    rank: int = 0
    world_size: int = 1
    joined: bool = False

    @property
    def distributed(self) -> bool:
        """Several processes share the series: each appends its rows to its own files under .ranks/."""
        return self.world_size > 1

    @property
    def alone(self) -> bool:
        """One task of --shard K/N: no other process to wait for or to merge with."""
        return self.distributed and not self.joined

    @property
    def is_main(self) -> bool:
        """This process prepares the output folder, draws the progress bar and prints the summary."""
        return self.rank == 0 or not self.joined

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's share, round robin: rank K takes items K, K + N, K + 2N, ... (the same split on every rank)."""
        return list(items[self.rank :: self.world_size])

    def from_main(self, action: Callable[[], T]) -> T:
        """Run `action` on rank 0 and hand every rank its result; a BodycompError there is raised on every rank."""
        if not self.joined:
            return action()
        message: list[object] = [None]
        if self.is_main:
            try:
                message = [("ok", action())]
            except BodycompError as error:
                message = [("error", str(error))]
        torch.distributed.broadcast_object_list(message, src=0)
        kind, value = message[0]  # type: ignore[misc]
        if kind == "error":
            raise BodycompError(str(value))
        return value  # type: ignore[return-value]

    def gather(self, value: T) -> list[T]:
        """Every rank's value, in rank order, on rank 0 ([] on the others); also waits for every rank."""
        if not self.joined:
            return [value]
        gathered: list[T] | None = [None] * self.world_size if self.is_main else None  # type: ignore[list-item]
        torch.distributed.gather_object(value, gathered, dst=0)
        return gathered if gathered is not None else []


@contextlib.contextmanager
def joined_ranks() -> Iterator[Ranks]:
    """Join torchrun's processes when there are several (RANK, WORLD_SIZE), else run as the only one."""
    if not under_torchrun():
        yield Ranks()
        return
    setup = resolve_devices(None)
    if setup.world_size == 1:
        yield Ranks()
        return
    if setup.device.type == "cuda" and setup.device.index >= torch.cuda.device_count():
        raise BodycompError(
            f"LOCAL_RANK {setup.local_rank}: only {torch.cuda.device_count()} GPU(s) visible on this node; "
            "start at most that many processes per node (torchrun --nproc_per_node)"
        )
    joined_here = not torch.distributed.is_initialized()
    if joined_here:
        if setup.device.type == "cuda":
            torch.cuda.set_device(setup.device)
        torch.distributed.init_process_group("gloo", timeout=WAIT_FOR_SLOWEST_RANK)
    try:
        yield Ranks(setup.rank, setup.world_size, joined=True)
    finally:
        if joined_here:
            torch.distributed.destroy_process_group()


def shard_ranks(spec: str) -> Ranks:
    """`--shard K/N`: this task is shard K (0 to N-1) of N, e.g. `--shard $SLURM_ARRAY_TASK_ID/8`."""
    shard, _, count = spec.partition("/")
    if not (shard.strip().isdigit() and count.strip().isdigit()) or not 0 <= int(shard) < int(count):
        raise BodycompError(f"--shard {spec}: expected K/N with 0 <= K < N, e.g. --shard 0/8 (K counts from 0)")
    if under_torchrun() and resolve_devices(None).world_size > 1:
        raise BodycompError(
            "--shard cannot be used under torchrun: torchrun already shares the series among its processes"
        )
    return Ranks(int(shard), int(count))

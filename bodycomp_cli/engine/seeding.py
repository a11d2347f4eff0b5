"""Seeds, and the deterministic-algorithm settings of one run (restored afterwards)."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from bodycomp_cli.core.seeds import SEED_MIX as _SEED_MIX

_RANK_MIX = 2_147_483_647  # a prime far above seed * _SEED_MIX + epoch for any realistic epoch count
CUBLAS_WORKSPACE = "CUBLAS_WORKSPACE_CONFIG"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_epoch(seed: int, epoch: int, rank: int = 0) -> None:
    """Reseed the global RNGs from (seed, epoch, rank), so a resumed epoch draws what the uninterrupted one did.

    Each DDP rank gets its own stream: with one shared stream every rank would draw the same dropout masks
    and DataLoader worker seeds for different samples. Rank 0's stream is the single-process one.
    """
    seed_everything(seed * _SEED_MIX + epoch + rank * _RANK_MIX)


@contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """Deterministic algorithms (and no cuDNN autotuning) for one run, or the fast defaults; restored on exit.

    Only the run changes these process-wide switches: a notebook or test that trains twice gets its own back.
    """
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        os.environ.get(CUBLAS_WORKSPACE),
    )
    if enabled:
        os.environ.setdefault(CUBLAS_WORKSPACE, ":4096:8")  # cuBLAS needs it for determinism
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled  # autotuning picks kernels by timing: fast, not reproducible
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]
        if saved[4] is None:
            os.environ.pop(CUBLAS_WORKSPACE, None)
        else:
            os.environ[CUBLAS_WORKSPACE] = saved[4]

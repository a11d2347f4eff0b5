"""Seeds, deterministic algorithms, and holding Ctrl-C back while run files are written."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
from collections.abc import Iterator

import numpy as np
import torch

from bodycomp_cli.data.sampling import _SEED_MIX


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_epoch(seed: int, epoch: int) -> None:
    """Reseed the global RNGs from (seed, epoch), so a resumed epoch draws what the uninterrupted one did."""
    seed_everything(seed * _SEED_MIX + epoch)


def use_deterministic_algorithms(enabled: bool) -> None:
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for determinism
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


@contextlib.contextmanager
def sigint_deferred() -> Iterator[None]:
    """Let a Ctrl-C that arrives inside the block take effect only once the block has finished."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt

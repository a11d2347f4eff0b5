"""Seeds and deterministic algorithms."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from bodycomp_cli.core.seeds import SEED_MIX as _SEED_MIX


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
    else:  # undo an earlier deterministic run in the same process (tests, notebooks)
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = True

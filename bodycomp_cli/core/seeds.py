"""How a run seed and an epoch number make one seed: shared by the samplers (data) and the global RNGs (engine)."""

from __future__ import annotations

SEED_MIX = 1_000_003  # a prime, to keep (seed, epoch) pairs from colliding


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch of a run: the same (seed, epoch) always gives the same draws, resumed or not."""
    return seed * SEED_MIX + epoch

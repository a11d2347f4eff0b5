"""One default for worker processes: the cores this process may run on, shared by the ranks on its node.

The cores come from the CPU affinity (a Slurm or container CPU set), not os.cpu_count(), which counts the
whole machine. Under torchrun every rank on a node starts its own workers, so each rank gets its share:
8 ranks on 16 cores get 2 cores each, not 16.
"""

from __future__ import annotations

import os

LOADER_WORKERS_CAP = 8  # more DataLoader workers than this per rank only add memory (each holds a copy)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS reports one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def ranks_on_node() -> int:
    """Processes torchrun started on this node (LOCAL_WORLD_SIZE), 1 outside torchrun."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def cores_per_rank() -> int:
    """This process's share of the usable cores: the default for process pools (prepare, phantoms)."""
    return max(1, usable_cores() // ranks_on_node())


def default_loader_workers() -> int:
    """DataLoader workers per rank: half its cores feed the model, the other half run it; 1 to LOADER_WORKERS_CAP."""
    return max(1, min(LOADER_WORKERS_CAP, cores_per_rank() // 2))

"""Where inference runs, chosen once per command: the device, DataParallel or not, and one AMP policy."""

from __future__ import annotations

from dataclasses import dataclass

from bodycomp_cli.core.amp import AmpPolicy, choose_amp
from bodycomp_cli.engine.devices import resolve_devices


@dataclass(frozen=True)
class Placement:
    device: str  # "cpu" or "cuda:0"
    n_gpus: int  # DataParallel over cuda:0..n-1 when > 1
    amp: AmpPolicy  # autocast dtype (None: full precision), the same rule as training's (core/amp.py)
    description: str  # e.g. "1 GPU (cuda:0), bf16 autocast", for the log and evaluation.json


def choose_placement(gpus: int | None = 0, amp: bool | None = None, distributed: bool = False) -> Placement:
    """Devices as training chooses them (-g; None: 1 GPU when CUDA is there, else the CPU), and --amp/--no-amp.

    distributed (estimate under torchrun): this rank's own device, LOCAL_RANK's GPU or the CPU; without it a
    multi-process launch is refused (evaluate). amp: None autocasts on CUDA and keeps the CPU exact, True also
    uses bf16 on CPUs with bf16 instructions, False is full precision (core/amp.choose_amp).
    Example: choose_placement(0).description -> "the CPU"
    """
    setup = resolve_devices(gpus, single_process=not distributed)
    if setup.distributed:  # each rank its own device, no DDP wrapper: inference needs no gradient reduction
        description = f"{setup.world_size} torchrun processes, one device each (rank {setup.rank}: {setup.device})"
    else:
        description = setup.describe()
    policy = choose_amp(setup.device, amp)
    if policy.enabled:
        description += f", {policy.describe(training=False)}"
    return Placement(str(setup.device), setup.n_gpus, policy, description)

"""Where a new run starts, when not from scratch: other weights (--init-weights, the original's -w) and a later
epoch number (-i/--initial_epoch, as the original passed to Keras's fit). Unlike --resume, the optimizer, the
history and the best score start fresh.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from bodycomp_cli.engine.devices import strip_prefix
from bodycomp_cli.errors import BodycompError


@dataclass
class WarmStart:
    source: str | None = None  # the --init-weights path, recorded in config.json
    weights: Callable[[Any], dict[str, torch.Tensor]] | None = None  # task -> state dict, called after the checks
    initial_epoch: int = 0  # epochs counted as done: training runs initial_epoch + 1 .. --epochs


def check_warm_start(start: WarmStart, epochs: int, resume: bool) -> None:
    if start.initial_epoch < 0:
        raise BodycompError(f"-i/--initial-epoch {start.initial_epoch}: must be 0 or more")
    if start.initial_epoch >= epochs:
        raise BodycompError(f"-i/--initial-epoch {start.initial_epoch}: leaves no epoch to train (-e {epochs})")
    if resume and (start.source or start.initial_epoch):
        raise BodycompError("--init-weights and -i start a new run from other weights; --resume continues a run")


def load_initial_weights(model: torch.nn.Module, task: Any, start: WarmStart) -> None:
    if start.weights is None:
        return
    try:
        model.load_state_dict(strip_prefix(start.weights(task)))
    except RuntimeError as error:  # missing, unexpected or differently shaped tensors
        detail = str(error).strip().splitlines()
        raise BodycompError(f"--init-weights {start.source}: does not fit this model ({detail[-1].strip()})") from None


def skip_to_epoch(trainer: Any, start: WarmStart) -> None:
    """Number the first epoch initial_epoch + 1 and set the learning rate the schedule gives it."""
    if not start.initial_epoch:
        return
    trainer.start_epoch = start.initial_epoch + 1
    scheduler = trainer.scheduler
    scheduler.last_epoch = start.initial_epoch
    for group, base, factor in zip(
        trainer.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True
    ):
        group["lr"] = base * factor(start.initial_epoch)
    scheduler._last_lr = [group["lr"] for group in trainer.optimizer.param_groups]

"""Engine settings shared by every task, validated before anything is written."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from bodycomp_cli.core.workers import default_loader_workers
from bodycomp_cli.errors import BodycompError

SCHEDULES = ("cosine", "step")


def default_run_name() -> str:
    """untitled_model_YYYY_MM_DD_HH_MM_SS, as the original toolkit named runs."""
    return datetime.now().strftime("untitled_model_%Y_%m_%d_%H_%M_%S")


@dataclass
class EngineConfig:
    epochs: int = 100  # total epochs (also after --resume)
    batch_size: int = 16  # global batch, split over GPUs or DDP ranks
    learning_rate: float = 1e-3  # Adam's initial learning rate
    schedule: str = "cosine"  # cosine: to 0 over the epochs; step: x0.1 at 50% and x0.01 at 75%
    gpus: int | None = None  # None: 1 if CUDA is available else 0; refused under torchrun
    # --amp/--no-amp (core/amp.choose_amp): None autocasts on CUDA (bf16 from Ampere on, else fp16 + GradScaler)
    # and keeps the CPU exact; True also uses bf16 on CPUs with bf16 instructions; False is fp32 everywhere.
    amp: bool | None = None
    seed: int = 0  # model init, sampling order and augmentation all derive from it
    deterministic: bool = False  # deterministic algorithms as well (identical history on the CPU)
    workers: int = -1  # DataLoader workers per rank; -1 picks core.workers.default_loader_workers()
    steps_per_epoch: int | None = None  # K batches per epoch instead of one pass
    quiet: bool = False  # no progress bar or epoch lines
    resume: bool = False  # continue from checkpoint_last.pt
    tensorboard: bool = True  # events in RUN/tensorboard/ when tensorboard is installed
    low_memory: bool = False  # activation checkpointing and eager release of freed buffers (engine/memory.py)
    save_every: int = 1  # checkpoint_last.pt every N epochs; the final epoch and each new best are always saved

    def resolved_workers(self) -> int:
        return default_loader_workers() if self.workers < 0 else self.workers


def check_engine_config(config: EngineConfig) -> None:
    """Refuse impossible settings with the option's name, before any folder is made."""
    if config.batch_size < 1:
        raise BodycompError(f"-b/--batch-size {config.batch_size}: must be at least 1")
    if not (math.isfinite(config.learning_rate) and config.learning_rate > 0):
        raise BodycompError(f"-l/--learning-rate {config.learning_rate}: must be a positive number")
    if config.epochs < 1:
        raise BodycompError(f"-e/--epochs {config.epochs}: must be at least 1")
    if config.schedule not in SCHEDULES:
        raise BodycompError(f"--schedule {config.schedule!r}: valid choices: {', '.join(SCHEDULES)}")
    if config.steps_per_epoch is not None and config.steps_per_epoch < 1:
        raise BodycompError(f"--steps-per-epoch {config.steps_per_epoch}: must be at least 1")
    if config.save_every < 1:
        raise BodycompError(f"--save-every {config.save_every}: must be at least 1")
    if config.workers < -1:
        raise BodycompError(f"--workers {config.workers}: must be 0 or more")


def schedule_factor(schedule: str, epochs: int):
    """The learning-rate multiplier for 0-based epoch e (for torch's LambdaLR)."""
    if schedule == "step":
        # As the original's Keras LearningRateScheduler: 0-based epoch e drops strictly past 50 % and 75 %.
        return lambda e: 0.01 if e > 0.75 * epochs else (0.1 if e > 0.5 * epochs else 1.0)
    return lambda e: 0.5 * (1.0 + math.cos(math.pi * min(e, epochs) / epochs))

"""The options train-seg and train-select share, declared once, and the one place that hands them to the engine.

A command takes them as one parameter, `train: TrainOptions`, under `@option_group("train", TrainOptions)`
(commands/common.py), which shows Typer each field as an option of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Annotated

import typer

from bodycomp_cli.commands import original_options as original
from bodycomp_cli.commands.common import (
    DATA_PANEL,
    DEVICES_PANEL,
    OPTIMISATION_PANEL,
    AmpOption,
    GpusOption,
    computed_default,
)

if TYPE_CHECKING:
    from bodycomp_cli.engine.config import EngineConfig
    from bodycomp_cli.engine.warm_start import WarmStart


class Schedule(str, Enum):
    cosine = "cosine"
    step = "step"


NameOption = Annotated[
    str | None,
    typer.Option(
        "-a", "--name", help="Run folder name. \\[default: untitled_model_ + the date and time]", show_default=False
    ),
]
LearningRateOption = Annotated[
    float,
    typer.Option(
        "-l",
        "--learning-rate",
        "--learning_rate",
        help="Initial learning rate (Adam).",
        rich_help_panel=OPTIMISATION_PANEL,
    ),
]
BatchOption = Annotated[
    int,
    typer.Option(
        "-b",
        "--batch-size",
        "--batch_size",
        help="Global batch size (split over GPUs/ranks).",
        rich_help_panel=OPTIMISATION_PANEL,
    ),
]
EpochsOption = Annotated[
    int, typer.Option("-e", "--epochs", help="Total epochs (also with --resume).", rich_help_panel=OPTIMISATION_PANEL)
]
ScheduleOption = Annotated[
    Schedule,
    typer.Option(
        "--schedule",
        help="cosine, or step (x0.1 at 50% and x0.01 at 75% of the epochs).",
        rich_help_panel=OPTIMISATION_PANEL,
    ),
]
SeedOption = Annotated[
    int,
    typer.Option(
        "--seed", help="Seed of model init, sampling order and augmentation.", rich_help_panel=OPTIMISATION_PANEL
    ),
]
DeterministicOption = Annotated[
    bool,
    typer.Option(
        "--deterministic",
        help="Deterministic algorithms too: identical history.csv on the CPU.",
        rich_help_panel=OPTIMISATION_PANEL,
    ),
]
WorkersOption = Annotated[
    int,
    typer.Option(
        "--workers",
        help="DataLoader worker processes per rank. \\[default: half the rank's share of the usable cores, 1 to 8]",
        **computed_default(DEVICES_PANEL),
    ),
]
StepsOption = Annotated[
    int | None,
    typer.Option(
        "--steps-per-epoch",
        help="Sample K batches per epoch instead of one full pass. \\[default: one full pass]",
        **computed_default(OPTIMISATION_PANEL),
    ),
]
LowMemoryOption = Annotated[
    bool,
    typer.Option(
        "--low-memory",
        help="Recompute activations in the backward pass (activation checkpointing) and return freed buffers "
        "to the OS: much less memory, slower steps (figures in docs/performance.md).",
        rich_help_panel=DEVICES_PANEL,
    ),
]
SaveEveryOption = Annotated[
    int,
    typer.Option(
        "--save-every",
        help="Write checkpoint_last.pt every N epochs (the final epoch and each new best always); "
        "--resume redoes the epochs since.",
        min=1,
        rich_help_panel=OPTIMISATION_PANEL,
    ),
]
QuietOption = Annotated[bool, typer.Option("--quiet", help="No progress bar or epoch lines.")]
ResumeOption = Annotated[bool, typer.Option("--resume", help="Continue the run NAME from its checkpoint_last.pt.")]
# The window that shaped the data is the data's own (dataset.json); these override it.
WindowLevelOption = Annotated[
    float | None,
    typer.Option(
        "--window-level",
        help="HU window level of the model input. \\[default: DATA_DIR/dataset.json's, else 40]",
        **computed_default(DATA_PANEL),
    ),
]
WindowWidthOption = Annotated[
    float | None,
    typer.Option(
        "--window-width",
        help="HU window width of the model input. \\[default: DATA_DIR/dataset.json's, else 400]",
        **computed_default(DATA_PANEL),
    ),
]


@dataclass(frozen=True)
class TrainOptions:
    """What train-seg and train-select share: the run's name, the engine's settings, the input window, -w."""

    name: NameOption = None
    gpus: GpusOption = None
    learning_rate: LearningRateOption = 1e-3  # option_group("train", TrainOptions, learning_rate=...) per command
    batch_size: BatchOption = 16
    epochs: EpochsOption = 100
    schedule: ScheduleOption = Schedule.cosine
    amp: AmpOption = None
    seed: SeedOption = 0
    deterministic: DeterministicOption = False
    workers: WorkersOption = -1
    steps_per_epoch: StepsOption = None
    low_memory: LowMemoryOption = False
    save_every: SaveEveryOption = 1
    quiet: QuietOption = False
    resume: ResumeOption = False
    init_weights: original.InitWeightsOption = None
    window_level: WindowLevelOption = None
    window_width: WindowWidthOption = None

    def engine_config(self) -> EngineConfig:
        """The engine's settings, each option by name."""
        from bodycomp_cli.engine.config import EngineConfig

        return EngineConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            schedule=self.schedule.value,
            gpus=self.gpus,
            amp=self.amp,
            seed=self.seed,
            deterministic=self.deterministic,
            workers=self.workers,
            steps_per_epoch=self.steps_per_epoch,
            quiet=self.quiet,
            resume=self.resume,
            low_memory=self.low_memory,
            save_every=self.save_every,
        )

    def warm_start(self, initial_epoch: int = 0) -> WarmStart:
        """Where training starts: -w's weights (none: a new model) and -i's epochs counted as done."""
        from bodycomp_cli.tasks.init_weights import warm_start

        return warm_start(self.init_weights, initial_epoch)

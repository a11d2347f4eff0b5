"""train-seg and train-select: thin Typer commands over the typed training functions in bodycomp_cli.tasks."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from bodycomp_cli.commands import original_options as original
from bodycomp_cli.commands.common import GpusOption, LevelsOption, report_user_errors, set_malloc_policy


class Schedule(str, Enum):
    cosine = "cosine"
    step = "step"


DataDir = Annotated[
    Path, typer.Argument(help="Training data folder (the original toolkit's layout).", show_default=False)
]
ModelsDir = Annotated[Path, typer.Argument(help="Folder that receives the run folder NAME/.", show_default=False)]
NameOption = Annotated[
    str | None,
    typer.Option(
        "-a", "--name", help="Run folder name [default: untitled_model_YYYY_MM_DD_HH_MM_SS].", show_default=False
    ),
]
LearningRateOption = Annotated[
    float, typer.Option("-l", "--learning-rate", "--learning_rate", help="Initial learning rate (Adam).")
]
BatchOption = Annotated[
    int, typer.Option("-b", "--batch-size", "--batch_size", help="Global batch size (split over GPUs/ranks).")
]
EpochsOption = Annotated[int, typer.Option("-e", "--epochs", help="Total epochs (also with --resume).")]
ScheduleOption = Annotated[
    Schedule, typer.Option("--schedule", help="cosine, or step (x0.1 at 50% and x0.01 at 75% of the epochs).")
]
AmpOption = Annotated[
    bool | None,
    typer.Option(
        "--amp/--no-amp",
        help="Mixed precision: bf16 autocast on GPUs from Ampere on, else fp16 + GradScaler; --amp also on CPUs "
        "with bf16 instructions (AVX512-BF16, AMX). [default: on CUDA; off on the CPU]",
        show_default=False,
    ),
]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed of model init, sampling order and augmentation.")]
DeterministicOption = Annotated[
    bool, typer.Option("--deterministic", help="Deterministic algorithms too: identical history.csv on the CPU.")
]
WorkersOption = Annotated[
    int,
    typer.Option(
        "--workers",
        help="DataLoader worker processes per rank [default: half the rank's share of the usable cores, 1 to 8].",
        show_default=False,
    ),
]
StepsOption = Annotated[
    int | None,
    typer.Option("--steps-per-epoch", help="Sample K batches per epoch instead of one full pass.", show_default=False),
]
LowMemoryOption = Annotated[
    bool,
    typer.Option(
        "--low-memory",
        help="Recompute activations in the backward pass (activation checkpointing) and return freed buffers "
        "to the OS: much less memory, slower steps (figures in docs/performance.md).",
    ),
]
SaveEveryOption = Annotated[
    int,
    typer.Option(
        "--save-every",
        help="Write checkpoint_last.pt every N epochs (the final epoch and each new best always); "
        "--resume redoes the epochs since.",
        min=1,
    ),
]
QuietOption = Annotated[bool, typer.Option("--quiet", help="No progress bar or epoch lines.")]
ResumeOption = Annotated[bool, typer.Option("--resume", help="Continue the run NAME from its checkpoint_last.pt.")]


def amp_settings(amp: bool | None) -> dict[str, bool]:
    """--amp/--no-amp as EngineConfig fields: unset keeps the engine's defaults (CUDA on, the CPU off); --amp
    turns autocast on for the CPU as for CUDA (bf16 where the CPU has bf16 instructions); --no-amp everywhere off."""
    if amp is None:
        return {}
    return {"amp": amp, "cpu_amp": amp}


def register(app: typer.Typer) -> None:
    @app.command("train-seg")
    @report_user_errors
    def train_seg(
        data_dir: DataDir,
        models_dir: ModelsDir,
        name: NameOption = None,
        gpus: GpusOption = None,
        learning_rate: LearningRateOption = 1e-3,
        batch_size: BatchOption = 16,
        epochs: EpochsOption = 100,
        thoracic: Annotated[
            bool,
            typer.Option(
                "-t",
                "--thoracic",
                "--thoracic-model",
                "--thoracic_model",
                help="Thoracic model: labels 0-2, no visceral fat.",
            ),
        ] = False,
        arch: Annotated[
            str | None,
            typer.Option(
                "--arch",
                help="smp architecture (unet, fpn, deeplabv3plus, ...), or bridge-unet (the original's U-Net; "
                "-C/-M/-N/-A imply it). Default: unet.",
                show_default=False,
            ),
        ] = None,
        encoder: Annotated[str, typer.Option("--encoder", help="smp encoder, randomly initialised.")] = "resnet34",
        image_size: Annotated[
            int, typer.Option("--image-size", help="Slices are resized to S x S (multiple of 32).")
        ] = 512,
        window_level: Annotated[
            float, typer.Option("--window-level", help="HU window level of the model input.")
        ] = 40.0,
        window_width: Annotated[
            float, typer.Option("--window-width", help="HU window width of the model input.")
        ] = 400.0,
        schedule: ScheduleOption = Schedule.cosine,
        amp: AmpOption = None,
        seed: SeedOption = 0,
        deterministic: DeterministicOption = False,
        workers: WorkersOption = -1,
        steps_per_epoch: StepsOption = None,
        low_memory: LowMemoryOption = False,
        save_every: SaveEveryOption = 1,
        quiet: QuietOption = False,
        resume: ResumeOption = False,
        init_weights: original.InitWeightsOption = None,
        compression_channels: original.CompressionOption = None,
        decompression_channels: original.DecompressionOption = None,
        num_convs: original.NumConvsOption = None,
        activation: original.ActivationOption = None,
        apply_window_function: original.ApplyWindowOption = False,
        input_windowed: original.InputWindowedOption = False,
        decay_half_time: original.DecayHalfTimeOption = None,
    ) -> None:
        """Train the segmentation model (muscle, subcutaneous fat, visceral fat) on raw-HU .npy arrays.

        Example: bodycomp train-seg data/seg models/ -a seg_v1 -e 50 -b 16 --encoder resnet34
        """
        from bodycomp_cli.engine.config import EngineConfig
        from bodycomp_cli.tasks.init_weights import warm_start
        from bodycomp_cli.tasks.segmentation import SegmentationSettings, train_segmentation

        original.refuse_decay_half_time(decay_half_time)
        original.check_windowing_options(apply_window_function, input_windowed)
        arch, arch_options = original.unet_arch(
            arch, compression_channels, decompression_channels, num_convs, activation
        )
        settings = SegmentationSettings(
            arch, encoder, thoracic, image_size, window_level, window_width, arch_options=arch_options,
            input_windowed=input_windowed,
        )  # fmt: skip
        set_malloc_policy(low_memory)
        engine = EngineConfig(
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            schedule=schedule.value,
            gpus=gpus,
            **amp_settings(amp),
            seed=seed,
            deterministic=deterministic,
            workers=workers,
            steps_per_epoch=steps_per_epoch,
            quiet=quiet,
            resume=resume,
            low_memory=low_memory,
            save_every=save_every,
        )
        train_segmentation(data_dir, models_dir, settings, engine, name, warm_start(init_weights))

    @app.command("train-select")
    @report_user_errors
    def train_select(
        data_dir: DataDir,
        models_dir: ModelsDir,
        name: NameOption = None,
        gpus: GpusOption = None,
        learning_rate: LearningRateOption = 1e-4,
        batch_size: BatchOption = 16,
        epochs: EpochsOption = 100,
        levels: LevelsOption = None,
        threshold: Annotated[
            float, typer.Option("-t", "--threshold", help="Target = sigmoid(offset_mm / THRESHOLD).")
        ] = 10.0,
        image_size: Annotated[
            int, typer.Option("--image-size", help="PNGs are resized to S x S with antialias.")
        ] = 256,
        arch: Annotated[
            str,
            typer.Option(
                "--arch",
                help="timm model (densenet121, resnet18, ...; 3 input channels with --context-mm, else 1), or "
                "bridge-densenet (the original's DenseNet; --nb_*, --growth_rate, --compression_rate, -I, -A, -B "
                "imply it). Default: densenet121.",
                show_default=False,
            ),
        ] = None,
        context_mm: Annotated[
            float | None,
            typer.Option(
                "--context-mm",
                help="Also feed the slices nearest z - D and z + D mm as channels (needs series and z_mm in the "
                "meta CSVs). 0: the slice alone, as the original toolkit. Default: 10 with the series head, else 0.",
                show_default=False,
            ),
        ] = None,
        series_head: Annotated[
            bool | None,
            typer.Option(
                "--series-head/--no-series-head",
                help="After the per-slice CNN, train a 1-D convolution over its features along each whole series, "
                "which reads the level from anatomy along z (needs series and z_mm in the meta CSVs). Default: on "
                "when they are there; --no-series-head: the per-slice model alone, as the original toolkit.",
                show_default=False,
            ),
        ] = None,
        schedule: ScheduleOption = Schedule.cosine,
        amp: AmpOption = None,
        seed: SeedOption = 0,
        deterministic: DeterministicOption = False,
        workers: WorkersOption = -1,
        steps_per_epoch: StepsOption = None,
        low_memory: LowMemoryOption = False,
        save_every: SaveEveryOption = 1,
        quiet: QuietOption = False,
        resume: ResumeOption = False,
        init_weights: original.InitWeightsOption = None,
        initial_epoch: original.InitialEpochOption = 0,
        nb_layers_per_block: original.LayersPerBlockOption = None,
        nb_blocks: original.BlocksOption = None,
        nb_initial_filters: original.InitialFiltersOption = None,
        growth_rate: original.GrowthOption = None,
        compression_rate: original.CompressionRateOption = None,
        initializer: original.InitializerOption = None,
        activation: original.ActivationOption = None,
        omit_batch_norm: original.OmitBatchNormOption = False,
    ) -> None:
        """Train the slice-selection model (per-level z-offsets) on 8-bit PNG slices and meta CSVs.

        Example: bodycomp train-select data/slices models/ -a select_v1 -L T5 T8 T10 L3 --steps-per-epoch 1000
        """
        from bodycomp_cli.engine.config import EngineConfig
        from bodycomp_cli.tasks.init_weights import warm_start
        from bodycomp_cli.tasks.slice_selection import SliceSelectionSettings, train_slice_selection

        arch, arch_options = original.densenet_arch(
            arch, "densenet121", layers_per_block=nb_layers_per_block, blocks=nb_blocks,
            initial_filters=nb_initial_filters, growth_rate=growth_rate, compression_rate=compression_rate,
            activation_name=activation, initializer=initializer, omit_batch_norm=omit_batch_norm,
        )  # fmt: skip
        settings = SliceSelectionSettings(
            levels=levels or ["L3"], arch=arch, threshold_mm=threshold, image_size=image_size, context_mm=context_mm,
            arch_options=arch_options, series_head=series_head,
        )  # fmt: skip
        set_malloc_policy(low_memory)
        engine = EngineConfig(
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            schedule=schedule.value,
            gpus=gpus,
            **amp_settings(amp),
            seed=seed,
            deterministic=deterministic,
            workers=workers,
            steps_per_epoch=steps_per_epoch,
            quiet=quiet,
            resume=resume,
            low_memory=low_memory,
            save_every=save_every,
        )
        train_slice_selection(data_dir, models_dir, settings, engine, name, warm_start(init_weights, initial_epoch))

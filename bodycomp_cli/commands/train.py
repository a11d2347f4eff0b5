"""train-seg and train-select: thin Typer commands over the typed training functions in bodycomp_cli.tasks.

The options both share (engine, run name, window, -w) are declared once, in commands/train_options.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from bodycomp_cli.commands import original_options as original
from bodycomp_cli.commands.common import (
    DATA_PANEL,
    MODEL_PANEL,
    computed_default,
    levels_option,
    option_group,
    report_user_errors,
    set_malloc_policy,
)
from bodycomp_cli.commands.train_options import TrainOptions

DataDir = Annotated[
    Path, typer.Argument(help="Training data folder (the original toolkit's layout).", show_default=False)
]
ModelsDir = Annotated[Path, typer.Argument(help="Folder that receives the run folder NAME/.", show_default=False)]


def training_command(
    app: typer.Typer, name: str, learning_rate: float, original_group: tuple[str, type]
) -> Callable[[Callable[..., None]], None]:
    """Register a training command NAME: its `train` parameter takes TrainOptions (with this default learning
    rate), and ORIGINAL_GROUP's (parameter, group) the original network's options, each as options of its own."""

    def register_command(command: Callable[..., None]) -> None:
        command = option_group(*original_group)(command)
        command = option_group("train", TrainOptions, learning_rate=learning_rate)(command)
        app.command(name)(report_user_errors(command))

    return register_command


def register(app: typer.Typer) -> None:
    @training_command(app, "train-seg", learning_rate=1e-3, original_group=("unet", original.UNetFlags))
    def train_seg(
        data_dir: DataDir,
        models_dir: ModelsDir,
        thoracic: Annotated[
            bool,
            typer.Option(
                "-t",
                "--thoracic",
                "--thoracic-model",
                "--thoracic_model",
                help="Thoracic model: labels 0-2, no visceral fat (the levels T1-T12 in estimate).",
                rich_help_panel=DATA_PANEL,
            ),
        ] = False,
        arch: Annotated[
            str | None,
            typer.Option(
                "--arch",
                help="smp architecture (unet, fpn, deeplabv3plus, ...), or bridge-unet (the original's U-Net; "
                "-C/-M/-N/-A imply it). \\[default: unet]",
                **computed_default(MODEL_PANEL),
            ),
        ] = None,
        encoder: Annotated[
            str, typer.Option("--encoder", help="smp encoder, randomly initialised.", rich_help_panel=MODEL_PANEL)
        ] = "resnet34",
        image_size: Annotated[
            int,
            typer.Option(
                "--image-size", help="Slices are resized to S x S (multiple of 32).", rich_help_panel=DATA_PANEL
            ),
        ] = 512,
        apply_window_function: original.ApplyWindowOption = False,
        input_windowed: original.InputWindowedOption = False,
        decay_half_time: original.DecayHalfTimeOption = None,
        *,
        unet: original.UNetFlags,
        train: TrainOptions,
    ) -> None:
        """Train the segmentation model (muscle, subcutaneous fat, visceral fat) on raw-HU .npy arrays.

        Example: bodycomp train-seg data/seg models/ -a seg_v1 -e 50 -b 16 --encoder resnet34
        """
        from bodycomp_cli.nets.original_options import UNET, original_arch
        from bodycomp_cli.tasks.segmentation import SegmentationSettings, train_segmentation

        original.refuse_decay_half_time(decay_half_time)
        original.check_windowing_options(apply_window_function, input_windowed)
        arch, arch_options = original_arch(arch, SegmentationSettings.arch, UNET, **unet.given())
        settings = SegmentationSettings(
            arch=arch, encoder=encoder, thoracic=thoracic, image_size=image_size, window_level=train.window_level,
            window_width=train.window_width, arch_options=arch_options, input_windowed=input_windowed,
        )  # fmt: skip
        set_malloc_policy(train.low_memory)
        train_segmentation(data_dir, models_dir, settings, train.engine_config(), train.name, train.warm_start())

    @training_command(app, "train-select", learning_rate=1e-4, original_group=("densenet", original.DenseNetFlags))
    def train_select(
        data_dir: DataDir,
        models_dir: ModelsDir,
        levels: levels_option("L3") = None,
        threshold: Annotated[
            float,
            typer.Option(
                "-t", "--threshold", help="Target = sigmoid(offset_mm / THRESHOLD).", rich_help_panel=MODEL_PANEL
            ),
        ] = 10.0,
        image_size: Annotated[
            int,
            typer.Option("--image-size", help="PNGs are resized to S x S with antialias.", rich_help_panel=DATA_PANEL),
        ] = 256,
        arch: Annotated[
            str | None,
            typer.Option(
                "--arch",
                help="timm model (densenet121, resnet18, ...; 3 input channels with --context-mm, else 1), or "
                "bridge-densenet (the original's DenseNet; --nb_*, --growth_rate, --compression_rate, -I, -A, -B "
                "imply it). \\[default: densenet121]",
                **computed_default(MODEL_PANEL),
            ),
        ] = None,
        context_mm: Annotated[
            float | None,
            typer.Option(
                "--context-mm",
                help="Also feed the slices nearest z - D and z + D mm as channels (needs series and z_mm in the "
                "meta CSVs). 0: the slice alone, as the original toolkit. \\[default: 10 with the series head, else 0]",
                **computed_default(MODEL_PANEL),
            ),
        ] = None,
        series_head: Annotated[
            bool | None,
            typer.Option(
                "--series-head/--no-series-head",
                help="After the per-slice CNN, train a 1-D convolution over its features along each whole series, "
                "which reads the level from anatomy along z (needs series and z_mm in the meta CSVs); "
                "--no-series-head: the per-slice model alone, as the original toolkit. "
                "\\[default: on when the meta CSVs have series and z_mm]",
                **computed_default(MODEL_PANEL),
            ),
        ] = None,
        initial_epoch: original.InitialEpochOption = 0,
        *,
        densenet: original.DenseNetFlags,
        train: TrainOptions,
    ) -> None:
        """Train the slice-selection model (per-level z-offsets) on 8-bit PNG slices and meta CSVs.

        Example: bodycomp train-select data/slices models/ -a select_v1 -L T5 T8 T10 L3 --steps-per-epoch 1000
        """
        from bodycomp_cli.nets.original_options import DENSENET, original_arch
        from bodycomp_cli.tasks.slice_selection import SliceSelectionSettings, train_slice_selection

        arch, arch_options = original_arch(arch, SliceSelectionSettings.arch, DENSENET, **densenet.given())
        settings = SliceSelectionSettings(
            levels=levels or ["L3"], arch=arch, threshold_mm=threshold, image_size=image_size, context_mm=context_mm,
            arch_options=arch_options, series_head=series_head, window_level=train.window_level,
            window_width=train.window_width,
        )  # fmt: skip
        set_malloc_policy(train.low_memory)
        engine, start = train.engine_config(), train.warm_start(initial_epoch)
        train_slice_selection(data_dir, models_dir, settings, engine, train.name, start)

"""The original toolkit's train_segmentation.py / train_slice_selection.py options that have no twin among ours.

Each keeps its original short flag and both spellings (--nb_blocks and --nb-blocks). The architecture options
(-C, -M, -N, -A for the U-Net; --nb_*, --growth_rate, --compression_rate, -I, -A, -B for the DenseNet) are declared
here only: which network they pick, and their defaults, are the library's (bodycomp_cli/nets/original_options.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from bodycomp_cli.commands.common import MODEL_PANEL, ORIGINAL_PANEL, computed_default
from bodycomp_cli.errors import BodycompError


def original_option(*flags: str, help: str) -> Any:  # noqa: A002 - typer.Option's own name
    """typer.Option for an architecture option of the original network: FLAGS, plus the original's
    --under_scored spelling of each --dashed-flag; None (its default) means not given."""
    underscored = [f"--{flag[2:].replace('-', '_')}" for flag in flags if flag.startswith("--") and "-" in flag[2:]]
    return typer.Option(*flags, *underscored, help=help, show_default=False, rich_help_panel=ORIGINAL_PANEL)


InitWeightsOption = Annotated[
    Path | None,
    typer.Option(
        "-w",
        "--init-weights",
        "--load-weights",
        "--load_weights",
        help="Start from these weights: a run folder, or a Keras .hdf5 model of the original toolkit (its -w). "
        "Unlike --resume, the optimizer, epochs and history start anew. \\[default: none, a new model]",
        **computed_default(MODEL_PANEL),
    ),
]
ActivationOption = Annotated[
    str | None,
    typer.Option(
        "-A",
        "--activation",
        help="bridge-unet / bridge-densenet: Keras activation name (relu, elu, selu, tanh, ...). \\[default: relu]",
        **computed_default(ORIGINAL_PANEL),
    ),
]
ApplyWindowOption = Annotated[
    bool,
    typer.Option(
        "-p",
        "--apply-window-function",
        "--apply_window_function",
        help="The arrays hold raw HU, to be windowed (the original's -p). This is the default here; see "
        "--input-windowed for arrays that are already windowed.",
        rich_help_panel=ORIGINAL_PANEL,
    ),
]
InputWindowedOption = Annotated[
    bool,
    typer.Option(
        "--input-windowed",
        help="The arrays are already windowed to 0-255 (the original without -p): use them as they are.",
        rich_help_panel=ORIGINAL_PANEL,
    ),
]
DecayHalfTimeOption = Annotated[
    float | None,
    typer.Option(
        "-d",
        "--decay-half-time",
        "--decay_half_time",
        help="Refused: the original accepted it but never used it. Use --schedule step (the original's schedule).",
        show_default=False,
        hidden=True,
    ),
]
InitialEpochOption = Annotated[
    int,
    typer.Option(
        "-i",
        "--initial-epoch",
        "--initial_epoch",
        help="Count this many epochs as done: train epochs I+1..E, with the learning rate the schedule gives them.",
        rich_help_panel=ORIGINAL_PANEL,
    ),
]


@dataclass(frozen=True)
class UNetFlags:
    """train-seg's options of the original U-Net; None: not given (the library fills in the original's)."""

    compression_channels: Annotated[
        list[int] | None,
        original_option(
            "-C", "--compression-channels",
            help="bridge-unet: channels of each compression module, space-separated. \\[default: 16 32 64 128 256 512]",
        ),
    ] = None  # fmt: skip
    decompression_channels: Annotated[
        list[int] | None,
        original_option(
            "-M", "--decompression-channels",
            help="bridge-unet: channels of each decompression module, one fewer than -C. \\[default: 256 128 64 32 16]",
        ),
    ] = None  # fmt: skip
    num_convs: Annotated[
        int | None, original_option("-N", "--num-convs", help="bridge-unet: convolutions per module. \\[default: 1]")
    ] = None
    activation_name: ActivationOption = None

    def given(self) -> dict[str, Any]:
        """The options by UNetOptions' names (nets.original_options.original_arch), None where not given."""
        return asdict(self)


@dataclass(frozen=True)
class DenseNetFlags:
    """train-select's options of the original DenseNet; None: not given (the library fills in the original's)."""

    layers_per_block: Annotated[
        int | None,
        original_option("--nb-layers-per-block", help="bridge-densenet: layers per dense block. \\[default: 12]"),
    ] = None
    blocks: Annotated[
        int | None, original_option("--nb-blocks", help="bridge-densenet: dense blocks. \\[default: 4]")
    ] = None
    initial_filters: Annotated[
        int | None,
        original_option("--nb-initial-filters", help="bridge-densenet: filters of the first conv. \\[default: 16]"),
    ] = None
    growth_rate: Annotated[
        int | None, original_option("--growth-rate", help="bridge-densenet: growth rate k. \\[default: 12]")
    ] = None
    compression_rate: Annotated[
        float | None,
        original_option("--compression-rate", help="bridge-densenet: transition compression. \\[default: 0.5]"),
    ] = None
    initializer: Annotated[
        str | None,
        original_option(
            "-I", "--initializer",
            help="bridge-densenet: Keras initializer of conv kernels and biases. \\[default: glorot_uniform]",
        ),
    ] = None  # fmt: skip
    activation_name: ActivationOption = None
    omit_batch_norm: Annotated[
        bool,
        typer.Option(
            "-B",
            "--omit-batch-norm",
            "--omit_batch_norm",
            help="bridge-densenet: no batch normalization.",
            rich_help_panel=ORIGINAL_PANEL,
        ),
    ] = False

    def given(self) -> dict[str, Any]:
        """The options by DenseNetOptions' names (nets.original_options.original_arch), None where not given."""
        options: dict[str, Any] = asdict(self)
        options["use_batch_norm"] = False if options.pop("omit_batch_norm") else None
        return options


def refuse_decay_half_time(value: float | None) -> None:
    if value is not None:
        raise BodycompError(
            "-d/--decay_half_time: the original toolkit ignored it, so it has no meaning here; "
            "use --schedule step for the original's schedule (x0.1 at 50%, x0.01 at 75% of the epochs)"
        )


def check_windowing_options(apply_window_function: bool, input_windowed: bool) -> None:
    if apply_window_function and input_windowed:
        raise BodycompError("-p/--apply_window_function says the arrays are raw HU, --input-windowed that they are not")

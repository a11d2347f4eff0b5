"""The original toolkit's train_segmentation.py / train_slice_selection.py options that have no twin among ours.

Each keeps its original short flag and both spellings (--nb_blocks and --nb-blocks). The architecture options
(-C, -M, -N, -A for the U-Net; --nb_*, --growth_rate, --compression_rate, -I, -A, -B for the DenseNet) pick the
original network (--arch bridge-unet / bridge-densenet) when --arch is not given, and are refused with any other
--arch, since they would mean nothing there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from bodycomp_cli.errors import BodycompError

UNET, DENSENET = "bridge-unet", "bridge-densenet"

InitWeightsOption = Annotated[
    Path | None,
    typer.Option(
        "-w",
        "--init-weights",
        "--load-weights",
        "--load_weights",
        help="Start from these weights: a run folder, or a Keras .hdf5 model of the original toolkit (its -w). "
        "Unlike --resume, the optimizer, epochs and history start anew.",
        show_default=False,
    ),
]
CompressionOption = Annotated[
    list[int] | None,
    typer.Option(
        "-C",
        "--compression-channels",
        "--compression_channels",
        help="bridge-unet: channels of each compression module, space-separated (default: 16 32 64 128 256 512).",
        show_default=False,
    ),
]
DecompressionOption = Annotated[
    list[int] | None,
    typer.Option(
        "-M",
        "--decompression-channels",
        "--decompression_channels",
        help="bridge-unet: channels of each decompression module, one fewer than -C (default: 256 128 64 32 16).",
        show_default=False,
    ),
]
NumConvsOption = Annotated[
    int | None,
    typer.Option(
        "-N",
        "--num-convs",
        "--num_convs",
        help="bridge-unet: convolutions per module (default: 1).",
        show_default=False,
    ),
]
ActivationOption = Annotated[
    str | None,
    typer.Option(
        "-A",
        "--activation",
        help="bridge-unet / bridge-densenet: Keras activation name (relu, elu, selu, tanh, ...) (default: relu).",
        show_default=False,
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
    ),
]
InputWindowedOption = Annotated[
    bool,
    typer.Option(
        "--input-windowed",
        help="The arrays are already windowed to 0-255 (the original without -p): use them as they are.",
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
    ),
]
LayersPerBlockOption = Annotated[
    int | None,
    typer.Option(
        "--nb-layers-per-block", "--nb_layers_per_block",
        help="bridge-densenet: layers per dense block (default: 12).",
        show_default=False,
    ),
]  # fmt: skip
BlocksOption = Annotated[
    int | None,
    typer.Option("--nb-blocks", "--nb_blocks", help="bridge-densenet: dense blocks (default: 4).", show_default=False),
]
InitialFiltersOption = Annotated[
    int | None,
    typer.Option(
        "--nb-initial-filters", "--nb_initial_filters",
        help="bridge-densenet: filters of the first conv (default: 16).",
        show_default=False,
    ),
]  # fmt: skip
GrowthOption = Annotated[
    int | None,
    typer.Option(
        "--growth-rate", "--growth_rate", help="bridge-densenet: growth rate k (default: 12).", show_default=False
    ),
]
CompressionRateOption = Annotated[
    float | None,
    typer.Option(
        "--compression-rate", "--compression_rate", help="bridge-densenet: transition compression (default: 0.5).",
        show_default=False,
    ),
]  # fmt: skip
InitializerOption = Annotated[
    str | None,
    typer.Option(
        "-I", "--initializer",
        help="bridge-densenet: Keras initializer of conv kernels and biases (default: glorot_uniform).",
        show_default=False,
    ),
]  # fmt: skip
OmitBatchNormOption = Annotated[
    bool,
    typer.Option("-B", "--omit-batch-norm", "--omit_batch_norm", help="bridge-densenet: no batch normalization."),
]


def refuse_decay_half_time(value: float | None) -> None:
    if value is not None:
        raise BodycompError(
            "-d/--decay_half_time: the original toolkit ignored it, so it has no meaning here; "
            "use --schedule step for the original's schedule (x0.1 at 50%, x0.01 at 75% of the epochs)"
        )


def check_windowing_options(apply_window_function: bool, input_windowed: bool) -> None:
    if apply_window_function and input_windowed:
        raise BodycompError("-p/--apply_window_function says the arrays are raw HU, --input-windowed that they are not")


def _resolve(arch: str | None, default_arch: str, bridge: str, given: dict[str, Any]) -> str:
    if arch is None:
        return bridge if given else default_arch
    if arch != bridge and given:
        raise BodycompError(f"{', '.join(given)}: options of the original network; use them with --arch {bridge}")
    return arch


def unet_arch(
    arch: str | None, compression: list[int] | None, decompression: list[int] | None, convs: int | None, act: str | None
) -> tuple[str, dict[str, Any]]:
    """(arch, arch_options) for train-seg: bridge-unet's options filled with the original's defaults."""
    from bodycomp_cli.nets.bridge_unet import (
        DEFAULT_COMPRESSION,
        DEFAULT_DECOMPRESSION,
        ORIGINAL_INPUT,
        check_unet_options,
    )

    given = {"-C": compression, "-M": decompression, "-N": convs, "-A": act}
    arch = _resolve(arch, "unet", UNET, {k: v for k, v in given.items() if v is not None})
    if arch != UNET:
        return arch, {}
    options = {
        "compression_channels": list(compression or DEFAULT_COMPRESSION),
        "decompression_channels": list(decompression or DEFAULT_DECOMPRESSION),
        "num_convs": 1 if convs is None else convs,
        "activation_name": act or "relu",
    }
    check_unet_options(*options.values())
    return arch, {**options, **ORIGINAL_INPUT}


def densenet_arch(arch: str | None, default_arch: str, **options: Any) -> tuple[str, dict[str, Any]]:
    """(arch, arch_options) for train-select: bridge-densenet's options filled with the original's defaults.

    OPTIONS: layers_per_block, blocks, initial_filters, growth_rate, compression_rate, activation_name,
    initializer (None when not given) and omit_batch_norm (False when not given).
    """
    flags = {
        "layers_per_block": "--nb_layers_per_block", "blocks": "--nb_blocks", "initial_filters": "--nb_initial_filters",
        "growth_rate": "--growth_rate", "compression_rate": "--compression_rate", "activation_name": "-A",
        "initializer": "-I", "omit_batch_norm": "-B",
    }  # fmt: skip
    given = {flags[k]: v for k, v in options.items() if v not in (None, False)}
    arch = _resolve(arch, default_arch, DENSENET, given)
    if arch != DENSENET:
        return arch, {}
    from bodycomp_cli.nets.bridge_densenet import ORIGINAL_INPUT, check_densenet_options

    defaults = {
        "layers_per_block": 12, "blocks": 4, "initial_filters": 16, "growth_rate": 12, "compression_rate": 0.5,
        "activation_name": "relu", "initializer": "glorot_uniform",
    }  # fmt: skip
    resolved = {k: default if options.get(k) is None else options[k] for k, default in defaults.items()}
    check_densenet_options(*resolved.values())
    resolved["use_batch_norm"] = not options.get("omit_batch_norm", False)
    return arch, {**resolved, **ORIGINAL_INPUT}

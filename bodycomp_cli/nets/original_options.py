"""Which network the original toolkit's architecture options pick, and their values filled with its defaults.

The training commands take the original's -C/-M/-N/-A (U-Net) and --nb_*, --growth_rate, --compression_rate,
-I, -A, -B (DenseNet). Given without --arch, they pick the original network; with another --arch they are
refused, since they would mean nothing there. The defaults live in UNetOptions and DenseNetOptions alone.
"""

from __future__ import annotations

from typing import Any

from bodycomp_cli.errors import BodycompError
from bodycomp_cli.nets.bridge_densenet import DenseNetOptions
from bodycomp_cli.nets.bridge_unet import UNetOptions

UNET, DENSENET = "bridge-unet", "bridge-densenet"

# Each original network: its options, and the flag of each option (for the refusals).
ORIGINAL_NETS: dict[str, tuple[type, dict[str, str]]] = {
    UNET: (
        UNetOptions,
        {"compression_channels": "-C", "decompression_channels": "-M", "num_convs": "-N", "activation_name": "-A"},
    ),
    DENSENET: (
        DenseNetOptions,
        {
            "layers_per_block": "--nb_layers_per_block",
            "blocks": "--nb_blocks",
            "initial_filters": "--nb_initial_filters",
            "growth_rate": "--growth_rate",
            "compression_rate": "--compression_rate",
            "activation_name": "-A",
            "initializer": "-I",
            "use_batch_norm": "-B",
        },
    ),
}


def original_arch(arch: str | None, default_arch: str, original: str, **given: Any) -> tuple[str, dict[str, Any]]:
    """(arch, arch_options) of a training run from its --arch and the ORIGINAL network's options.

    ARCH: --arch, None when not given. DEFAULT_ARCH: the task's own default. ORIGINAL: UNET or DENSENET.
    GIVEN: ORIGINAL's options by field name (UNetOptions / DenseNetOptions), None where not given.
    Returns (ORIGINAL, every option, the original's defaults where not given) when ARCH is ORIGINAL, or is None and
    an option is given; else (ARCH or DEFAULT_ARCH, {}). Example: original_arch(None, "unet", UNET, num_convs=2)
    """
    options_type, flags = ORIGINAL_NETS[original]
    given = {key: value for key, value in given.items() if value is not None}
    if arch is None:
        arch = original if given else default_arch
    elif arch != original and given:
        named = ", ".join(flags[key] for key in given)
        raise BodycompError(f"{named}: options of the original network; use them with --arch {original}")
    if arch != original:
        return arch, {}
    return arch, options_type(**given).arch_options()

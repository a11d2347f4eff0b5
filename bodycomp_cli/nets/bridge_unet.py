"""The original toolkit's 2D U-Net (train_segmentation.py's -C, -M, -N, -A) in PyTorch.

Each module is N x (3x3 'same' conv -> batch norm -> activation). The compression path max-pools 2x2
after every module but the centre one; the decompression path upsamples 2x (nearest), concatenates the
upsampled features first and the skip second, then convolves. A 1x1 conv gives one logit per class; the
original applied softmax there, which leaves the argmax unchanged, so this model returns the logits.
Modules are registered in the Keras model's layer order, which the weight importer relies on. The input is ours
(the HU window as [0, 1]); input_gain and input_max turn it into the original's 0-255 scale (keras_layers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from bodycomp_cli.errors import BodycompError
from bodycomp_cli.nets.keras_layers import (
    OriginalInputScale,
    SameConv2d,
    activation,
    batch_norm,
    check_activation,
    keras_default_init,
)

# The original's defaults (bin/train_segmentation.py): six compression and five decompression modules.
DEFAULT_COMPRESSION = (16, 32, 64, 128, 256, 512)
DEFAULT_DECOMPRESSION = (256, 128, 64, 32, 16)
# The original's input, min(256 x, 255) of ours: its -p window, clip((HU - low) * 256 / width, 0, 255).
ORIGINAL_INPUT = {"input_gain": 256.0, "input_max": 255.0}


@dataclass(frozen=True)
class UNetOptions:
    """bridge-unet's options (config.json's arch_options), each defaulting to the original toolkit's value
    (train_segmentation.py); refused with the option's flag when impossible."""

    compression_channels: Sequence[int] = DEFAULT_COMPRESSION  # -C: the last is the centre module
    decompression_channels: Sequence[int] = DEFAULT_DECOMPRESSION  # -M: one fewer than -C
    num_convs: int = 1  # -N: convolutions per module
    activation_name: str = "relu"  # -A
    input_gain: float = ORIGINAL_INPUT["input_gain"]
    input_max: float = ORIGINAL_INPUT["input_max"]

    def __post_init__(self) -> None:
        compression, decompression = self.compression_channels, self.decompression_channels
        if not compression or any(c < 1 for c in [*compression, *decompression]):
            raise BodycompError("-C/-M: channel counts must be positive, and -C needs at least one")
        if len(decompression) != len(compression) - 1:
            raise BodycompError(
                f"-M has {len(decompression)} values and -C {len(compression)}: -M needs exactly one fewer than -C"
            )
        if self.num_convs < 1:
            raise BodycompError(f"-N/--num-convs {self.num_convs}: must be at least 1")
        check_activation(self.activation_name)

    def arch_options(self) -> dict[str, Any]:
        """The options as config.json records them (BridgeUNet(num_classes, in_channels, **these))."""
        options = asdict(self)
        for key in ("compression_channels", "decompression_channels"):
            options[key] = list(options[key])
        return options


def unet_size_multiple(compression: Sequence[int]) -> int:
    """Input height and width must be multiples of this (one 2x pooling per compression module but the last)."""
    return 2 ** (len(compression) - 1)


def _conv_stack(in_channels: int, out_channels: int, num_convs: int, activation_name: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(num_convs):
        layers += [
            SameConv2d(in_channels if i == 0 else out_channels, out_channels, 3),
            batch_norm(out_channels),
            activation(activation_name),
        ]
    return nn.Sequential(*layers)


class BridgeUNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 1, **options: Any) -> None:
        """OPTIONS: UNetOptions' fields; those not given are the original's."""
        super().__init__()
        o = UNetOptions(**options)
        self.input_scale = OriginalInputScale(o.input_gain, o.input_max)
        self.size_multiple = unet_size_multiple(o.compression_channels)
        self.compression = nn.ModuleList()
        channels = in_channels
        for c in o.compression_channels:  # the last one is the centre module (no pooling after it)
            self.compression.append(_conv_stack(channels, c, o.num_convs, o.activation_name))
            channels = c
        self.decompression = nn.ModuleList()
        for i, c in enumerate(o.decompression_channels):
            skip = o.compression_channels[-2 - i]
            self.decompression.append(_conv_stack(channels + skip, c, o.num_convs, o.activation_name))
            channels = c
        self.final_conv = nn.Conv2d(channels, num_classes, 1)
        self.pool = nn.MaxPool2d(2)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        keras_default_init(self)  # glorot uniform kernels and zero biases, as the original's Keras layers started

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] % self.size_multiple or x.shape[-1] % self.size_multiple:
            raise ValueError(f"input {tuple(x.shape[-2:])}: height and width must be multiples of {self.size_multiple}")
        x, skips = self.input_scale(x), []
        for module in self.compression[:-1]:
            x = module(x)
            skips.append(x)
            x = self.pool(x)
        x = self.compression[-1](x)
        for module, skip in zip(self.decompression, reversed(skips), strict=True):
            x = module(torch.cat([self.upsample(x), skip], dim=1))
        return self.final_conv(x)

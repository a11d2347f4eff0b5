"""The original toolkit's slice-selection DenseNet (train_slice_selection.py's --nb_* options, -A, -B) in PyTorch.

Layout, as the original builds it: a 7x7 stride-2 'same' conv, a 3x3 stride-2 max pool, then dense blocks.
Each dense layer is [BN] -> act -> 1x1 conv (4 x growth) -> [BN] -> act -> 3x3 conv (growth), and takes the
concatenation of the block input and every earlier layer's output. Unlike textbook DenseNets, a block
outputs only its layers' new features, not its input. Between blocks a transition does [BN] -> act ->
1x1 conv -> 2x2 average pool; its width is int(compression x bookkeeping count), where the bookkeeping count is
the block's input width plus growth per layer. The head is [BN] -> act -> global average -> dense; the
original's sigmoid follows, which this model leaves to the caller, so it returns logits.

Weights start as the original's did: -I (glorot_uniform) for every conv's kernel and bias, Keras's defaults
for the dense layer. A quirk kept on purpose: the original passes -A only to the last dense block, the
transitions and the head; the dense blocks before the last always use relu.
Modules are registered in the Keras model's layer order. The input is ours (the 8-bit slice / 255); input_gain
brings back the 8-bit values the original was trained on (keras_layers.OriginalInputScale).
"""

from __future__ import annotations

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
    check_initializer,
    keras_default_init,
    keras_initialize,
)

# The original's input, 255 x ours: the 8-bit PNG values themselves, not divided by 255.
ORIGINAL_INPUT = {"input_gain": 255.0, "input_max": 255.0}


@dataclass(frozen=True)
class DenseNetOptions:
    """bridge-densenet's options (config.json's arch_options), each defaulting to the original toolkit's value
    (train_slice_selection.py); refused with the option's flag when impossible."""

    layers_per_block: int = 12  # --nb_layers_per_block
    blocks: int = 4  # --nb_blocks
    initial_filters: int = 16  # --nb_initial_filters
    growth_rate: int = 12  # --growth_rate
    compression_rate: float = 0.5  # --compression_rate
    activation_name: str = "relu"  # -A
    initializer: str = "glorot_uniform"  # -I: conv kernels and biases
    use_batch_norm: bool = True  # -B turns it off
    input_gain: float = ORIGINAL_INPUT["input_gain"]
    input_max: float = ORIGINAL_INPUT["input_max"]

    def __post_init__(self) -> None:
        for option, value in (
            ("--nb_layers_per_block", self.layers_per_block),
            ("--nb_blocks", self.blocks),
            ("--nb_initial_filters", self.initial_filters),
            ("--growth_rate", self.growth_rate),
        ):
            if value < 1:
                raise BodycompError(f"{option} {value}: must be at least 1")
        if not 0 < self.compression_rate <= 1:
            raise BodycompError(f"--compression_rate {self.compression_rate}: must be in (0, 1]")
        check_activation(self.activation_name)
        check_initializer(self.initializer)

    def arch_options(self) -> dict[str, Any]:
        """The options as config.json records them (BridgeDenseNet(num_outputs, in_channels, **these))."""
        return asdict(self)


def _norm_act(channels: int, use_batch_norm: bool, activation_name: str) -> list[nn.Module]:
    return ([batch_norm(channels)] if use_batch_norm else []) + [activation(activation_name)]


class DenseBlock(nn.Module):
    def __init__(
        self, in_channels: int, layers: int, growth_rate: int, use_batch_norm: bool, activation_name: str
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(
                *_norm_act(in_channels + i * growth_rate, use_batch_norm, activation_name),
                SameConv2d(in_channels + i * growth_rate, 4 * growth_rate, 1),
                *_norm_act(4 * growth_rate, use_batch_norm, activation_name),
                SameConv2d(4 * growth_rate, growth_rate, 3),
            )
            for i in range(layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features: list[torch.Tensor] = []
        for layer in self.layers:
            features.append(layer(torch.cat([x, *features], dim=1) if features else x))
        return torch.cat(features, dim=1) if len(features) > 1 else features[0]


class BridgeDenseNet(nn.Module):
    def __init__(self, num_outputs: int = 1, in_channels: int = 1, **options: Any) -> None:
        """OPTIONS: DenseNetOptions' fields; those not given are the original's."""
        super().__init__()
        o = DenseNetOptions(**options)
        self.input_scale = OriginalInputScale(o.input_gain, o.input_max)
        self.initial_conv = SameConv2d(in_channels, o.initial_filters, 7, stride=2)
        self.initial_pool = nn.MaxPool2d(3, stride=2)
        stages: list[nn.Module] = []
        channels = o.initial_filters
        block_out = o.layers_per_block * o.growth_rate
        for b in range(o.blocks):
            last = b == o.blocks - 1
            block_activation = o.activation_name if last else "relu"  # the original's quirk, see the docstring
            stages.append(DenseBlock(channels, o.layers_per_block, o.growth_rate, o.use_batch_norm, block_activation))
            if not last:
                channels = int(o.compression_rate * (channels + block_out))
                stages.append(
                    nn.Sequential(
                        *_norm_act(block_out, o.use_batch_norm, o.activation_name),
                        SameConv2d(block_out, channels, 1),
                        nn.AvgPool2d(2, stride=2),
                    )
                )
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(*_norm_act(block_out, o.use_batch_norm, o.activation_name))
        self.dense = nn.Linear(block_out, num_outputs)
        # Keras's defaults for the dense layer; the original gave every conv -I for its kernel and its bias too.
        keras_default_init(self)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                keras_initialize(module.weight, o.initializer)
                keras_initialize(module.bias, o.initializer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.initial_pool(self.initial_conv(self.input_scale(x))))
        return self.dense(self.head(x).mean(dim=(-2, -1)))

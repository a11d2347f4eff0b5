"""PyTorch pieces that behave exactly like the Keras layers the original networks were built from."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bodycomp_cli.errors import BodycompError

# Keras's BatchNormalization defaults. Its momentum weighs the old running value, torch's the new one.
KERAS_BN_EPSILON = 1e-3
KERAS_BN_MOMENTUM = 0.99

# Keras activation names the original scripts accept for -A, and their torch equivalents.
ACTIVATIONS = {
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "selu": nn.SELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "softplus": nn.Softplus,
    "softsign": nn.Softsign,
    "swish": nn.SiLU,
    "silu": nn.SiLU,
    "linear": nn.Identity,
}


def check_activation(name: str) -> None:
    if name not in ACTIVATIONS:
        raise BodycompError(f"-A/--activation {name!r}: valid choices: {', '.join(ACTIVATIONS)}")


def activation(name: str) -> nn.Module:
    check_activation(name)
    return ACTIVATIONS[name]()


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=KERAS_BN_EPSILON, momentum=1.0 - KERAS_BN_MOMENTUM)


class SameConv2d(nn.Conv2d):
    """Conv2d with Keras's padding='same': for a stride above 1 the odd pixel of padding goes after, not before."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> None:
        # With stride 1 and an odd kernel the padding is symmetric, which torch does without a copy.
        self.symmetric = stride == 1 and kernel_size % 2 == 1
        padding = kernel_size // 2 if self.symmetric else 0
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.symmetric:
            return super().forward(x)
        pads = []
        for size, kernel, stride in zip(
            reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride), strict=True
        ):
            total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


# Keras's variance-scaling initializers (-I in the original): (scale, fan mode, distribution).
INITIALIZERS = {
    "glorot_uniform": (1.0, "fan_avg", "uniform"),
    "glorot_normal": (1.0, "fan_avg", "normal"),
    "he_uniform": (2.0, "fan_in", "uniform"),
    "he_normal": (2.0, "fan_in", "normal"),
    "lecun_uniform": (1.0, "fan_in", "uniform"),
    "lecun_normal": (1.0, "fan_in", "normal"),
    "zeros": None,
}
TRUNCATED_NORMAL_STD = 0.87962566103423978  # std of a unit normal truncated at +-2, which Keras divides by


def check_initializer(name: str) -> None:
    if name not in INITIALIZERS:
        raise BodycompError(f"-I/--initializer {name!r}: valid choices: {', '.join(INITIALIZERS)}")


@torch.no_grad()
def keras_initialize(tensor: torch.Tensor, name: str) -> None:
    """Fill TENSOR as the Keras initializer NAME would; a 1-D tensor (a bias) has fan in = fan out = its length."""
    check_initializer(name)
    if INITIALIZERS[name] is None:
        tensor.zero_()
        return
    scale, mode, distribution = INITIALIZERS[name]
    if tensor.dim() == 1:
        fan_in = fan_out = tensor.numel()
    else:
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(tensor)
    variance = scale / (fan_in if mode == "fan_in" else (fan_in + fan_out) / 2.0)
    if distribution == "uniform":
        limit = math.sqrt(3.0 * variance)
        tensor.uniform_(-limit, limit)
    else:
        std = math.sqrt(variance) / TRUNCATED_NORMAL_STD
        nn.init.trunc_normal_(tensor, std=std, a=-2 * std, b=2 * std)


def keras_default_init(model: nn.Module, bias_initializer: str = "zeros", kernel_initializer="glorot_uniform") -> None:
    """Initialise convs and dense layers as Keras does by default (glorot uniform kernels, zero biases)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            keras_initialize(module.weight, kernel_initializer)
            if module.bias is not None:
                keras_initialize(module.bias, bias_initializer)


class OriginalInputScale(nn.Module):
    """Turn our model input into the original's: min(x * gain, top).

    Our segmentation input is the HU window mapped to [0, 1]; the original's was clip((HU - low) * 256 / width,
    0, 255), which is min(256 x, 255). Our slice-selection input is the 8-bit PNG value / 255; the original fed
    the 8-bit value itself, which is 255 x. Inside the model, so training, evaluate and estimate all agree.
    """

    def __init__(self, gain: float, top: float) -> None:
        super().__init__()
        self.gain, self.top = float(gain), float(top)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.gain).clamp(max=self.top)

    def extra_repr(self) -> str:
        return f"gain={self.gain:g}, top={self.top:g}"

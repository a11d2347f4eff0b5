"""One mixed-precision decision for training, validation and inference: the autocast dtype, and a GradScaler or not.

CUDA: bf16 only where the GPU computes it natively (compute capability 8.0, Ampere, and later). Older GPUs
(V100 7.0, T4 7.5) report torch.cuda.is_bf16_supported() as True because bf16 is emulated there, slowly; they
get fp16, whose narrow exponent needs a GradScaler so small gradients do not flush to zero.
CPU: full precision unless asked for (--amp), and then bf16 only on CPUs with bf16 instructions
(AVX512-BF16 or AMX). The same rule for train-*, evaluate and estimate: one `--amp/--no-amp` whose unset
default (None) means autocast on CUDA and exact fp32 on the CPU (docs/training.md, "Precision").
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

BF16_MIN_CAPABILITY = (8, 0)  # Ampere: the first GPUs with bf16 tensor cores
DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16"}


@dataclass(frozen=True)
class AmpPolicy:
    """Autocast settings for one device: dtype None means full precision."""

    device_type: str
    dtype: torch.dtype | None = None

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    @property
    def needs_scaler(self) -> bool:
        """fp16 gradients underflow without loss scaling; bf16 has float32's exponent range and needs none."""
        return self.dtype == torch.float16

    def autocast(self):
        """A context for the forward pass (a no-op at full precision)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        return torch.amp.GradScaler(self.device_type) if self.needs_scaler else None

    def describe(self, training: bool = True) -> str:
        """e.g. "fp16 autocast + GradScaler" (training), "fp16 autocast" (inference), "full precision"."""
        if self.dtype is None:
            return "full precision"
        scaler = " + GradScaler" if training and self.needs_scaler else ""
        return f"{DTYPE_NAMES[self.dtype]} autocast{scaler}"


def cuda_capability(device: torch.device) -> tuple[int, int]:
    return tuple(torch.cuda.get_device_capability(device))  # type: ignore[return-value]


def cpu_has_bf16() -> bool:
    """True on CPUs with bf16 arithmetic instructions (x86 AVX512-BF16 or AMX); emulation does not count."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's own probes (private, so guarded)
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def choose_amp(device: torch.device | str, requested: bool | None = None) -> AmpPolicy:
    """The autocast policy for `device`, from --amp (True), --no-amp (False) or neither (None).

    None: autocast on CUDA, full precision on the CPU (so CPU results are exact). True: also bf16 on CPUs with
    bf16 instructions. False: full precision everywhere. Example: choose_amp(torch.device("cuda", 0)).describe()
    -> "bf16 autocast" on an A100, "fp16 autocast + GradScaler" on a V100.
    """
    device = torch.device(device)
    if requested is False:
        return AmpPolicy(device.type)
    if device.type == "cuda":
        native_bf16 = cuda_capability(device) >= BF16_MIN_CAPABILITY
        return AmpPolicy("cuda", torch.bfloat16 if native_bf16 else torch.float16)
    if device.type == "cpu" and requested and cpu_has_bf16():
        return AmpPolicy("cpu", torch.bfloat16)
    return AmpPolicy(device.type)

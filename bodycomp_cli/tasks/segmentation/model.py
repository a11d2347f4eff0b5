"""Segmentation models: any smp architecture (randomly initialised), or one of bodycomp's own (nets)."""

from __future__ import annotations

import torch

from bodycomp_cli.core.runconfig import RunConfig
from bodycomp_cli.nets import SEGMENTATION_NETS


def segmentation_arch_names() -> list[str]:
    import segmentation_models_pytorch as smp

    return [*SEGMENTATION_NETS, *smp.MODEL_ARCHITECTURES_MAPPING]


def build_segmentation_model(config: RunConfig) -> torch.nn.Module:
    """A fresh model for the config's arch: one input channel, one output per class (logits)."""
    if config.arch in SEGMENTATION_NETS:  # builders take the output count, in_channels, then their options
        return SEGMENTATION_NETS[config.arch](len(config.classes), 1, **(config.arch_options or {}))
    import segmentation_models_pytorch as smp

    return smp.create_model(
        config.arch, encoder_name=config.encoder, encoder_weights=None, in_channels=1, classes=len(config.classes)
    )

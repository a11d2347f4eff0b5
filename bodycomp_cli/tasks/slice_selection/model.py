"""Slice-selection models: any timm model (randomly initialised), or one of bodycomp's own (nets)."""

from __future__ import annotations

import torch

from bodycomp_cli.core.runconfig import RunConfig
from bodycomp_cli.nets import SELECTION_NETS
from bodycomp_cli.tasks.slice_selection.outputs import input_channels, output_count


def selection_arch_names() -> list[str]:
    import timm

    return [*SELECTION_NETS, *timm.list_models()]


def build_selection_model(config: RunConfig) -> torch.nn.Module:
    """A fresh model for the config's arch, with the config's input channels and output units (logits)."""
    if config.arch in SELECTION_NETS:
        return SELECTION_NETS[config.arch](output_count(config), input_channels(config), **(config.arch_options or {}))
    import timm

    return timm.create_model(
        config.arch, pretrained=False, in_chans=input_channels(config), num_classes=output_count(config)
    )

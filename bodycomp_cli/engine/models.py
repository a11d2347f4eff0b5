"""The model registry: the tasks build a new model from it, inference rebuilds a trained one from config.json.

A segmentation model is any smp architecture, a slice-selection model any timm model, both randomly
initialised (no weight download), or one of bodycomp's own architectures (bodycomp_cli.nets:
SEGMENTATION_NETS / SELECTION_NETS, looked up first; a new one is one entry there).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

import torch

from bodycomp_cli.core.runconfig import RunConfig
from bodycomp_cli.errors import BodycompError
from bodycomp_cli.nets import SEGMENTATION_NETS, SELECTION_NETS

ModelBuilder = Callable[[RunConfig], torch.nn.Module]


def check_choice(kind: str, name: str, choices: list[str], show_all: bool = True) -> None:
    """Refuse an unknown registry name, listing the valid ones (or the closest ones when there are many)."""
    if name in choices:
        return
    if show_all:
        raise BodycompError(f"unknown {kind} {name!r}; valid choices: {', '.join(choices)}")
    close = difflib.get_close_matches(name, choices, n=8, cutoff=0.5)
    hint = f"close matches: {', '.join(close)}" if close else f"e.g. {', '.join(choices[:8])}"
    raise BodycompError(f"unknown {kind} {name!r}; {hint} ({len(choices)} valid choices)")


def segmentation_arch_names() -> list[str]:
    import segmentation_models_pytorch as smp

    return [*SEGMENTATION_NETS, *smp.MODEL_ARCHITECTURES_MAPPING]


def selection_arch_names() -> list[str]:
    import timm

    return [*SELECTION_NETS, *timm.list_models()]


def _segmentation_model(config: RunConfig) -> torch.nn.Module:
    if config.arch in SEGMENTATION_NETS:  # builders take the output count, in_channels, then their options
        return SEGMENTATION_NETS[config.arch](len(config.classes), 1, **(config.arch_options or {}))
    import segmentation_models_pytorch as smp

    return smp.create_model(
        config.arch, encoder_name=config.encoder, encoder_weights=None, in_channels=1, classes=len(config.classes)
    )


def _selection_model(config: RunConfig) -> torch.nn.Module:
    if config.arch in SELECTION_NETS:
        options = config.arch_options or {}
        return SELECTION_NETS[config.arch](config.output_count, config.input_channels, **options)
    import timm

    return timm.create_model(
        config.arch, pretrained=False, in_chans=config.input_channels, num_classes=config.output_count
    )


MODEL_FACTORIES: dict[str, ModelBuilder] = {"segmentation": _segmentation_model, "slice_selection": _selection_model}


def build_model(config: RunConfig) -> torch.nn.Module:
    """A fresh, randomly initialised model returning raw outputs (logits) for the config's task and arch."""
    check_choice("task", config.task, list(MODEL_FACTORIES))
    return MODEL_FACTORIES[config.task](config)

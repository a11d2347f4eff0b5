"""The model registry: the tasks build a new model from it, inference rebuilds a trained one from config.json.

A segmentation model is any smp architecture, a slice-selection model any timm model, both randomly
initialised (no weight download). bodycomp's own architectures go in SEGMENTATION_ARCHS / SELECTION_ARCHS:
name -> builder(config), looked up before smp's and timm's names.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

import torch

from bodycomp_cli.core.runconfig import RunConfig
from bodycomp_cli.errors import BodycompError

ModelBuilder = Callable[[RunConfig], torch.nn.Module]

SEGMENTATION_ARCHS: dict[str, ModelBuilder] = {}  # bodycomp's own segmentation architectures
SELECTION_ARCHS: dict[str, ModelBuilder] = {}  # bodycomp's own slice-selection architectures


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

    return [*SEGMENTATION_ARCHS, *smp.MODEL_ARCHITECTURES_MAPPING]


def selection_arch_names() -> list[str]:
    import timm

    return [*SELECTION_ARCHS, *timm.list_models()]


def _segmentation_model(config: RunConfig) -> torch.nn.Module:
    if config.arch in SEGMENTATION_ARCHS:
        return SEGMENTATION_ARCHS[config.arch](config)
    import segmentation_models_pytorch as smp

    return smp.create_model(
        config.arch, encoder_name=config.encoder, encoder_weights=None, in_channels=1, classes=len(config.classes)
    )


def _selection_model(config: RunConfig) -> torch.nn.Module:
    if config.arch in SELECTION_ARCHS:
        return SELECTION_ARCHS[config.arch](config)
    import timm

    return timm.create_model(
        config.arch, pretrained=False, in_chans=config.input_channels, num_classes=len(config.levels)
    )


MODEL_FACTORIES: dict[str, ModelBuilder] = {"segmentation": _segmentation_model, "slice_selection": _selection_model}


def build_model(config: RunConfig) -> torch.nn.Module:
    """A fresh, randomly initialised model returning raw outputs (logits) for the config's task and arch."""
    check_choice("task", config.task, list(MODEL_FACTORIES))
    return MODEL_FACTORIES[config.task](config)

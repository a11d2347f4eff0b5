"""Slice selection: per-slice offsets from vertebral levels. Its training task, model, series head, predictor and
scoring."""

from bodycomp_cli.tasks.slice_selection.model import build_selection_model, selection_arch_names
from bodycomp_cli.tasks.slice_selection.predictor import SliceSelectionPredictor
from bodycomp_cli.tasks.slice_selection.task import (
    SliceSelectionSettings,
    SliceSelectionTask,
    check_slice_selection_settings,
    train_slice_selection,
)

__all__ = [
    "SliceSelectionPredictor",
    "SliceSelectionSettings",
    "SliceSelectionTask",
    "build_selection_model",
    "check_slice_selection_settings",
    "selection_arch_names",
    "train_slice_selection",
]

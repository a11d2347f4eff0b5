"""Segmentation of muscle, subcutaneous fat and visceral fat: its training task, model, predictor and scoring."""

from bodycomp_cli.tasks.segmentation.model import build_segmentation_model, segmentation_arch_names
from bodycomp_cli.tasks.segmentation.predictor import SegmentationPredictor
from bodycomp_cli.tasks.segmentation.task import (
    CLASSES,
    THORACIC_CLASSES,
    SegmentationSettings,
    SegmentationTask,
    check_segmentation_settings,
    train_segmentation,
)

__all__ = [
    "CLASSES",
    "THORACIC_CLASSES",
    "SegmentationPredictor",
    "SegmentationSettings",
    "SegmentationTask",
    "build_segmentation_model",
    "check_segmentation_settings",
    "segmentation_arch_names",
    "train_segmentation",
]

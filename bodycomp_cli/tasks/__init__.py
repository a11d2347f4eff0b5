"""The training tasks: segmentation and slice selection (model settings, data, loss, validation metrics).

The models themselves come from engine.models' registry, which inference rebuilds runs from.
"""

from __future__ import annotations

from bodycomp_cli.core.runconfig import RunConfig
from bodycomp_cli.tasks.segmentation import SegmentationTask
from bodycomp_cli.tasks.slice_selection import SliceSelectionTask

TASKS = {"segmentation": SegmentationTask, "slice_selection": SliceSelectionTask}


def task_from_config(config: RunConfig) -> SegmentationTask | SliceSelectionTask:
    """The task (model settings only, no data) a run was trained as, from its config."""
    return TASKS[config.task].from_run_config(config)

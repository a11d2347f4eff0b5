"""Task registry: the engine trains any of these; inference rebuilds them from config.json."""

from __future__ import annotations

from typing import Any

from bodycomp_cli.errors import BodycompError

TASK_NAMES = ("segmentation", "slice_selection")


def task_from_config(config: dict[str, Any]) -> Any:
    """Rebuild a task (model factory only, no data) from a run's config.json."""
    name = config.get("task")
    if name == "segmentation":
        from bodycomp_cli.tasks.segmentation import SegmentationTask

        return SegmentationTask.from_config(config)
    if name == "slice_selection":
        from bodycomp_cli.tasks.slice_selection import SliceSelectionTask

        return SliceSelectionTask.from_config(config)
    raise BodycompError(f"config.json: unknown task {name!r}; valid choices: {', '.join(TASK_NAMES)}")

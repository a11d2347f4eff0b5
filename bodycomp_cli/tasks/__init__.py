"""The tasks: segmentation and slice selection. Each owns its whole life: training (task), model, predictor
and scoring. `load_predictor` is how estimate, evaluate and users' scripts apply any trained run.
"""

from __future__ import annotations

from pathlib import Path

from bodycomp_cli.core.runconfig import RunConfig, read_run_config
from bodycomp_cli.errors import BodycompError
from bodycomp_cli.inference.placement import Placement
from bodycomp_cli.inference.run import check_run_folder, load_run
from bodycomp_cli.tasks.segmentation import SegmentationPredictor, SegmentationTask, build_segmentation_model
from bodycomp_cli.tasks.slice_selection import SliceSelectionPredictor, SliceSelectionTask, build_selection_model

TASKS = {"segmentation": SegmentationTask, "slice_selection": SliceSelectionTask}
MODEL_BUILDERS = {"segmentation": build_segmentation_model, "slice_selection": build_selection_model}
PREDICTORS = {"segmentation": SegmentationPredictor, "slice_selection": SliceSelectionPredictor}
Predictor = SegmentationPredictor | SliceSelectionPredictor


def task_from_config(config: RunConfig) -> SegmentationTask | SliceSelectionTask:
    """The task (model settings only, no data) a run was trained as, from its config."""
    return TASKS[config.task].from_run_config(config)


def load_predictor(
    run_dir: Path,
    placement: Placement | None = None,
    option: str = "RUN_DIR",
    task: str | None = None,
    which: str | None = None,
    batch_size: int | None = None,
) -> Predictor:
    """A trained run, loaded on `placement` (None: the CPU, full precision) and wrapped in its task's predictor.

    task: refuse a run of another task, naming `option`. which: best or last checkpoint (None: best if any).
    Example: load_predictor(Path("models/seg")).segment(volume.hu[120])
    """
    run_dir = Path(run_dir)
    check_run_folder(run_dir, option)
    config = read_run_config(run_dir)
    if task is not None and config.task != task:
        raise BodycompError(f"{option} {run_dir}: a {config.task} run, but this option needs a {task} run")
    run = load_run(run_dir, MODEL_BUILDERS[config.task], placement, which, config)
    # Each predictor keeps its own default batch size unless the caller gives one.
    return PREDICTORS[config.task](run, **({} if batch_size is None else {"batch_size": batch_size}))

"""The two trained models estimate applies: `--select-model`, and `--seg-model` per level."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bodycomp_cli.errors import BodycompError, BodycompWarning
from bodycomp_cli.inference.placement import Placement, choose_placement
from bodycomp_cli.inference.run import check_run_folder
from bodycomp_cli.tasks import load_predictor
from bodycomp_cli.tasks.segmentation import SegmentationPredictor
from bodycomp_cli.tasks.slice_selection import SliceSelectionPredictor
from bodycomp_cli.tasks.slice_selection.evidence import SelectionEvidence

# `L3=RUN` or `T5,T8,T10=RUN`: level names before the first `=`, a run folder after it.
_LEVEL_MAPPING = re.compile(r"^\s*([A-Za-z0-9_]+(?:\s*,\s*[A-Za-z0-9_]+)*)\s*=(.+)$")


def parse_seg_model_specs(specs: Sequence[str], levels: Sequence[str]) -> dict[str, Path]:
    """Map every level to a segmentation run folder.

    A spec without `=` is the default for every level not named elsewhere; `L3=RUN` and
    `T5,T8,T10=RUN` name levels. Example: parse_seg_model_specs(["T5,T8=thorax", "abdomen"], ["T5", "T8", "L3"])
    """
    default: Path | None = None
    mapped: dict[str, Path] = {}
    for spec in specs:
        match = _LEVEL_MAPPING.match(spec)
        if match is None:
            if default is not None:
                raise BodycompError(
                    f"--seg-model {spec}: a second model for all levels (the first is {default}); "
                    "map levels with --seg-model L3=RUN_DIR"
                )
            default = Path(spec)
            continue
        for level in (name.strip() for name in match.group(1).split(",")):
            if level not in levels:
                raise BodycompError(f"--seg-model {spec}: level {level} is not estimated (levels: {', '.join(levels)})")
            if level in mapped:
                raise BodycompError(f"--seg-model {spec}: level {level} already has a model ({mapped[level]})")
            mapped[level] = Path(match.group(2).strip())
    missing = [level for level in levels if level not in mapped and default is None]
    if missing:
        raise BodycompError(
            f"no --seg-model for level {', '.join(missing)}: give one model for all levels, "
            f"map it ({missing[0]}=RUN_DIR), or leave the level out with -L"
        )
    return {level: mapped.get(level, default) for level in levels}  # type: ignore[misc]


def is_thoracic_level(level: str) -> bool:
    """T1 to T12: the levels a thoracic segmentation run (config.json `thoracic`, no visceral fat) is for."""
    return re.fullmatch(r"T(?:[1-9]|1[0-2])", level) is not None


def seg_region_warnings(seg_paths: dict[str, Path], classes: dict[Path, list[str]]) -> list[str]:
    """One line per segmentation run applied outside the region it was trained for.

    A run's region follows from its classes: with visceral fat it is an abdominal (lumbar) run, whose visceral
    fat at a thoracic level is meaningless; without, a thoracic run (train-seg -t), which measures no visceral fat
    at a lumbar level. SEG_PATHS: level -> run (parse_seg_model_specs); CLASSES: run -> its class names.
    """
    lines = []
    for path, names in classes.items():
        levels = [level for level, run in seg_paths.items() if run == path]
        abdominal = "visceral_fat" in names
        outside = [level for level in levels if is_thoracic_level(level) == abdominal]
        if not outside:
            continue
        where = ", ".join(outside)
        if abdominal:
            lines.append(
                f"--seg-model {path} was trained with visceral fat (an abdominal run) and is applied at {where}, "
                f"where its visceral fat means nothing; map a thoracic run there: --seg-model {where.replace(' ', '')}"
                "=THORACIC_RUN"
            )
        else:
            lines.append(
                f"--seg-model {path} is a thoracic run (no visceral fat) applied at {where}: no visceral fat is "
                f"measured there; map an abdominal run: --seg-model {where.replace(' ', '')}=ABDOMINAL_RUN"
            )
    return lines


@dataclass(frozen=True)
class EstimatorModels:
    """The loaded runs' predictors, and the few facts estimate needs from their configs."""

    selector: SliceSelectionPredictor
    segmenters: dict[str, SegmentationPredictor]  # level -> its predictor (shared between levels: one object)
    levels: list[str]  # the levels estimated, in the selection model's output order
    level_columns: list[int]  # each level's column in the selection model's output
    placement: Placement
    seg_paths: dict[str, Path] = field(default_factory=dict)

    @property
    def threshold_mm(self) -> float:
        return self.selector.threshold_mm

    def slice_outputs(self, hu_volume: np.ndarray, z_mm: np.ndarray) -> np.ndarray:
        """Z x len(levels) sigmoid outputs of the selection model, in `levels` order."""
        outputs = self.selector.outputs(hu_volume, z_mm)
        return np.asarray(outputs, dtype=np.float64)[:, self.level_columns]

    def selection_evidence(self, hu_volume: np.ndarray, z_mm: np.ndarray) -> SelectionEvidence:
        """Every output level's outputs, and the CNN's, the head's and the phase apart (for the review)."""
        return self.selector.evidence(hu_volume, z_mm)

    def classes(self, level: str) -> list[str]:
        return self.segmenters[level].classes

    def segment_with_expected_dice(self, level: str, hu_slices: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """segment(), and the Dice the model expects per slice and class (for the review)."""
        return self.segmenters[level].segment_with_expected_dice(hu_slices)

    def shift_agreement(self, level: str, hu_slices: np.ndarray) -> np.ndarray:
        """Per slice, how well the level's segmentation keeps its labels when the slice moves (for the review)."""
        return self.segmenters[level].shift_agreement(hu_slices)

    def segment(self, level: str, hu_slices: np.ndarray) -> np.ndarray:
        """N x H x W uint8 labels from the level's segmentation model, at the slices' own size."""
        return self.segmenters[level].segment(hu_slices)


def load_estimator_models(
    select_dir: Path,
    seg_specs: Sequence[str],
    levels: Sequence[str] | None,
    gpus: int | None = None,
    batch_size: int = 32,
    log: Callable[[str], None] | None = None,
    amp: bool | None = None,
    distributed: bool = False,
) -> EstimatorModels:
    """Load the selection run and each level's segmentation run, refusing wrong or incomplete folders.

    Example: load_estimator_models(Path("models/select"), ["models/seg"], ["L3"])
    """
    select_dir = Path(select_dir)
    check_run_folder(select_dir, "--select-model")
    for spec in seg_specs:
        # Check every folder before loading anything, so a typo in the last one costs no waiting.
        match = _LEVEL_MAPPING.match(spec)
        check_run_folder(Path(match.group(2).strip() if match else spec), "--seg-model")
    placement = choose_placement(gpus, amp, distributed)
    if log is not None:
        log(f"inference on {placement.description}")
    selector = load_predictor(select_dir, placement, "--select-model", "slice_selection", batch_size=batch_size)
    model_levels = selector.levels
    chosen = list(levels) if levels else model_levels
    unknown = [level for level in chosen if level not in model_levels]
    if unknown:
        raise BodycompError(
            f"-L {', '.join(unknown)}: the selection model {select_dir} predicts {', '.join(model_levels)} only"
        )
    seg_paths = parse_seg_model_specs(seg_specs, chosen)
    loaded: dict[Path, Any] = {}
    for path in dict.fromkeys(seg_paths.values()):
        loaded[path] = load_predictor(path, placement, "--seg-model", "segmentation", batch_size=batch_size)
    for line in seg_region_warnings(seg_paths, {path: predictor.classes for path, predictor in loaded.items()}):
        warnings.warn(line, BodycompWarning, stacklevel=2)
    return EstimatorModels(
        selector=selector,
        segmenters={level: loaded[path] for level, path in seg_paths.items()},
        levels=chosen,
        level_columns=[model_levels.index(level) for level in chosen],
        placement=placement,
        seg_paths=seg_paths,
    )

"""One series' measures over ranges of slices: the whole-vertebra means (--per-vertebra) and the volumes
(--volume), from the levels estimate_series found. See vertebra.py and volumes.py for the rules."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bodycomp_cli.estimate.range_measures import progress_steps
from bodycomp_cli.estimate.vertebra import vertebra_measures
from bodycomp_cli.estimate.volumes import range_volume

if TYPE_CHECKING:
    from bodycomp_cli.estimate.series import EstimateOptions, Models
    from bodycomp_cli.io.volumes import Volume

ONE_SLICE = "one-slice volume: no range"


def _found_levels(row: Mapping[str, object], details: Mapping[str, dict], levels: list[str]) -> dict:
    """level -> (chosen slice, predicted centre mm), or why it has none."""
    found: dict[str, tuple[int, float] | str] = {}
    for level in levels:
        detail = details.get(level)
        if detail is None:
            found[level] = str(row.get(f"{level}_reason") or "not measured")
        elif detail.get("level_z_mm") is None:
            found[level] = ONE_SLICE
        else:
            found[level] = (int(detail["choice"].index), float(detail["level_z_mm"]))
    return found


def range_measures(
    series: str,
    volume: Volume,
    models: Models,
    row: Mapping[str, object],
    details: Mapping[str, dict],
    options: EstimateOptions,
    progress: Any = None,
) -> tuple[dict[str, object], list[dict[str, object]]]:
    """(the row's `{level}_vertebra_*` cells, the series' volumes.csv rows); empty where not asked for."""
    found = _found_levels(row, details, list(models.levels))
    centres = {level: where[1] for level, where in found.items() if not isinstance(where, str)}
    cells: dict[str, object] = {}
    if options.per_vertebra:
        for level in centres:
            classes = models.classes(level)
            with progress_steps(progress, f"  {level} vertebra") as advance:
                cells |= vertebra_measures(
                    level,
                    classes[1:],
                    volume.hu,
                    volume.z_mm,
                    volume.pixel_spacing,
                    centres,
                    lambda hu, level=level: models.segment(level, hu),
                    classes,
                    options.hu_ranges,
                    advance,
                )
        for level, where in found.items():
            if isinstance(where, str) and where == ONE_SLICE:
                cells[f"{level}_vertebra_reason"] = ONE_SLICE
    volumes = []
    for span in options.volumes:
        classes = models.classes(span[0])
        with progress_steps(progress, f"  volume {span[0]}:{span[1]}") as advance:
            volumes.append(
                range_volume(
                    series,
                    span,
                    volume.hu,
                    volume.z_mm,
                    volume.pixel_spacing,
                    found,
                    lambda hu, level=span[0]: models.segment(level, hu),
                    classes,
                    options.hu_ranges,
                    advance,
                )
            )
    return cells, volumes

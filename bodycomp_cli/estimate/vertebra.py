"""--per-vertebra: each level's tissue areas and HU averaged over every slice of its whole vertebra.

The vertebra is the z-span around the level's centre (the selection model's predicted position,
level_presence.predicted_level_z_mm) bounded halfway to the neighbouring vertebrae's centres (L2 and L4
for L3) when the run estimates them and they lie in the scan. A side without such a neighbour is bounded
by half the nominal vertebral body height instead: 28 mm for a lumbar vertebra, L3's height in adults'
CT morphometry (Zhou SH et al. Geometrical dimensions of the lower lumbar vertebrae - analysis of data
from digitised CT images. Eur Spine J 2000;9:242-248, about 27-29 mm at L3). The neighbour bound spans
the discs too; the nominal one only the body, so it never reaches into the next vertebra. Levels other
than L1-L5 have no nominal height here: they need both neighbours estimated.

A vertebra the scan cuts (a bound beyond the first or last slice by more than half a slice step) gets blank
measures and a reason: a mean over part of a vertebra would pass for the whole one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from bodycomp_cli.core.vertebrae import spine_index
from bodycomp_cli.estimate.range_measures import pixel_cm2, slice_step_mm, tally_slices

NOMINAL_BODY_HEIGHT_MM = {f"L{i}": 28.0 for i in range(1, 6)}  # Zhou et al. 2000, L3 about 27-29 mm
VERTEBRA_FIELDS = ("n_slices", "from_mm", "to_mm", "bounds", "reason")
VERTEBRA_TISSUE_FIELDS = ("area_cm2", "mean_hu")
VERTEBRA_TEXT_FIELDS = ("bounds", "reason")


def vertebra_columns(layout: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
    """Per level: `{level}_vertebra_<field>` and `{level}_vertebra_{tissue}_area_cm2` / `_mean_hu`."""
    columns = []
    for level, tissues in layout:
        columns += [f"{level}_vertebra_{name}" for name in VERTEBRA_FIELDS]
        columns += [f"{level}_vertebra_{tissue}_{name}" for tissue in tissues for name in VERTEBRA_TISSUE_FIELDS]
    return columns


def vertebra_bounds(level: str, centres_mm: Mapping[str, float]) -> tuple[float, float, str] | str:
    """(lowest z, highest z, how they were found) of the level's vertebra, or why there are none.

    centres_mm: the predicted centre of every level the run estimates and finds in the scan.
    Example: vertebra_bounds("L3", {"L2": 140.0, "L3": 100.0}) -> (86.0, 120.0, "L2 midpoint; nominal 28 mm")
    """
    centre = centres_mm[level]
    index = spine_index(level)
    if index is None:
        return f"{level} is not a vertebra"
    ends: list[float] = []
    how: list[str] = []
    nominal = NOMINAL_BODY_HEIGHT_MM.get(level.upper())
    for step in (-1, 1):  # the vertebra above (toward the head), then the one below
        neighbour = next((name for name in centres_mm if spine_index(name) == index + step), None)
        if neighbour is not None:
            ends.append((centre + centres_mm[neighbour]) / 2.0)
            how.append(f"{neighbour} midpoint")
        elif nominal is not None:
            ends.append(centre - step * nominal / 2.0)  # +z points to the head: the vertebra above is higher
            how.append(f"nominal {nominal:g} mm")
        else:
            return f"no nominal height for {level}: estimate both neighbouring levels (-L)"
    return min(ends), max(ends), "; ".join(dict.fromkeys(how))


def vertebra_measures(
    level: str,
    tissues: Sequence[str],
    hu: np.ndarray,
    z_mm: np.ndarray,
    pixel_spacing: tuple[float, float] | None,
    centres_mm: Mapping[str, float],
    segment: Callable[[np.ndarray], np.ndarray],
    classes: Sequence[str],
    hu_ranges: str,
    advance: Callable[[int, int], None] | None = None,
) -> dict[str, object]:
    """The level's `{level}_vertebra_*` cells: area (mean over the vertebra's slices, cm²) and mean HU (every
    pixel of the tissue) per tissue, the slices counted, the bounds; blank with a reason where there is none."""
    cells: dict[str, object] = dict.fromkeys(vertebra_columns([(level, tissues)]), None)
    bounds = vertebra_bounds(level, centres_mm)
    if isinstance(bounds, str):
        return cells | {f"{level}_vertebra_reason": bounds}
    low, high, how = bounds
    z = np.asarray(z_mm, dtype=np.float64)
    half_step = (slice_step_mm(z) or 0.0) / 2.0
    cells |= {f"{level}_vertebra_from_mm": low, f"{level}_vertebra_to_mm": high, f"{level}_vertebra_bounds": how}
    if low < z.min() - half_step or high > z.max() + half_step:
        return cells | {f"{level}_vertebra_reason": f"vertebra {low:.1f}..{high:.1f} mm cut by the scan"}
    inside = np.flatnonzero((z >= low) & (z <= high))
    if inside.size == 0:
        return cells | {f"{level}_vertebra_reason": "no slice within the vertebra"}
    tally = tally_slices(hu, inside, segment, classes, hu_ranges, advance)
    area = pixel_cm2(pixel_spacing)
    cells[f"{level}_vertebra_n_slices"] = tally.slices
    cells[f"{level}_vertebra_reason"] = "" if area is not None else "no pixel spacing: areas blank"
    for tissue in tissues:
        count = tally.pixels.get(tissue, 0)
        cells[f"{level}_vertebra_{tissue}_area_cm2"] = count / tally.slices * area if area is not None else None
        cells[f"{level}_vertebra_{tissue}_mean_hu"] = tally.mean_hu(tissue)
    return cells

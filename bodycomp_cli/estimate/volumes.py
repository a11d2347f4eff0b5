"""--volume L1:L5: each tissue's volume (cm³) between two levels' chosen slices, every slice segmented.

The range runs from one level's chosen slice to the other's, both included; each slice counts for one slice
step (the median z step) of thickness, as a voxel count does: volume = pixels x pixel area x step. Pixels are
gated by --hu-ranges as the per-level areas are. The first level's segmentation model segments the range.

A range is blank, with the reason, when either level is not in the scan (level_presence.py), when the model
places either level beyond the scan's first or last slice (the range would be cut short), or for a one-slice
volume. One file per series, volumes/<series>.csv, is written as the series is done (so --resume keeps it);
volumes.csv gathers them at the end.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from bodycomp_cli.errors import BodycompError
from bodycomp_cli.estimate.range_measures import pixel_cm2, slice_step_mm, tally_slices
from bodycomp_cli.estimate.report import csv_text
from bodycomp_cli.io.atomic import atomic_write_text

TISSUE_VOLUME_FIELDS = ("cm3", "mean_hu")
_SPEC = re.compile(r"^([A-Za-z0-9]+):([A-Za-z0-9]+)$")


def parse_volume_specs(values: Sequence[str]) -> list[tuple[str, str]]:
    """`--volume` values (repeatable, each may hold several ranges separated by commas) as (from, to) pairs.

    Example: parse_volume_specs(["L1:L5", "T12:L1,L3:L4"]) -> [("L1", "L5"), ("T12", "L1"), ("L3", "L4")]
    """
    ranges: list[tuple[str, str]] = []
    for value in values:
        for part in str(value).split(","):
            match = _SPEC.match(part.strip())
            if match is None:
                raise BodycompError(f"--volume {value!r}: give two levels as FROM:TO, e.g. L1:L5")
            first, second = match.groups()
            if first == second:
                raise BodycompError(f"--volume {value!r}: the two levels are the same; give two, e.g. L1:L5")
            if (first, second) not in ranges:
                ranges.append((first, second))
    return ranges


def check_volume_levels(ranges: Sequence[tuple[str, str]], levels: Sequence[str]) -> None:
    """Refuse a range whose level the run does not estimate (before any series is read)."""
    for first, second in ranges:
        for level in (first, second):
            if level not in levels:
                raise BodycompError(
                    f"--volume {first}:{second}: level {level} is not estimated (levels: {', '.join(levels)}); "
                    "add it with -L"
                )


def volume_columns(tissues: Sequence[str]) -> list[str]:
    per_tissue = [f"{tissue}_{name}" for tissue in tissues for name in TISSUE_VOLUME_FIELDS]
    return ["series", "volume", "from_z_mm", "to_z_mm", "n_slices", "slice_step_mm", *per_tissue, "hu_ranges", "reason"]


def range_volume(
    series: str,
    span: tuple[str, str],
    hu: np.ndarray,
    z_mm: np.ndarray,
    pixel_spacing: tuple[float, float] | None,
    found: dict[str, tuple[int, float] | str],
    segment: Callable[[np.ndarray], np.ndarray],
    classes: Sequence[str],
    hu_ranges: str,
    advance: Callable[[int, int], None] | None = None,
) -> dict[str, object]:
    """One volumes.csv row. found: level -> (chosen slice index, predicted centre z mm), or why it has none."""
    tissues = list(classes[1:])
    row: dict[str, object] = dict.fromkeys(volume_columns(tissues), None)
    row |= {"series": series, "volume": f"{span[0]}:{span[1]}", "hu_ranges": hu_ranges, "reason": ""}
    z = np.asarray(z_mm, dtype=np.float64)
    for level in span:
        where = found.get(level, "not estimated")
        if isinstance(where, str):
            return row | {"reason": f"{level}: {where}"}
        if not z.min() <= where[1] <= z.max():
            return row | {"reason": f"{level} lies beyond the scan's end ({where[1]:.1f} mm): the range is cut"}
    first, last = sorted(found[level][0] for level in span)  # type: ignore[index]
    step, area = slice_step_mm(z), pixel_cm2(pixel_spacing)
    row |= {"from_z_mm": float(z[first]), "to_z_mm": float(z[last]), "slice_step_mm": step}
    tally = tally_slices(hu, range(first, last + 1), segment, classes, hu_ranges, advance)
    row["n_slices"] = tally.slices
    for tissue in tissues:
        row[f"{tissue}_mean_hu"] = tally.mean_hu(tissue)
        if area is not None and step is not None:
            row[f"{tissue}_cm3"] = tally.pixels.get(tissue, 0) * area * step / 10.0  # cm² x cm
    if area is None:
        row["reason"] = "no pixel spacing: volumes blank"
    return row


def write_series_volumes(folder: Path, stem: str, rows: Sequence[dict[str, object]]) -> None:
    """volumes/<stem>.csv: this series' ranges (written whole, atomically, as the series is done)."""
    if rows:
        columns = list(rows[0])
        atomic_write_text(Path(folder) / "volumes" / f"{stem}.csv", csv_text(rows, columns))


def gather_volumes(folder: Path, stems: Sequence[str]) -> None:
    """volumes.csv: every listed series' volumes/<stem>.csv, in order (nothing when no range was asked)."""
    import pandas as pd

    parts = [Path(folder) / "volumes" / f"{stem}.csv" for stem in stems]
    tables = [pd.read_csv(path, dtype={"series": str, "reason": str}) for path in parts if path.is_file()]
    if tables:
        table = pd.concat(tables, ignore_index=True)
        atomic_write_text(Path(folder) / "volumes.csv", table.to_csv(index=False))

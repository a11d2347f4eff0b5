"""Where each level lies in a series, from what a manifest row gives: typed z, a slice number, or vertebra labels.

A row's `vertebrae` cell may be a label volume (NIfTI, numbered by --vertebra-labels), a folder of
vertebrae_<LEVEL>.nii.gz masks, or a VerSe-style centroid JSON (see the modules beside this one). Per level, a
non-blank z_<LEVEL> or slice_<LEVEL> cell wins over the vertebrae cell: it is how a reader overrides a segmenter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bodycomp_cli.errors import BodycompError
from bodycomp_cli.io.vertebrae.centroid_json import json_positions
from bodycomp_cli.io.vertebrae.grid import CtGrid
from bodycomp_cli.io.vertebrae.label_volumes import folder_positions, multilabel_positions
from bodycomp_cli.io.vertebrae.numbering import PRESETS, parse_vertebra_labels
from bodycomp_cli.io.vertebrae.slice_numbers import SLICE_NUMBERINGS, slice_position
from bodycomp_cli.io.volumes import NIFTI_SUFFIXES, Volume

__all__ = ["PRESETS", "SLICE_NUMBERINGS", "LevelRequest", "parse_vertebra_labels", "resolve_levels", "source_kind"]


@dataclass(frozen=True)
class LevelRequest:
    """What one manifest row says about its levels (checked for form; the files are read with the volume)."""

    where: str  # "series.csv row 3", for messages
    levels: tuple[str, ...]
    z_mm: dict[str, float] = field(default_factory=dict)  # non-blank z_<LEVEL> cells
    slice_numbers: dict[str, int] = field(default_factory=dict)  # non-blank slice_<LEVEL> cells
    vertebrae: Path | None = None  # the row's vertebrae cell
    numbering: dict[str, int] | None = None  # LEVEL -> label value, for a label volume or a centroid JSON
    slice_numbering: str = "index"

    def from_vertebrae(self) -> list[str]:
        """The levels this row takes from its vertebrae cell (those without a z_ or slice_ cell)."""
        if self.vertebrae is None:
            return []
        return [level for level in self.levels if level not in self.z_mm and level not in self.slice_numbers]


def source_kind(path: Path) -> str:
    """'folder', 'json' or 'labels' for a vertebrae cell; anything else is refused by the caller."""
    name = path.name.lower()
    if path.is_dir():
        return "folder"
    if name.endswith(".json"):
        return "json"
    if name.endswith(NIFTI_SUFFIXES):
        return "labels"
    raise BodycompError(
        f"{path}: vertebrae must be a NIfTI label volume, a folder of vertebrae_<LEVEL>.nii.gz or a .json"
    )


def resolve_levels(request: LevelRequest, volume: Volume) -> tuple[dict[str, float | None], list[str]]:
    """({level: z in mm or None}, warning lines) for one series, in request.levels order."""
    warnings: list[str] = []
    positions: dict[str, float | None] = dict.fromkeys(request.levels)
    positions.update(request.z_mm)
    for level, number in request.slice_numbers.items():
        positions[level] = slice_position(volume, number, request.slice_numbering, f"slice_{level}", request.where)
    wanted = request.from_vertebrae()
    if wanted:
        grid = CtGrid.of(volume)
        kind = source_kind(request.vertebrae)
        if kind == "folder":
            found = folder_positions(request.vertebrae, wanted, grid, warnings, request.where)
        elif kind == "json":
            found = json_positions(request.vertebrae, request.numbering, wanted, grid, warnings, request.where)
        else:
            found = multilabel_positions(request.vertebrae, request.numbering, wanted, grid, warnings, request.where)
        positions.update(found)
    return positions, warnings

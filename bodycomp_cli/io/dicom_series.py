"""One DICOM series as discovery finds it: its slices' headers (no pixels) and why they cannot form a volume.

What dicom_tree.py (which finds and groups the series) and series_filters.py (which judges them) share.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class SliceHeader:
    """What discovery keeps of one image file (its pixels are not read)."""

    path: Path
    sop_instance_uid: str
    series_uid: str
    study_uid: str
    modality: str
    image_type: tuple[str, ...]
    orientation: tuple[float, ...] | None  # ImageOrientationPatient
    position: tuple[float, float, float] | None  # ImagePositionPatient
    rows: int
    columns: int
    acquisition: str  # AcquisitionNumber, "" when absent
    series_number: str
    identifiers: dict[str, str | float | None] = field(compare=False)  # results.csv columns


@dataclass
class DicomSeries:
    series_id: str  # unique among the inputs: the folder's path under the input, plus a suffix if shared
    slices: list[SliceHeader]
    problem: str | None = None  # why the slices cannot form one volume (refused with this reason)

    @property
    def series_uid(self) -> str:
        return self.slices[0].series_uid

    @property
    def study_uid(self) -> str:
        return self.slices[0].study_uid

    @property
    def identifiers(self) -> dict[str, str | float | None]:
        return self.slices[0].identifiers

    @property
    def paths(self) -> list[Path]:
        return [header.path for header in self.slices]

    def folder(self) -> Path:
        return Path(os.path.commonpath([str(header.path.parent) for header in self.slices]))

    def slice_positions_mm(self) -> np.ndarray:
        """Each slice's position along the slice normal (pointing to the head), in file order."""
        return positions_along_normal(self.slices)


def positions_along_normal(slices: Sequence[SliceHeader]) -> np.ndarray:
    """Each slice's position along the slice normal, which points to the head (NaN without orientation or positions)."""
    orientation = next((s.orientation for s in slices if s.orientation is not None), None)
    if orientation is None or any(s.position is None for s in slices):
        return np.full(len(slices), np.nan)
    normal = np.cross(orientation[:3], orientation[3:])
    normal = normal if normal[2] >= 0 else -normal
    return np.asarray([s.position for s in slices], dtype=np.float64) @ normal

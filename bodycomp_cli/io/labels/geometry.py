"""Match a label volume to an image slice through world coordinates (nearest neighbour)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bodycomp_cli.errors import BodycompError

# A SEG frame, an RTSTRUCT slice or a tag lies on its source image's plane: an image slice within this distance
# of it is that plane (positions are written with a few decimals); anything farther is another slice.
PLANE_TOLERANCE_MM = 0.1


@dataclass(frozen=True)
class ImageSource:
    """What a label reader may need of the row's image: its path and, for DICOM, its series."""

    path: Path
    series_uid: str | None = None  # DICOM SeriesInstanceUID; None for NIfTI
    files: tuple[Path, ...] = ()  # the series' DICOM files


@dataclass
class LabelVolume:
    labels: np.ndarray  # Z x H x W integer labels (or classes), in any orientation: the affine places them
    affine: np.ndarray | None  # 4 x 4, index (z, row, col) -> RAS+ world mm; None when the source has no geometry
    source: Path


def plane(labels: np.ndarray, stored_affine: np.ndarray, source: Path) -> LabelVolume:
    """One 2-D label plane (H x W) on a DICOM image's plane, as a Z=1 volume PLANE_TOLERANCE_MM either side deep."""
    affine = stored_affine.copy()
    normal = np.cross(affine[:3, 1], affine[:3, 2])
    affine[:3, 0] = normal / np.linalg.norm(normal) * (2 * PLANE_TOLERANCE_MM)
    return LabelVolume(labels=labels[np.newaxis], affine=affine, source=source)


def labels_on_planes(planes: list[LabelVolume], image_affine: np.ndarray, index: int, shape, where: str):
    """labels_on_slice on the first of `planes` that holds image slice `index` (a SEG's frames, one per plane)."""
    centre = image_affine @ np.array([float(index), (shape[0] - 1) / 2, (shape[1] - 1) / 2, 1.0])
    for volume in planes:
        depth = np.rint(np.linalg.solve(volume.affine, centre)[0])
        if 0 <= depth < volume.labels.shape[0]:
            return labels_on_slice(volume, image_affine, index, shape, where)
    return labels_on_slice(planes[0], image_affine, index, shape, where)  # refuses, naming the mask


def labels_on_slice(volume: LabelVolume, image_affine: np.ndarray, index: int, shape: tuple[int, int], where: str):
    """The labels at each pixel of image slice `index` (H x W), sampled at the nearest label voxel in world space.

    A slice whose pixels fall outside the label volume, or between its slices, is refused with one line.
    """
    rows, cols = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    pixels = np.stack([np.full(rows.size, float(index)), rows.ravel(), cols.ravel(), np.ones(rows.size)])
    voxel = np.linalg.solve(volume.affine, image_affine @ pixels)[:3]
    nearest = np.rint(voxel).astype(np.int64)
    depth = volume.labels.shape[0]
    if not np.any((nearest[0] >= 0) & (nearest[0] < depth)):
        raise BodycompError(f"{where}: mask {volume.source.name} lies on another slice than its image")
    inside = np.ones(rows.size, dtype=bool)
    for axis, size in enumerate(volume.labels.shape):
        inside &= (nearest[axis] >= 0) & (nearest[axis] < size)
    if not inside.any():
        raise BodycompError(f"{where}: mask {volume.source.name} does not overlap its image")
    out = np.zeros(rows.size, dtype=volume.labels.dtype)
    out[inside] = volume.labels[nearest[0, inside], nearest[1, inside], nearest[2, inside]]
    return out.reshape(shape)

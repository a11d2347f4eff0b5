"""Match a label volume to an image slice through world coordinates (nearest neighbour)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bodycomp_cli.errors import BodycompError


@dataclass
class LabelVolume:
    labels: np.ndarray  # Z x H x W integer labels (or classes), display orientation
    affine: np.ndarray | None  # 4 x 4, index (z, row, col) -> world mm; None when the source has no geometry
    source: Path


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

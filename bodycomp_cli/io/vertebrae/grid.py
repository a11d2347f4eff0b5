"""The CT's extent in world coordinates, which every level source is checked against."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bodycomp_cli.io.volumes import Volume


@dataclass(frozen=True)
class CtGrid:
    z_mm: np.ndarray  # (Z,) world z of each slice, ascending
    affine: np.ndarray | None  # display index (z, row, col) -> RAS world mm; None for DICOM and npz
    shape: tuple[int, int, int]  # Z x H x W, display orientation

    @classmethod
    def of(cls, volume: Volume) -> CtGrid:
        return cls(np.asarray(volume.z_mm, dtype=np.float64), volume.affine, tuple(volume.hu.shape))

    @property
    def half_slice_mm(self) -> float:
        return float(np.median(np.diff(self.z_mm))) / 2.0 if len(self.z_mm) > 1 else 0.5

    def world_box(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(low, high) world corners of the voxel centres, or None without an affine."""
        return None if self.affine is None else box_of(self.affine, self.shape)


def box_of(affine: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The world bounding box (low, high) of a grid's voxel centres."""
    corners = np.array(
        [[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)]
    )
    world = (affine @ corners.T)[:3]
    return world.min(axis=1), world.max(axis=1)


def world_z(affine: np.ndarray, index: np.ndarray) -> np.ndarray:
    """World z (mm, toward the head) of voxel indices (3 x N) through a 4 x 4 affine."""
    return affine[2, :3] @ index + affine[2, 3]

"""Level positions from vertebra label volumes: one multilabel NIfTI, or a folder of vertebrae_<LEVEL> masks.

A level's z is the centroid of its vertebra's voxels: the mean world z of every voxel carrying its label. The
mean is barely moved by a few stray voxels that a segmenter leaves far from the bone, which would move the midpoint
of the z extent by half their distance; it is also how VerSe defines its centroids, so every source agrees.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bodycomp_cli.errors import BodycompError
from bodycomp_cli.io.labels.geometry import LabelVolume
from bodycomp_cli.io.labels.label_map import check_integer_labels
from bodycomp_cli.io.vertebrae.grid import CtGrid, box_of, world_z
from bodycomp_cli.io.volumes import NIFTI_SUFFIXES, load_nifti_3d, nifti_display_transform

FOLDER_PREFIX = "vertebrae_"


def read_vertebra_labels(path: Path, where: str) -> LabelVolume:
    """The labels in display orientation, in their stored dtype (a view: a whole-body uint8 map stays 1 byte a voxel,
    where prepare-seg's reader widens its slices to int64)."""
    from nibabel.orientations import apply_orientation

    try:
        image, data, _, _ = load_nifti_3d(path, unscaled=False)
        check_integer_labels(data, f"{path}: label volume")
        transform, affine = nifti_display_transform(image.affine, data.shape, path)
    except BodycompError as error:
        raise BodycompError(f"{where}: {error}") from None
    return LabelVolume(labels=apply_orientation(data, transform), affine=affine, source=path)


def check_overlap(volume: LabelVolume, grid: CtGrid, where: str) -> None:
    """Refuse labels whose grid does not meet the CT's (in z always; in x and y too when the CT has an affine)."""
    low, high = box_of(volume.affine, volume.labels.shape)
    ct = grid.world_box()
    ct_low, ct_high = ct if ct is not None else (np.full(3, -np.inf), np.full(3, np.inf))
    ct_low[2], ct_high[2] = min(ct_low[2], grid.z_mm[0]), max(ct_high[2], grid.z_mm[-1])
    margin = grid.half_slice_mm
    if np.any(high < ct_low - margin) or np.any(low > ct_high + margin):
        raise BodycompError(
            f"{where}: vertebra labels {volume.source.name} do not overlap the CT (labels z {low[2]:.1f} to "
            f"{high[2]:.1f} mm, CT z {grid.z_mm[0]:.1f} to {grid.z_mm[-1]:.1f} mm)"
        )


def vertebra_centre(
    volume: LabelVolume, value: int, grid: CtGrid, level: str, warnings: list[str], where: str
) -> float | None:
    """World z of the centroid of the voxels labelled `value`; None when absent or cut by either volume's end."""
    index = np.nonzero(volume.labels == value)
    if index[0].size == 0:
        return None
    name = f"{where}: {level} (label {value} of {volume.source.name})"
    if index[0].min() == 0 or index[0].max() == volume.labels.shape[0] - 1:
        end = "first" if index[0].min() == 0 else "last"
        warnings.append(f"{name} reaches the {end} slice of the volume, which cuts it: level left blank")
        return None
    z = world_z(volume.affine, np.asarray(index, dtype=np.float64))
    margin = grid.half_slice_mm
    if z.min() < grid.z_mm[0] - margin or z.max() > grid.z_mm[-1] + margin:
        warnings.append(f"{name} extends beyond the CT's first or last slice, so it is cut: level left blank")
        return None
    return float(z.mean())


def multilabel_positions(
    path: Path, numbering: dict[str, int], levels: list[str], grid: CtGrid, warnings: list[str], where: str
) -> dict[str, float | None]:
    """{level: z} from one label volume numbered by `numbering` (levels absent from it are blank)."""
    volume = read_vertebra_labels(path, where)
    check_overlap(volume, grid, where)
    return {level: vertebra_centre(volume, numbering[level.upper()], grid, level, warnings, where) for level in levels}


def folder_positions(
    folder: Path, levels: list[str], grid: CtGrid, warnings: list[str], where: str
) -> dict[str, float | None]:
    """{level: z} from TotalSegmentator's per-class files, vertebrae_<LEVEL>.nii.gz (a missing file: blank)."""
    files = {}
    for path in folder.iterdir():
        name = path.name
        if name.lower().startswith(FOLDER_PREFIX) and name.lower().endswith(NIFTI_SUFFIXES):
            level = name[len(FOLDER_PREFIX) :].split(".", 1)[0].upper()
            files[level] = path
    if not files:
        raise BodycompError(f"{where}: {folder} holds no {FOLDER_PREFIX}<LEVEL>.nii.gz files")
    positions: dict[str, float | None] = {}
    for level in levels:
        path = files.get(level.upper())
        if path is None:
            positions[level] = None
            continue
        volume = read_vertebra_labels(path, where)
        check_overlap(volume, grid, where)
        volume.labels = (volume.labels != 0).astype(np.uint8)  # a per-class mask: any non-zero voxel is the bone
        positions[level] = vertebra_centre(volume, 1, grid, level, warnings, where)
    return positions

"""A folder of per-tissue binary NIfTI masks, one file per class (as TotalSegmentator's tissue_types writes them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bodycomp_cli.errors import BodycompError
from bodycomp_cli.io.labels.geometry import LabelVolume
from bodycomp_cli.io.labels.label_map import LabelMap, paint_class
from bodycomp_cli.io.labels.nifti import read_nifti_labels
from bodycomp_cli.io.volumes import NIFTI_SUFFIXES


def mask_name(path: Path) -> str:
    name = path.name
    for suffix in NIFTI_SUFFIXES[::-1]:  # .nii.gz before .nii
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_mask_folder(folder: Path, label_map: LabelMap, where: str) -> LabelVolume:
    """Classes (Z x H x W uint8) from the folder's masks, each file's name mapped through label_map.

    Every file must be binary and on one grid; a voxel claimed by two classes is refused.
    """
    files = sorted(path for path in folder.iterdir() if path.name.lower().endswith(NIFTI_SUFFIXES))
    if not files:
        raise BodycompError(f"{where}: {folder}: mask folder holds no .nii or .nii.gz files")
    classes = None
    affine = None
    for path in files:
        volume = read_nifti_labels(path)
        values = np.unique(volume.labels).tolist()
        if not set(values) <= {0, 1}:
            raise BodycompError(f"{where}: {path}: per-tissue mask is not binary (values {values[:5]})")
        if classes is None:
            classes, affine = np.zeros(volume.labels.shape, dtype=np.uint8), volume.affine
        elif volume.labels.shape != classes.shape or not np.allclose(volume.affine, affine, atol=1e-3):
            raise BodycompError(f"{where}: {path}: grid differs from {files[0].name} in the same folder")
        if 1 not in values:
            continue
        label = label_map.class_of(mask_name(path), f"{where}: {path}")
        if label == 0:
            continue
        paint_class(classes, volume.labels == 1, label, f"{where}: {path}")
    return LabelVolume(labels=classes, affine=affine, source=folder)

"""A NIfTI label volume (2-D or 3-D) in display orientation with the affine of the reoriented array."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bodycomp_cli.io.labels.geometry import LabelVolume
from bodycomp_cli.io.labels.label_map import check_integer_labels
from bodycomp_cli.io.volumes import load_nifti_3d, nifti_display_transform


def read_nifti_labels(path: Path) -> LabelVolume:
    """Integer labels (Z x H x W, display orientation) and their affine; fractional values are refused."""
    from nibabel.orientations import apply_orientation

    image, data, _, _ = load_nifti_3d(path, unscaled=False)
    check_integer_labels(data, f"{path}: label volume")
    transform, affine = nifti_display_transform(image.affine, data.shape, path)
    labels = np.ascontiguousarray(apply_orientation(data, transform)).astype(np.int64)
    return LabelVolume(labels=labels, affine=affine, source=path)

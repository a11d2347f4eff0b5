"""Label sources for prepare-seg: the registry picks a reader from the path.

read_labels(path, label_map, where) -> (LabelVolume, mapped): `mapped` is True when the reader already turned the
source's labels into bodycomp classes (a folder of per-tissue masks maps file names), else label_map is still to
be applied to the values.
"""

from __future__ import annotations

from pathlib import Path

from bodycomp_cli.errors import BodycompError
from bodycomp_cli.io.labels.geometry import LabelVolume
from bodycomp_cli.io.labels.label_map import LabelMap
from bodycomp_cli.io.volumes import NIFTI_SUFFIXES


def is_geometric_source(path: Path) -> bool:
    """True for sources that carry world geometry (NIfTI, a mask folder); .npy/.png are matched by shape."""
    return path.is_dir() or path.name.lower().endswith(NIFTI_SUFFIXES)


def read_labels(path: Path, label_map: LabelMap, where: str) -> tuple[LabelVolume, bool]:
    if path.is_dir():
        from bodycomp_cli.io.labels.mask_folder import read_mask_folder

        return read_mask_folder(path, label_map, where), True
    if path.name.lower().endswith(NIFTI_SUFFIXES):
        from bodycomp_cli.io.labels.nifti import read_nifti_labels

        try:
            return read_nifti_labels(path), False
        except BodycompError as error:
            raise BodycompError(f"{where}: {error}") from None
    raise BodycompError(f"{where}: {path}: mask must be .npy, .png, .nii, .nii.gz or a folder of per-tissue masks")

"""Label sources for prepare-seg: the registry picks a reader from the path (suffix, then DICOM content).

read_labels(path, label_map, where, image) -> (planes, mapped): `planes` are LabelVolumes, each with the affine
that places it in the world; `mapped` is True when the reader already turned the source's labels into bodycomp
classes (mask folders, SEG segments and RTSTRUCT ROIs are mapped by name), else label_map is still to be applied
to the values (NIfTI, SliceOmatic tags).
"""

from __future__ import annotations

from pathlib import Path

from bodycomp_cli.errors import BodycompError
from bodycomp_cli.io.labels.geometry import ImageSource, LabelVolume
from bodycomp_cli.io.labels.label_map import LabelMap
from bodycomp_cli.io.volumes import NIFTI_SUFFIXES

ARRAY_SUFFIXES = (".npy", ".png")  # matched to their image by shape, not by geometry
TAG_SUFFIX = ".tag"
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"

__all__ = ["ImageSource", "LabelVolume", "is_geometric_source", "read_labels"]


def is_geometric_source(path: Path) -> bool:
    """True for every source placed through world geometry; .npy/.png masks are matched by shape."""
    return not path.name.lower().endswith(ARRAY_SUFFIXES)


def _dicom_kind(path: Path, where: str) -> str:
    import pydicom

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # pydicom raises many types for a foreign or truncated file
        raise BodycompError(
            f"{where}: {path}: mask must be .npy, .png, .nii, .nii.gz, .tag, a DICOM SEG or RTSTRUCT,"
            " or a folder of per-tissue masks"
        ) from None
    sop_class = str(header.get("SOPClassUID", ""))
    modality = str(header.get("Modality", ""))
    if sop_class == SEG_SOP_CLASS or modality == "SEG":
        return "seg"
    if sop_class == RTSTRUCT_SOP_CLASS or modality == "RTSTRUCT":
        return "rtstruct"
    raise BodycompError(f"{where}: {path}: DICOM mask is neither a SEG nor an RTSTRUCT (Modality {modality or '?'})")


def read_labels(path: Path, label_map: LabelMap, where: str, image: ImageSource) -> tuple[list[LabelVolume], bool]:
    name = path.name.lower()
    if path.is_dir():
        from bodycomp_cli.io.labels.mask_folder import read_mask_folder

        return [read_mask_folder(path, label_map, where)], True
    if name.endswith(NIFTI_SUFFIXES):
        from bodycomp_cli.io.labels.nifti import read_nifti_labels

        try:
            return [read_nifti_labels(path)], False
        except BodycompError as error:
            raise BodycompError(f"{where}: {error}") from None
    if name.endswith(TAG_SUFFIX):
        from bodycomp_cli.io.labels.sliceomatic import read_tag

        if label_map.mapping is None:  # TAG numbers are never bodycomp's classes, though 1 and 2 look like them
            raise BodycompError(f"{where}: {path}: a SliceOmatic tag needs --label-map (e.g. sliceomatic-alberta)")
        return [read_tag(path, image, where)], False
    kind = _dicom_kind(path, where)
    if kind == "seg":
        from bodycomp_cli.io.labels.dicom_seg import read_dicom_seg

        return read_dicom_seg(path, label_map, where, image), True
    from bodycomp_cli.io.labels.rtstruct import read_rtstruct

    return read_rtstruct(path, label_map, where, image), True

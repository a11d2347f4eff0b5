"""An RTSTRUCT's contours rasterised on its image series with rt-utils (polygon filling, OpenCV), ROIs by name.

rt-utils fills each slice's contours on the slice that the contour references (ContourImageSequence); every
rasterised slice is then placed by that image's own ImagePositionPatient/ImageOrientationPatient.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from bodycomp_cli.errors import BodycompError, BodycompWarning, reason
from bodycomp_cli.io.labels.geometry import ImageSource, LabelVolume, plane
from bodycomp_cli.io.labels.label_map import LabelMap, paint_class
from bodycomp_cli.io.volumes import dicom_stored_affine


def _referenced_series(ds) -> set[str]:
    return {
        str(series.SeriesInstanceUID)
        for frame in ds.get("ReferencedFrameOfReferenceSequence", [])
        for study in frame.get("RTReferencedStudySequence", [])
        for series in study.get("RTReferencedSeriesSequence", [])
    }


def _structure(path: Path, image: ImageSource, where: str):
    """rt-utils' RTStruct of `path` on the image's series (headers only), sorted as rt-utils sorts slices."""
    import pydicom
    from rt_utils import RTStruct, RTStructBuilder
    from rt_utils.image_helper import get_slice_position

    if not image.files:
        raise BodycompError(f"{where}: an RTSTRUCT needs a DICOM image (its series folder, or one of its files)")
    try:
        ds = pydicom.dcmread(path)
        RTStructBuilder.validate_rtstruct(ds)
    except Exception as error:  # pydicom and rt-utils raise many types for a truncated or foreign file
        raise BodycompError(f"{where}: cannot read RTSTRUCT ({reason(error)})") from None
    referenced = _referenced_series(ds)
    if image.series_uid not in referenced:
        shown = ", ".join(sorted(referenced)) or "no series"
        raise BodycompError(f"{where}: RTSTRUCT references series {shown}, not the image's {image.series_uid}")
    series = [pydicom.dcmread(file, stop_before_pixels=True) for file in image.files]
    first = series[0]
    if first.Rows != first.Columns or float(first.PixelSpacing[0]) != float(first.PixelSpacing[1]):
        # rt-utils pairs rows with columns in its pixel grid: only square grids rasterise where they belong.
        raise BodycompError(f"{where}: RTSTRUCT contours are rasterised on square images with square pixels only")
    series.sort(key=get_slice_position)
    return RTStruct(series, ds), series


def read_rtstruct(path: Path, label_map: LabelMap, where: str, image: ImageSource) -> list[LabelVolume]:
    """Bodycomp classes (uint8) on each image slice that a mapped ROI has contours on, with its world affine."""
    where = f"{where}: {path}"
    structure, series = _structure(path, image, where)
    classes = np.zeros((len(series), int(series[0].Rows), int(series[0].Columns)), dtype=np.uint8)
    contoured = np.zeros(len(series), dtype=bool)  # slices without any contour are not annotated: no plane
    for name in structure.get_roi_names():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mask = np.moveaxis(structure.get_roi_mask_by_name(name), 2, 0)  # rt-utils: rows x cols x slices
        except Exception as error:  # rt-utils and OpenCV raise many types for malformed contours
            raise BodycompError(f"{where}: cannot rasterise ROI {name!r} ({reason(error)})") from None
        if not mask.any():
            warnings.warn(
                f"{where}: ROI {name!r} has no contour on this series: read as absent", BodycompWarning, stacklevel=2
            )
            continue
        contoured |= mask.any(axis=(1, 2))
        label = label_map.class_of(str(name), where)
        if not label:
            continue
        paint_class(classes, mask, label, f"{where}: ROI {name!r}")
    planes = []
    for k in np.flatnonzero(contoured):
        ds = series[k]
        orientation = [float(v) for v in ds.ImageOrientationPatient]
        affine = dicom_stored_affine(ds.ImagePositionPatient, orientation, ds.PixelSpacing, np.zeros(3))
        planes.append(plane(classes[k], affine, path))
    return planes

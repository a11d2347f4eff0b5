"""A DICOM SEG (BINARY or FRACTIONAL), read with highdicom: one label plane per frame position.

Frames are placed by their PlanePositionSequence (world geometry), never by frame order. Segments are keyed by
their SegmentLabel through --label-map (bodycomp's own segment names map without one). A FRACTIONAL frame's
pixel belongs to its segment when its fraction is 0.5 or more.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from bodycomp_cli.errors import BodycompError, BodycompWarning, reason
from bodycomp_cli.io.labels.geometry import ImageSource, LabelVolume, plane
from bodycomp_cli.io.labels.label_map import LabelMap, paint_class
from bodycomp_cli.io.volumes import dicom_stored_affine

FRACTION_THRESHOLD = 0.5


def _frame_geometry(seg, frame: int) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, float], int]:
    """(ImagePositionPatient, ImageOrientationPatient, PixelSpacing, segment number) of one frame."""
    groups = seg.PerFrameFunctionalGroupsSequence[frame]
    shared = seg.SharedFunctionalGroupsSequence[0]

    def item(sequence: str):
        return groups.get(sequence, None) or shared.get(sequence)

    position = tuple(float(v) for v in groups.PlanePositionSequence[0].ImagePositionPatient)
    orientation = tuple(float(v) for v in item("PlaneOrientationSequence")[0].ImageOrientationPatient)
    spacing = tuple(float(v) for v in item("PixelMeasuresSequence")[0].PixelSpacing)
    number = int(groups.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
    return position, orientation, spacing, number


def _refuse_other_series(seg, image: ImageSource, where: str) -> None:
    referenced = {str(item.SeriesInstanceUID) for item in seg.get("ReferencedSeriesSequence", [])}
    if image.series_uid is not None and image.series_uid not in referenced:
        shown = ", ".join(sorted(referenced)) or "no series"
        raise BodycompError(f"{where}: DICOM SEG references series {shown}, not the image's {image.series_uid}")


def read_dicom_seg(path: Path, label_map: LabelMap, where: str, image: ImageSource) -> list[LabelVolume]:
    """Bodycomp classes (uint8) on each plane the SEG has frames on, each with its world affine."""
    import highdicom as hd

    where = f"{where}: {path}"
    try:
        seg = hd.seg.segread(path)
        kind = str(seg.SegmentationType)
        frames = seg.pixel_array if kind in ("BINARY", "FRACTIONAL") else None
        geometry = [_frame_geometry(seg, k) for k in range(int(seg.get("NumberOfFrames", 1)))]
    except Exception as error:  # highdicom and pydicom raise many types for a truncated or foreign file
        raise BodycompError(f"{where}: cannot read DICOM SEG ({reason(error)})") from None
    if frames is None:
        raise BodycompError(f"{where}: SegmentationType {kind} is not read (BINARY or FRACTIONAL only)")
    _refuse_other_series(seg, image, where)
    frames = frames.reshape(len(geometry), *frames.shape[-2:])
    if kind == "FRACTIONAL":
        frames = frames.astype(np.float64) / float(seg.MaximumFractionalValue) >= FRACTION_THRESHOLD
    labels = {int(item.SegmentNumber): str(item.SegmentLabel) for item in seg.SegmentSequence}
    present = {number for k, (_, _, _, number) in enumerate(geometry) if frames[k].any()}
    if not present:
        raise BodycompError(f"{where}: DICOM SEG is empty (no segment has a pixel)")
    for number in sorted(set(labels) - present):
        warnings.warn(
            f"{where}: segment {number} {labels[number]!r} is empty: read as absent", BodycompWarning, stacklevel=2
        )
    planes: dict[tuple[float, ...], tuple[np.ndarray, np.ndarray]] = {}
    for k, (position, orientation, spacing, number) in enumerate(geometry):
        if number not in present:
            continue
        label = label_map.class_of_named(labels.get(number, str(number)), number, where)
        key = tuple(np.round(position, 2))
        if key not in planes:
            affine = dicom_stored_affine(position, orientation, spacing, np.zeros(3))
            planes[key] = (np.zeros(frames.shape[1:], dtype=np.uint8), affine)
        classes, pixels = planes[key][0], frames[k].astype(bool)
        if not label:
            continue
        paint_class(classes, pixels, label, f"{where}: segment {number}")
    return [plane(classes, affine, path) for classes, affine in planes.values()]

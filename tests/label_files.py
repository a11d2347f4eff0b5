"""Write label sources the way real tools write them, for the prepare-seg reader tests.

CT series with pydicom (any stored orientation), DICOM SEGs with highdicom. Every writer takes arrays in
bodycomp's display orientation and a display world: pixel (row r, column c) of slice k lies at DICOM (LPS)
x = X0 + c * SX, y = Y0 + r * SY, z = z_mm[k].
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from dicom_export import ct_dataset
from pydicom.uid import generate_uid

X0, Y0, SX, SY = -100.0, -120.0, 0.7, 0.9
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def stored_pixels(
    display: np.ndarray, orientation: Sequence[float], sx: float = SX, sy: float = SY
) -> tuple[np.ndarray, list[float], list[float]]:
    """(stored H x W, ImagePositionPatient x/y, PixelSpacing) of a display slice written with `orientation`.

    Axis-aligned orientations only: the row direction is +-x or +-y, the column direction the other axis.
    """
    row_dir, col_dir = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    height, width = display.shape
    by_y_x = display  # indexed (y index, x index)
    spacing = {"x": sx, "y": sy}
    if abs(row_dir[0]) > 0.5:  # columns run along x: stored is (y, x)
        stored, along_cols, along_rows = by_y_x, "x", "y"
    else:  # columns run along y: stored is (x, y)
        stored, along_cols, along_rows = by_y_x.T, "y", "x"
    corner = {"x": X0, "y": Y0}
    extent = {"x": (width - 1) * sx, "y": (height - 1) * sy}
    if row_dir.sum() < 0:  # columns run toward -axis: stored column 0 is the far end
        stored = stored[:, ::-1]
        corner[along_cols] += extent[along_cols]
    if col_dir.sum() < 0:
        stored = stored[::-1, :]
        corner[along_rows] += extent[along_rows]
    return np.ascontiguousarray(stored), [corner["x"], corner["y"]], [spacing[along_rows], spacing[along_cols]]


def write_series(
    folder: Path,
    hu: np.ndarray,
    z_mm: Sequence[float],
    orientation: Sequence[float] = IDENTITY,
    head_first: bool = True,
    series_uid: str | None = None,
    square_pixels: bool = False,
) -> list[pydicom.Dataset]:
    """One file per slice (display Z x H x W HU, z ascending); instance 1 is the head end when head_first.

    square_pixels: SX along both axes (rt-utils rasterises square pixels only), else SX by SY."""
    folder.mkdir(parents=True, exist_ok=True)
    study_uid, series_uid = generate_uid(), series_uid or generate_uid()
    order = list(range(len(z_mm)))[::-1] if head_first else list(range(len(z_mm)))
    datasets = []
    for instance, k in enumerate(order, start=1):
        stored, corner, spacing = stored_pixels(hu[k], orientation, SX, SX if square_pixels else SY)
        ds = ct_dataset(
            stored, z_mm[k], study_uid=study_uid, series_uid=series_uid, instance=instance, orientation=orientation
        )
        ds.ImagePositionPatient = [corner[0], corner[1], float(z_mm[k])]
        ds.PixelSpacing = spacing
        ds.PatientPosition = "HFS" if head_first else "FFS"
        ds.save_as(folder / f"IM{instance:04d}.dcm", enforce_file_format=True)
        datasets.append(ds)
    return sorted(datasets, key=lambda ds: float(ds.ImagePositionPatient[2]))


def display_to_ras_affine(spacing_z: float, z0: float) -> np.ndarray:
    """The NIfTI affine of a display array stored as (x = column, y = row, z) in the display world."""
    affine = np.diag([-SX, -SY, spacing_z, 1.0])  # LPS +x, +y are RAS -x, -y
    affine[:3, 3] = [-X0, -Y0, z0]
    return affine


def write_seg(
    path: Path,
    sources: Sequence[pydicom.Dataset],
    labels: np.ndarray,
    names: Sequence[str] = ("muscle", "subcutaneous fat", "visceral fat"),
    fractions: np.ndarray | None = None,
) -> Path:
    """A DICOM SEG written by highdicom on `sources` (one per labels slice), labels display N x H x W (k = segment k).

    With `fractions` (N x H x W in 0..1) the SEG is FRACTIONAL: segment k holds `fractions` where labels == k.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from bodycomp_cli.io.volumes import stored_from_display

    orientation = [float(v) for v in sources[0].ImageOrientationPatient]
    stored = stored_from_display(np.asarray(labels, dtype=np.uint8), orientation, path)
    algorithm = hd.AlgorithmIdentificationSequence(
        name="test", version="1", family=codes.cid7162.ArtificialIntelligence
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=name,
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for number, name in enumerate(names, start=1)
    ]
    kind = hd.seg.SegmentationTypeValues.BINARY
    pixels = np.ascontiguousarray(stored)
    if fractions is not None:
        kind = hd.seg.SegmentationTypeValues.FRACTIONAL
        stored_fractions = stored_from_display(np.asarray(fractions, dtype=np.float32), orientation, path)
        pixels = np.stack([np.where(stored == k, stored_fractions, 0.0) for k in range(1, len(names) + 1)], axis=-1)
        pixels = np.ascontiguousarray(pixels.astype(np.float32))
    seg = hd.seg.Segmentation(
        source_images=list(sources),
        pixel_array=pixels,
        segmentation_type=kind,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=99,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="test",
        manufacturer_model_name="test",
        software_versions="1",
        device_serial_number="1",
    )
    seg.save_as(path)
    return path


def write_rtstruct(path: Path, folder: Path, rois: dict[str, np.ndarray], z_mm: Sequence[float]) -> Path:
    """An RTSTRUCT written by rt-utils on the series in `folder`; each ROI a display Z x H x W bool mask."""
    from rt_utils import RTStructBuilder

    from bodycomp_cli.io.volumes import stored_from_display

    structure = RTStructBuilder.create_new(dicom_series_path=str(folder))
    for name, display in rois.items():
        layers = []
        for ds in structure.series_data:  # rt-utils' own slice order
            k = list(z_mm).index(float(ds.ImagePositionPatient[2]))
            layers.append(stored_from_display(display[k], [float(v) for v in ds.ImageOrientationPatient], path))
        structure.add_roi(mask=np.stack(layers, axis=-1).astype(bool), name=name)
    structure.save(str(path))
    return path


def write_tag(
    path: Path, source: pydicom.Dataset, display_tags: np.ndarray, header_size: tuple[int, int] | None = None
):
    """A SliceOmatic .tag for `source`: its ASCII header (fields SliceOmatic writes, a form feed), then one byte
    per pixel as the image is stored, rows from the top. header_size: (x, y) to write instead of the image's."""
    from bodycomp_cli.io.volumes import stored_from_display

    orientation = [float(v) for v in source.ImageOrientationPatient]
    stored = stored_from_display(np.asarray(display_tags, dtype=np.uint8), orientation, path)
    x, y = header_size or (stored.shape[1], stored.shape[0])
    position = [float(v) for v in source.ImagePositionPatient]
    fields = [
        "* sliceOmatic tag file",
        f"x:{x}",
        f"y:{y}",
        "z:1",
        f"org_x:{position[0]:.6f}",
        f"org_y:{position[1]:.6f}",
        f"org_z:{position[2]:.6f}",
        f"inc_x:{float(source.PixelSpacing[1]):.6f}",
        f"inc_y:{float(source.PixelSpacing[0]):.6f}",
        f"epais:{float(source.SliceThickness):.6f}",
        *(f"dir_h_{axis}:{value:.6f}" for axis, value in zip("xyz", orientation[:3], strict=True)),
        *(f"dir_v_{axis}:{value:.6f}" for axis, value in zip("xyz", orientation[3:], strict=True)),
        "type:BYTE",
        f"uid:{source.SOPInstanceUID}",
    ]
    path.write_bytes(("\n".join(fields) + "\n").encode("ascii") + b"\x0c" + np.ascontiguousarray(stored).tobytes())
    return path

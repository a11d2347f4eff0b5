"""A SliceOmatic .tag file: an ASCII header of `name:value` fields ended by a form feed (0x0C), then one byte per
pixel of its image, row after row from the top, as the image is stored. Tag values are SliceOmatic's TAG numbers
(the Alberta protocol's 1 muscle, 2 IMAT, 5 visceral fat, 7 subcutaneous fat: --label-map sliceomatic-alberta).

The tag's image is the DICOM file it sits beside (`IM0001.dcm.tag` tags `IM0001.dcm`), or the row's DICOM file; its
ImagePositionPatient/ImageOrientationPatient place the tag in the world.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bodycomp_cli.errors import BodycompError
from bodycomp_cli.io.labels.geometry import ImageSource, LabelVolume, plane
from bodycomp_cli.io.volumes import dicom_stored_affine

HEADER_END = b"\x0c"
MAX_HEADER = 65536  # SliceOmatic's headers are a few hundred bytes


def _header(data: bytes, where: str) -> tuple[dict[str, str], int]:
    """The header's fields and the offset of the first pixel byte."""
    end = data.find(HEADER_END, 0, MAX_HEADER)
    if end < 0:
        raise BodycompError(f"{where}: not a SliceOmatic tag file (no form feed ending its header)")
    fields = {}
    for field in data[:end].decode("ascii", errors="replace").split():
        name, _, value = field.partition(":")
        fields[name.strip()] = value.strip()
    return fields, end + 1


def _image_of(path: Path, image: ImageSource, where: str) -> Path:
    beside = path.with_name(path.name[: -len(".tag")])
    if beside.is_file():
        return beside
    if image.series_uid is not None and image.path.is_file():
        return image.path
    raise BodycompError(f"{where}: no DICOM image for this tag (expected {beside.name} beside it, or as the image)")


def read_tag(path: Path, image: ImageSource, where: str) -> LabelVolume:
    """The tag values (1 x rows x columns, as stored) on its DICOM image's plane."""
    import pydicom

    where = f"{where}: {path}"
    fields, offset = _header(path.read_bytes(), where)
    try:
        columns, rows, depth = int(fields["x"]), int(fields["y"]), int(fields.get("z", "1") or 1)
    except (KeyError, ValueError):
        raise BodycompError(f"{where}: tag header lacks whole-number x and y (the image's size)") from None
    pixels = path.stat().st_size - offset
    if depth != 1 or pixels != rows * columns:
        raise BodycompError(
            f"{where}: wrong size: {pixels} bytes of tags, the header's {columns} x {rows} x {depth} needs"
            f" {rows * columns * depth} (one slice)"
        )
    source = _image_of(path, image, where)
    ds = pydicom.dcmread(source, stop_before_pixels=True)
    if (int(ds.Rows), int(ds.Columns)) != (rows, columns):
        raise BodycompError(
            f"{where}: wrong size: tags are {columns} x {rows}, image {source.name} is {ds.Columns} x {ds.Rows}"
        )
    tags = np.frombuffer(path.read_bytes()[offset:], dtype=np.uint8).reshape(rows, columns).astype(np.int64)
    orientation = [float(v) for v in ds.ImageOrientationPatient]
    return plane(tags, dicom_stored_affine(ds.ImagePositionPatient, orientation, ds.PixelSpacing, np.zeros(3)), path)

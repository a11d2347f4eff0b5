"""Find the DICOM series in a folder tree of any depth (a PACS export), reading headers only.

Files are recognised by content (the "DICM" marker after the 128-byte preamble), not by name: PACS
exports name files `IM0001`, `1.2.840...` or `*.dcm` alike. Files are grouped into series by
SeriesInstanceUID and series into studies by StudyInstanceUID. A "series" whose slices change
orientation or image size is split into parts; one whose slices repeat a position is split by
AcquisitionNumber when that separates them, and otherwise kept whole with a `problem` that the
filters report (an entangled series cannot be read as one volume).
"""

from __future__ import annotations

import os
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bodycomp_cli.errors import BodycompError
from bodycomp_cli.io.dicom_series import DicomSeries, SliceHeader, positions_along_normal
from bodycomp_cli.io.series_filters import axial_failure, kind_failure

DICM_OFFSET = 128  # the preamble's length; "DICM" follows it in every Part 10 file
POSITION_DECIMALS = 2  # slice positions closer than 0.01 mm are the same position
# results.csv column -> DICOM keyword, read from the series' first slice.
IDENTIFIER_KEYWORDS = {
    "patient_id": "PatientID",
    "study_instance_uid": "StudyInstanceUID",
    "series_instance_uid": "SeriesInstanceUID",
    "accession_number": "AccessionNumber",
    "study_date": "StudyDate",
    "series_description": "SeriesDescription",
    "slice_thickness_mm": "SliceThickness",
    "kvp": "KVP",
    "convolution_kernel": "ConvolutionKernel",
    "contrast_bolus_agent": "ContrastBolusAgent",
    "manufacturer": "Manufacturer",
}
IDENTIFIER_COLUMNS = tuple(IDENTIFIER_KEYWORDS)
NUMERIC_IDENTIFIERS = ("slice_thickness_mm", "kvp")  # DICOM decimal strings, kept as numbers


@dataclass
class TreeScan:
    series: list[DicomSeries]
    not_dicom: list[Path]  # files without the DICM marker
    without_image: list[Path]  # DICOM files that hold no image (DICOMDIR, reports) or an unreadable header


def is_dicom_file(path: Path) -> bool:
    """True when the file carries the DICOM Part 10 marker (whatever its name)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(DICM_OFFSET + 4)
    except OSError:
        return False
    return head[DICM_OFFSET:] == b"DICM"


def _text(ds, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None or value == "":
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _identifiers(ds) -> dict[str, str | float | None]:
    values: dict[str, str | float | None] = {}
    for column, keyword in IDENTIFIER_KEYWORDS.items():
        text = _text(ds, keyword)
        if column in NUMERIC_IDENTIFIERS:
            try:
                values[column] = float(text) if text else None
            except ValueError:  # a malformed decimal string is left blank rather than guessed
                values[column] = None
        else:
            values[column] = text
    return values


def read_header(path: Path) -> SliceHeader | None:
    """The header of one DICOM image file, or None when the file holds no image (DICOMDIR, reports)."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as error:  # pydicom raises many types for a truncated or corrupt header
        warnings.warn(f"{path}: unreadable DICOM header, skipped ({type(error).__name__})", stacklevel=2)
        return None
    if "Rows" not in ds or "Columns" not in ds:
        return None
    try:
        orientation = tuple(float(v) for v in ds.ImageOrientationPatient) if "ImageOrientationPatient" in ds else None
        position = tuple(float(v) for v in ds.ImagePositionPatient) if "ImagePositionPatient" in ds else None
    except (TypeError, ValueError):
        orientation = position = None
    return SliceHeader(
        path=path,
        sop_instance_uid=_text(ds, "SOPInstanceUID"),
        series_uid=_text(ds, "SeriesInstanceUID"),
        study_uid=_text(ds, "StudyInstanceUID"),
        modality=_text(ds, "Modality"),
        image_type=tuple(str(v) for v in (ds.get("ImageType") or [])),
        orientation=orientation if orientation is not None and len(orientation) == 6 else None,
        position=position if position is not None and len(position) == 3 else None,
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        acquisition=_text(ds, "AcquisitionNumber"),
        series_number=_text(ds, "SeriesNumber"),
        identifiers=_identifiers(ds),
    )


def _repeats_a_position(slices: Sequence[SliceHeader]) -> bool:
    positions = np.round(positions_along_normal(slices), POSITION_DECIMALS)
    return len(np.unique(positions)) < len(positions)


def _split_series(slices: list[SliceHeader]) -> list[tuple[str, list[SliceHeader], str | None]]:
    """(suffix, slices, problem) parts of one SeriesInstanceUID's files."""
    if any(s.orientation is None or s.position is None for s in slices):
        return [("", slices, "no ImageOrientationPatient or ImagePositionPatient in some slices")]
    # A change of orientation or matrix starts another stack (a scout or reformat saved in the series).
    stacks: dict[tuple, list[SliceHeader]] = defaultdict(list)
    for header in slices:
        stacks[(tuple(np.round(header.orientation, 3)), header.rows, header.columns)].append(header)
    parts = []
    for number, stack in enumerate(stacks.values(), start=1):
        suffix = f"_part{number}" if len(stacks) > 1 else ""
        if not _repeats_a_position(stack):
            parts.append((suffix, stack, None))
            continue
        by_acquisition: dict[str, list[SliceHeader]] = defaultdict(list)
        for header in stack:
            by_acquisition[header.acquisition].append(header)
        if len(by_acquisition) > 1 and not any(map(_repeats_a_position, by_acquisition.values())):
            parts += [(f"{suffix}_acq{acq}", part, None) for acq, part in by_acquisition.items()]
        else:
            repeated = len(stack) - len(np.unique(np.round(positions_along_normal(stack), POSITION_DECIMALS)))
            problem = f"{repeated} slices repeat another slice's position (an entangled series); refused"
            parts.append((suffix, stack, problem))
    return parts


def scan_tree(root: Path) -> TreeScan:
    """Every DICOM image series under root (a folder of any depth, or one file), grouped and named.

    Series ids are the series folder's path from root's parent (`export/p1/ct`), with `_S<SeriesNumber>`
    (or the UID's tail) added when a folder holds several series. Example: scan_tree(Path("export"))
    """
    root = Path(root)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    by_uid: dict[str, list[SliceHeader]] = defaultdict(list)
    not_dicom: list[Path] = []
    without_image: list[Path] = []
    for path in files:
        if not is_dicom_file(path):
            not_dicom.append(path)
            continue
        header = read_header(path)
        if header is None:
            without_image.append(path)
            continue
        # Files without a SeriesInstanceUID are grouped by folder rather than thrown together.
        by_uid[header.series_uid or f"folder:{path.parent}"].append(header)
    series = []
    for uid_slices in by_uid.values():
        for suffix, part, problem in _split_series(uid_slices):
            series.append(DicomSeries(series_id=suffix, slices=part, problem=problem))
    _name_series(series, root)
    return TreeScan(series=series, not_dicom=not_dicom, without_image=without_image)


def _name_series(series: list[DicomSeries], root: Path) -> None:
    base = root.resolve().parent
    folders = [entry.folder() for entry in series]
    shared = defaultdict(set)
    for entry, folder in zip(series, folders, strict=True):
        shared[folder].add(entry.series_uid)
    for entry, folder in zip(series, folders, strict=True):
        name = Path(os.path.relpath(folder.resolve(), base)).as_posix()
        if len(shared[folder]) > 1:
            first = entry.slices[0]
            name += f"_S{first.series_number}" if first.series_number else f"_{entry.series_uid[-8:]}"
        entry.series_id = name + entry.series_id  # the split suffix, if any
    counts: dict[str, int] = defaultdict(int)
    for entry in series:  # two series numbered alike in one folder: the UID's tail tells them apart
        counts[entry.series_id] += 1
    for entry in series:
        if counts[entry.series_id] > 1:
            entry.series_id += f"_{entry.series_uid[-8:]}"


def only_series(folder: Path) -> DicomSeries:
    """The one CT series a folder tree holds (for a manifest row or read_volume), or a clear refusal.

    A tree with a localizer or a reformat beside one CT series gives that series: only series that
    pass the modality, ImageType and orientation filters count when there are several.
    """
    scan = scan_tree(folder)
    for path in scan.not_dicom:
        warnings.warn(f"{path}: not a DICOM file, skipped", stacklevel=2)
    for path in scan.without_image:
        warnings.warn(f"{path}: DICOM file without an image, skipped", stacklevel=2)
    if not scan.series:
        raise BodycompError(f"{folder}: no DICOM image files found")
    candidates = scan.series if len(scan.series) == 1 else [s for s in scan.series if kind_failure(s) is None]
    if len(candidates) != 1:
        names = ", ".join(s.series_id for s in (candidates or scan.series))
        raise BodycompError(
            f"{folder}: folder holds {len(scan.series)} DICOM series (SeriesInstanceUID) and "
            f"{len(candidates)} are axial primary CT ({names}); give one series per row"
        )
    chosen, orientation = candidates[0], candidates[0].slices[0].orientation
    # A tilted series is left to the reader, whose refusal says so (its positions along z may all repeat).
    if chosen.problem is not None and (orientation is None or axial_failure(orientation) is None):
        raise BodycompError(f"{folder}: {chosen.problem}")
    return chosen

"""Turn estimate's INPUT arguments (DICOM trees, volume files, manifest CSVs) into a list of series."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bodycomp_cli.errors import BodycompError
from bodycomp_cli.estimate.patient_facts import MANIFEST_FACT_COLUMNS
from bodycomp_cli.estimate.qc import QcSettings
from bodycomp_cli.io.dicom_tree import DicomSeries, only_series, scan_tree
from bodycomp_cli.io.series_filters import header_failure
from bodycomp_cli.io.volumes import Volume, read_dicom_files, read_volume

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".npz")


@dataclass(frozen=True)
class SeriesInput:
    series: str  # the id used in results.csv, qc.csv and output file names
    path: Path  # a DICOM series folder, a NIfTI file or an .npz volume
    origin: str  # where it was named, for error messages
    dicom: DicomSeries | None = None  # the series found in a DICOM tree (headers only)
    manifest_facts: tuple[tuple[str, str], ...] = ()  # (column, cell) of the manifest's patient-fact columns


def series_id_for(path: Path) -> str:
    """A DICOM folder's name, or a volume file's name without its suffix (`ct.nii.gz` -> `ct`)."""
    name = path.name
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _check_volume_path(path: Path, origin: str) -> None:
    if not path.exists():
        raise BodycompError(f"{origin}: {path} does not exist")
    if path.is_file() and not path.name.lower().endswith(VOLUME_SUFFIXES):
        raise BodycompError(f"{origin}: {path} is not a DICOM folder, NIfTI (.nii, .nii.gz), .npz or manifest CSV")


def _read_manifest(manifest: Path) -> list[SeriesInput]:
    """The series of a prepare-slices manifest (`series`, `path`; `z_<LEVEL>` and `split` are ignored; the
    optional patient-fact columns `sex`, `age`, `height_m` or `height_cm`, `weight_kg` override the DICOM header)."""
    from bodycomp_cli.io.manifests import read_manifest, refuse_blank_or_duplicate, resolve_path, row_label

    table = read_manifest(manifest, ["series", "path"])
    refuse_blank_or_duplicate(manifest, list(table["series"]), "series")
    entries = []
    for index, (series, value) in enumerate(zip(table["series"], table["path"], strict=True)):
        path = resolve_path(manifest, index, "path", value)
        origin = row_label(manifest, index)
        _check_volume_path(path, origin)
        facts = tuple((name, table[name][index]) for name in MANIFEST_FACT_COLUMNS if name in table.columns)
        entries.append(SeriesInput(series, path, origin, manifest_facts=facts))
    return entries


def collect_inputs(paths: Sequence[Path]) -> list[SeriesInput]:
    """Every series named by the arguments, in order; refuses missing paths and repeated series ids.

    Example: collect_inputs([Path("cohort.csv"), Path("dicom/patient7"), Path("ct.nii.gz")])
    """
    entries: list[SeriesInput] = []
    for path in map(Path, paths):
        if path.is_file() and path.suffix.lower() == ".csv":
            entries.extend(_read_manifest(path))
        elif path.is_dir():
            entries.extend(_tree_inputs(path))
        else:
            _check_volume_path(path, "input")
            entries.append(SeriesInput(series_id_for(path), path, f"input {path}"))
    if not entries:
        raise BodycompError("no series to estimate: the inputs name none")
    seen: dict[str, SeriesInput] = {}
    for entry in entries:
        if entry.series in seen:
            raise BodycompError(
                f"series id `{entry.series}` is given twice ({seen[entry.series].origin} and {entry.origin}); "
                "list them in a manifest CSV with unique `series` ids"
            )
        seen[entry.series] = entry
    return entries


def _tree_inputs(folder: Path) -> list[SeriesInput]:
    """One input per DICOM series found under the folder (any depth); a folder without any stays one
    input, so that the reader's refusal ("no DICOM image files found") lands in qc.csv."""
    found = scan_tree(folder).series
    if not found:
        return [SeriesInput(series_id_for(folder), folder, f"input {folder}")]
    return [SeriesInput(s.series_id, s.folder(), f"input {folder}", dicom=s) for s in found]


def read_series(entry: SeriesInput, qc: QcSettings) -> tuple[Volume, DicomSeries | None]:
    """The volume of one input and, for DICOM, its series headers; BodycompError says why it is skipped.

    DICOM series pass the header filters (modality, ImageType, axial, grouping, slice count, spacing,
    in-plane size) before any pixel is decoded.
    """
    dicom = entry.dicom
    if dicom is None and entry.path.is_dir():  # a manifest row naming a folder tree of one CT series
        dicom = only_series(entry.path)
    if dicom is None:
        return read_volume(entry.path), None
    reason = header_failure(dicom, qc.min_slices, qc.spacing_tolerance_mm, qc.min_matrix)
    if reason is not None:
        raise BodycompError(reason)
    return read_dicom_files(dicom.paths, entry.path), dicom

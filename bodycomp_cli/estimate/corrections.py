"""corrections.csv: the series' levels estimate flagged for review, as a prepare-seg manifest of their DICOM SEGs.

A reader corrects each listed SEG in a viewer (3D Slicer, OHIF) and runs `prepare-seg corrections.csv` to turn the
corrected masks into training arrays (docs/corrections.md). A row needs a SEG: flagged levels without one (a
level not in the scan, a non-DICOM input) are in report.html only. Runs without --dicom-seg write no file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from bodycomp_cli.estimate.inputs import SeriesInput
from bodycomp_cli.estimate.qa_page import level_flags
from bodycomp_cli.estimate.report import Layout, csv_text
from bodycomp_cli.estimate.series import file_stem
from bodycomp_cli.io.atomic import atomic_write_text

CORRECTION_COLUMNS = ("image", "mask", "series", "level", "z_mm", "group", "reason")


def seg_path(series: str, level: str) -> str:
    """Where estimate --dicom-seg writes a series' level, relative to the output folder."""
    return f"dicom_seg/{file_stem(series)}_{level}.dcm"


def correction_rows(
    folder: Path, rows: Sequence[dict[str, object]], layout: Layout, inputs: Mapping[str, SeriesInput]
) -> list[dict[str, object]]:
    """One row per flagged level that has a SEG: the chosen slice's DICOM file, its SEG (relative to `folder`),
    the level's z and why it was flagged; `group` (the patient) keeps one patient's rows in one split."""
    found = []
    for row in rows:
        series = str(row["series"])
        entry = inputs.get(series)
        files = {header.sop_instance_uid: header.path for header in entry.dicom.slices} if entry and entry.dicom else {}
        for level, tissues in layout:
            flags = level_flags(row, level, tissues)
            image = files.get(str(row.get(f"{level}_sop_instance_uid") or ""))
            if not flags or image is None or not (folder / seg_path(series, level)).is_file():
                continue
            found.append(
                {
                    "image": str(Path(image).resolve()),
                    "mask": seg_path(series, level),
                    "series": series,
                    "level": level,
                    "z_mm": row.get(f"{level}_z_mm"),
                    "group": row.get("patient_id") or series,
                    "reason": "; ".join(flags),
                }
            )
    return found


def write_corrections(
    folder: Path, rows: Sequence[dict[str, object]], layout: Layout, inputs: Mapping[str, SeriesInput]
) -> None:
    """Write folder/corrections.csv (atomically; only the header when nothing is flagged)."""
    atomic_write_text(
        folder / "corrections.csv", csv_text(correction_rows(folder, rows, layout, inputs), CORRECTION_COLUMNS)
    )

"""results.csv, results.json and qc.csv: their columns, their records, and reading them back for --resume."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from pathlib import Path

from bodycomp_cli.core.versions import versions
from bodycomp_cli.errors import BodycompError
from bodycomp_cli.estimate.clinical import CLINICAL_TEXT_COLUMNS, clinical_columns
from bodycomp_cli.estimate.measure import STATISTICS
from bodycomp_cli.estimate.vertebra import VERTEBRA_TEXT_FIELDS, vertebra_columns
from bodycomp_cli.estimate.vertebra_count import COUNT_COLUMNS
from bodycomp_cli.io.atomic import atomic_write_text
from bodycomp_cli.io.dicom_tree import IDENTIFIER_COLUMNS
from bodycomp_cli.io.journal import read_complete_text

# reason: blank, or why no slice; review: why a reader should check the level, confidence in [0, 1] (review.py)
# review_cues: every cue's measure, `key=value; ...` (review.py)
LEVEL_FIELDS = (
    "slice_index", "z_mm", "zero_crossings", "sop_instance_uid", "reason", "review", "confidence", "review_cues",
)  # fmt: skip
TISSUE_FIELDS = (*STATISTICS, "touches_edge")
# The `slice_selection` column: how each series' slices were chosen.
SELECTION_BY_MODEL = "model"
SELECTION_SKIPPED = "skipped (one slice)"  # a one-slice volume: that slice is every level's
INTEGER_FIELDS = ("slice_index", "zero_crossings", "n_slices", "lumbar_vertebrae")
# Read back as text, so that a PatientID "0012" or a UID keeps every character.
TEXT_COLUMNS = ("series", "patient_id", "study_instance_uid", "series_instance_uid", "accession_number", "study_date")
QC_COLUMNS = ("series", "reason", "path", "patient_id", "study_instance_uid", "series_instance_uid")

Layout = list[tuple[str, list[str]]]  # (level, tissues measured at it), in column order


def result_columns(layout: Layout) -> list[str]:
    """`series`, `slice_selection`, `n_slices`, the DICOM identifiers, the lumbar count, then per level its slice
    fields and each tissue's figures."""
    columns = ["series", "slice_selection", "n_slices", *IDENTIFIER_COLUMNS, *COUNT_COLUMNS]
    for level, tissues in layout:
        columns += [f"{level}_{name}" for name in LEVEL_FIELDS]
        columns += [f"{level}_{tissue}_{stat}" for tissue in tissues for stat in TISSUE_FIELDS]
    return columns + clinical_columns([level for level, _ in layout]) + vertebra_columns(layout)


def _cell(value: object) -> object:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return None
    return value.item() if hasattr(value, "item") else value  # numpy scalars to plain JSON


def nested_record(row: dict[str, object], layout: Layout) -> dict[str, object]:
    """One results.json entry: {series, slice_selection, n_slices, dicom: {...}, levels: {L3: {slice_index,
    z_mm, zero_crossings, sop_instance_uid, tissues: {...}}}}."""
    levels = {}
    for level, tissues in layout:
        entry: dict[str, object] = {name: _cell(row.get(f"{level}_{name}")) for name in LEVEL_FIELDS}
        entry["tissues"] = {
            tissue: {stat: _cell(row.get(f"{level}_{tissue}_{stat}")) for stat in TISSUE_FIELDS} for tissue in tissues
        }
        levels[level] = entry
    dicom = {column: _cell(row.get(column)) for column in IDENTIFIER_COLUMNS}
    return {
        "series": row["series"],
        "slice_selection": row["slice_selection"],
        "n_slices": row.get("n_slices"),
        "dicom": dicom,
        **{column: _cell(row.get(column)) for column in COUNT_COLUMNS},
        "levels": levels,
    }


def csv_text(rows: Sequence[dict[str, object]], columns: Sequence[str], header: bool = True) -> str:
    """CSV records of `rows` in `columns` order, as pandas writes them (a blank cell for None or NaN)."""
    import pandas as pd

    buffer = io.StringIO()
    frame = pd.DataFrame(list(rows), columns=list(columns))
    for column in frame.columns:
        if column.endswith(INTEGER_FIELDS):  # a blank cell would make pandas write the others as 4.0
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    frame.to_csv(buffer, index=False, header=header)
    return buffer.getvalue()


def write_results(output_dir: Path, rows: Sequence[dict[str, object]], layout: Layout) -> None:
    """Write results.csv and results.json from all rows (each file replaced atomically)."""
    columns = result_columns(layout)
    atomic_write_text(output_dir / "results.csv", csv_text(rows, columns))
    document = {"versions": versions(), "columns": columns, "series": [nested_record(row, layout) for row in rows]}
    atomic_write_text(output_dir / "results.json", json.dumps(document, indent=1) + "\n")


def write_qc(output_dir: Path, failures: Sequence[dict[str, str]]) -> None:
    atomic_write_text(output_dir / "qc.csv", csv_text(failures, QC_COLUMNS))


def read_results(path: Path, layout: Layout) -> list[dict[str, object]]:
    """The rows of a results.csv (or a rank's part of one); a row torn by a crash is left out."""
    import pandas as pd

    if not path.is_file():
        return []
    try:
        text = read_complete_text(path)
        if not text:  # killed before its first record was complete: nothing was done
            return []
        text_fields = (
            "sop_instance_uid",
            "reason",
            "review",
            "review_cues",
            *(f"vertebra_{f}" for f in VERTEBRA_TEXT_FIELDS),
        )
        columns = (
            dict.fromkeys((*TEXT_COLUMNS, *CLINICAL_TEXT_COLUMNS), str)
            | {f"{level}_{name}": str for level, _ in layout for name in text_fields}
            | {"lumbar_vertebrae_reason": str}
        )
        table = pd.read_csv(io.StringIO(text), dtype=columns, keep_default_na=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise BodycompError(f"{path}: cannot read the earlier results ({str(error).splitlines()[0]})") from None
    expected = result_columns(layout)
    if list(table.columns) != expected:
        raise BodycompError(
            f"{path}: its columns differ from this run's (other levels or models?); "
            "resume with the same -L and models, or write to a new folder"
        )
    rows = []
    for record in table.to_dict("records"):
        for column, value in record.items():
            if isinstance(value, float) and math.isnan(value):
                record[column] = None if column in columns else value
            elif column.endswith(INTEGER_FIELDS):
                record[column] = int(value)
        rows.append(record)
    return rows


def read_qc(path: Path) -> list[dict[str, str]]:
    """The rows of a qc.csv (or a rank's part of one); a row torn by a crash is left out."""
    import pandas as pd

    if not path.is_file():
        return []
    text = read_complete_text(path)
    if not text:
        return []
    table = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    return [row for row in table.to_dict("records") if set(QC_COLUMNS) <= set(row)]

"""patients.csv: every measure of each patient with more than one study, per study date, and its change per
year between consecutive studies (one series per study: the one studies.csv recommends)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from pathlib import Path

from bodycomp_cli.estimate.indices import number_or_none
from bodycomp_cli.estimate.report import csv_text
from bodycomp_cli.estimate.studies import choose_series
from bodycomp_cli.io.atomic import atomic_write_text

PATIENT_COLUMNS = (
    "patient_id",
    "measure",
    "study_date",
    "study_instance_uid",
    "series",
    "value",
    "years_since_previous",
    "change_per_year",
)
# results.csv columns that are not measures (identifiers, positions, text)
_NOT_MEASURES = ("slice_index", "z_mm", "zero_crossings", "n_slices", "slice_thickness_mm", "kvp", "age_years")


def study_date(text: object) -> date | None:
    """A DICOM StudyDate (YYYYMMDD) as a date; None when blank or not a date."""
    text = str(text or "")
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:8])) if len(text) == 8 else None
    except ValueError:
        return None


def measure_columns(columns: Sequence[str]) -> list[str]:
    """The numeric measure columns of results.csv: areas, HU, quality, indices, weight and BMI."""
    wanted = ("_cm2", "_hu", "_share", "_cm2_m2", "_ratio", "weight_kg", "bmi_kg_m2", "height_m")
    return [c for c in columns if c.endswith(wanted) and not c.endswith(_NOT_MEASURES)]


def patient_rows(rows: Sequence[dict[str, object]], columns: Sequence[str], levels: Sequence[str]) -> list[dict]:
    """Long table: per patient (> 1 dated study), measure and study date, the value and its change per year
    since the patient's previous study (blank for the first study or when either value is blank)."""
    studies: dict[str, dict[str, list[dict[str, object]]]] = {}
    for row in rows:
        patient, study = str(row.get("patient_id") or ""), str(row.get("study_instance_uid") or "")
        if patient and study and study_date(row.get("study_date")) is not None:
            studies.setdefault(patient, {}).setdefault(study, []).append(row)
    out: list[dict[str, object]] = []
    for patient, by_study in studies.items():
        chosen = [choose_series(series_rows, levels)[0] or series_rows[0] for series_rows in by_study.values()]
        chosen.sort(key=lambda row: study_date(row["study_date"]))  # type: ignore[arg-type, return-value]
        if len(chosen) < 2:
            continue
        for measure in measure_columns(columns):
            previous: tuple[date, float | None] | None = None
            for row in chosen:
                when = study_date(row["study_date"])
                assert when is not None
                value = number_or_none(row.get(measure))
                years = change = None
                if previous is not None:
                    years = (when - previous[0]).days / 365.25
                    if years > 0 and value is not None and previous[1] is not None:
                        change = (value - previous[1]) / years
                out.append(
                    {
                        "patient_id": patient,
                        "measure": measure,
                        "study_date": row["study_date"],
                        "study_instance_uid": row["study_instance_uid"],
                        "series": row["series"],
                        "value": value,
                        "years_since_previous": years,
                        "change_per_year": change,
                    }
                )
                previous = (when, value)
    return out


def write_patients(output_dir: Path, table: Sequence[dict[str, object]]) -> None:
    atomic_write_text(Path(output_dir) / "patients.csv", csv_text(table, PATIENT_COLUMNS))

"""Per-series patient facts (sex, age, height, weight, BMI) from the DICOM header, overridden by the manifest.

An implausible value is left blank and the reason goes into the row's `facts_note`, so that no index is
ever computed from it (a height of 175 in a metres field would give an SMI ten thousand times too small).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from pathlib import Path

FACT_COLUMNS = (
    "sex",
    "age_years",
    "height_m",
    "weight_kg",
    "bmi_kg_m2",
    "height_source",
    "weight_source",
    "facts_note",
)
# Manifest columns that override the header (height in metres or centimetres, not both).
MANIFEST_FACT_COLUMNS = ("sex", "age", "height_m", "height_cm", "weight_kg")
HEIGHT_RANGE_M = (0.5, 2.5)  # outside: implausible for an adult CT patient (0, 175 in a metres field, ...)
WEIGHT_RANGE_KG = (20.0, 350.0)
AGE_RANGE_YEARS = (0.0, 120.0)
SEXES = {"M": "M", "F": "F", "MALE": "M", "FEMALE": "F"}


def dicom_fact_values(path: Path | None) -> dict[str, str]:
    """PatientSex, PatientAge, PatientBirthDate, StudyDate, PatientSize, PatientWeight as text ("" when absent)."""
    keywords = ("PatientSex", "PatientAge", "PatientBirthDate", "StudyDate", "PatientSize", "PatientWeight")
    if path is None:
        return dict.fromkeys(keywords, "")
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(keywords))
    except Exception:  # pydicom raises many types for a corrupt header; the facts are then missing
        return dict.fromkeys(keywords, "")
    return {keyword: str(ds.get(keyword) or "").strip() for keyword in keywords}


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if value == value else None  # NaN is missing


def _dicom_age(values: Mapping[str, str]) -> tuple[float | None, str]:
    """Age in years from PatientAge (`065Y`, `030M`, `012W`, `100D`), else from PatientBirthDate and StudyDate."""
    text = values.get("PatientAge", "")
    if len(text) == 4 and text[:3].isdigit() and text[3] in "DWMY":
        per_year = {"D": 365.25, "W": 365.25 / 7, "M": 12.0, "Y": 1.0}[text[3]]
        return int(text[:3]) / per_year, ""
    if text:
        return None, f"PatientAge `{text}` is not nnnD/W/M/Y"
    birth, study = values.get("PatientBirthDate", ""), values.get("StudyDate", "")
    if not birth or not study:
        return None, ""
    try:
        born = date(int(birth[:4]), int(birth[4:6]), int(birth[6:8]))
        seen = date(int(study[:4]), int(study[4:6]), int(study[6:8]))
    except ValueError:
        return None, f"PatientBirthDate `{birth}` or StudyDate `{study}` is not a date"
    return (seen - born).days / 365.25, ""


def _checked(name: str, value: float | None, bounds: tuple[float, float], unit: str, notes: list[str]) -> float | None:
    if value is None:
        return None
    if not bounds[0] <= value <= bounds[1]:
        notes.append(f"{name} {value:g} {unit} implausible (outside {bounds[0]:g}-{bounds[1]:g}), left blank")
        return None
    return value


def patient_facts(dicom_values: Mapping[str, str], manifest: Mapping[str, str]) -> dict[str, object]:
    """The FACT_COLUMNS of one series: the manifest's non-blank cells win over the header.

    PatientSize is in metres and PatientWeight in kg (DICOM PS3.3 C.7.2.2). Example:
    patient_facts({"PatientSize": "1.75", "PatientWeight": "70"}, {})["bmi_kg_m2"]  # 22.857...
    """
    notes: list[str] = []
    sex_text = (manifest.get("sex") or dicom_values.get("PatientSex") or "").strip().upper()
    sex = SEXES.get(sex_text)
    if sex_text and sex is None:
        notes.append(f"sex `{sex_text}` is neither M nor F, left blank")

    if manifest.get("age"):
        age = _number(manifest["age"])
        if age is None:
            notes.append(f"manifest age `{manifest['age']}` is not a number")
    else:
        age, note = _dicom_age(dicom_values)
        notes += [note] if note else []
    age = _checked("age", age, AGE_RANGE_YEARS, "years", notes)

    height, height_source = _height(dicom_values, manifest, notes)
    if manifest.get("weight_kg"):
        weight, weight_source = _number(manifest["weight_kg"]), "manifest"
    else:
        weight, weight_source = _number(dicom_values.get("PatientWeight", "")), "dicom"
    weight = _checked("weight", weight, WEIGHT_RANGE_KG, "kg", notes)
    bmi = weight / height**2 if weight is not None and height is not None else None
    return {
        "sex": sex or "",
        "age_years": age,
        "height_m": height,
        "weight_kg": weight,
        "bmi_kg_m2": bmi,
        "height_source": height_source if height is not None else "missing",
        "weight_source": weight_source if weight is not None else "missing",
        "facts_note": "; ".join(notes),
    }


def _height(dicom_values: Mapping[str, str], manifest: Mapping[str, str], notes: list[str]) -> tuple[float | None, str]:
    if manifest.get("height_m") and manifest.get("height_cm"):
        notes.append("manifest gives both height_m and height_cm; height left blank")
        return None, "manifest"
    if manifest.get("height_m"):
        value, name = _number(manifest["height_m"]), "manifest height_m"
        source = "manifest"
    elif manifest.get("height_cm"):
        value = _number(manifest["height_cm"])
        value, name, source = (None if value is None else value / 100.0), "manifest height_cm/100", "manifest"
    else:
        value, name, source = _number(dicom_values.get("PatientSize", "")), "PatientSize", "dicom"
    return _checked(name, value, HEIGHT_RANGE_M, "m", notes), source

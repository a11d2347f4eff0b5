"""The clinical columns of a results row: patient facts, per-level muscle quality and indices, cut-off flags."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bodycomp_cli.estimate.cutoffs import CUTOFF_COLUMNS, cutoff_flags
from bodycomp_cli.estimate.indices import INDEX_FIELDS, level_indices
from bodycomp_cli.estimate.muscle_quality import QUALITY_FIELDS
from bodycomp_cli.estimate.patient_facts import FACT_COLUMNS, dicom_fact_values, patient_facts
from bodycomp_cli.io.dicom_tree import DicomSeries

# Read back from results.csv as text (a flag "1" stays "1", not 1.0).
CLINICAL_TEXT_COLUMNS = ("sex", "height_source", "weight_source", "facts_note", *CUTOFF_COLUMNS)


def clinical_columns(levels: Sequence[str]) -> list[str]:
    """The columns after the per-level measurements: hu_ranges, the facts, per level quality and indices, flags."""
    per_level = [f"{level}_{name}" for level in levels for name in (*QUALITY_FIELDS, *INDEX_FIELDS)]
    return ["hu_ranges", *FACT_COLUMNS, *per_level, *CUTOFF_COLUMNS]


def clinical_row(
    row: Mapping[str, object],
    manifest_facts: Sequence[tuple[str, str]],
    dicom: DicomSeries | None,
    levels: Sequence[str],
    hu_ranges: str,
    cutoffs: str,
) -> dict[str, object]:
    """hu_ranges, the patient facts, each level's indices and the cut-off flags for one series' row."""
    header = dicom_fact_values(dicom.paths[0] if dicom is not None and dicom.paths else None)
    facts = patient_facts(header, {name: value for name, value in manifest_facts if value})
    out: dict[str, object] = {"hu_ranges": hu_ranges, **facts}
    height = facts["height_m"]
    for level in levels:
        out.update(level_indices(row, level, height if isinstance(height, float) else None))
    return out | cutoff_flags(cutoffs, {**row, **out}, facts)

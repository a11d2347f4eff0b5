"""studies.csv: one row per DICOM study, naming the series to use and the rule that chose it.

A study often holds several reconstructions of one scan (thin and thick slices, soft-tissue and bone
kernels). The original toolkit kept, per study, the series whose slice-selection curve crossed zero
exactly once at every level and, of those, the one with the thickest slices (thick slices are the
less noisy soft-tissue reconstructions its models were built on). The same rule is used here; ties go
to the series with more slices, then to the first series id.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

from bodycomp_cli.io.atomic import atomic_write_text

STUDY_COLUMNS = (
    "study_instance_uid",
    "patient_id",
    "accession_number",
    "study_date",
    "series_estimated",
    "series_failed_qc",
    "recommended_series",
    "recommended_series_instance_uid",
    "rule",
)


def _thickness(row: dict[str, object]) -> float:
    try:
        value = float(row.get("slice_thickness_mm") or "nan")
    except (TypeError, ValueError):
        return -math.inf
    return -math.inf if math.isnan(value) else value


def _slices(row: dict[str, object]) -> int:
    value = row.get("n_slices")
    return int(value) if isinstance(value, (int, float)) and not math.isnan(value) else 0


def choose_series(rows: Sequence[dict[str, object]], levels: Sequence[str]) -> tuple[dict[str, object] | None, str]:
    """The recommended row among one study's results rows, and the rule that chose it, in words."""
    if not rows:
        return None, "no series of the study was estimated"
    single = [row for row in rows if all(row.get(f"{level}_zero_crossings") == 1 for level in levels)]
    if not single:
        return None, f"none of its {len(rows)} estimated series has one zero crossing at every level"
    best = sorted(single, key=lambda row: (-_thickness(row), -_slices(row), str(row["series"])))[0]
    thickness = _thickness(best)
    shown = f"{thickness:g} mm" if thickness != -math.inf else "unknown"
    return best, (
        f"one zero crossing at every level ({len(single)} of {len(rows)} series); then the thickest slices ({shown})"
    )


def study_table(
    rows: Sequence[dict[str, object]], qc_rows: Sequence[dict[str, str]], levels: Sequence[str]
) -> list[dict[str, object]]:
    """studies.csv rows: every study with a StudyInstanceUID among the estimated or skipped series."""
    studies: dict[str, dict[str, list]] = {}
    for row in rows:
        uid = str(row.get("study_instance_uid") or "")
        if uid and uid != "nan":
            studies.setdefault(uid, {"rows": [], "failed": []})["rows"].append(row)
    for failure in qc_rows:
        uid = str(failure.get("study_instance_uid") or "")
        if uid and uid != "nan":
            studies.setdefault(uid, {"rows": [], "failed": []})["failed"].append(failure)
    table = []
    for uid, members in studies.items():
        best, rule = choose_series(members["rows"], levels)
        first = members["rows"][0] if members["rows"] else members["failed"][0]
        table.append(
            {
                "study_instance_uid": uid,
                "patient_id": first.get("patient_id", ""),
                "accession_number": first.get("accession_number", ""),
                "study_date": first.get("study_date", ""),
                "series_estimated": len(members["rows"]),
                "series_failed_qc": len(members["failed"]),
                "recommended_series": best["series"] if best else "",
                "recommended_series_instance_uid": best["series_instance_uid"] if best else "",
                "rule": rule,
            }
        )
    return table


def write_studies(output_dir: Path, table: Sequence[dict[str, object]]) -> None:
    import pandas as pd

    buffer = io.StringIO()
    pd.DataFrame(list(table), columns=list(STUDY_COLUMNS)).to_csv(buffer, index=False)
    atomic_write_text(output_dir / "studies.csv", buffer.getvalue())

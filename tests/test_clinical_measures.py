"""Patient facts, indices, muscle quality, --hu-ranges and cut-off flags (issue 23): exact values on hand-made
rows and arrays, boundary values included, and the columns `estimate` writes from DICOM headers and a manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from dicom_export import write_ct_series
from test_estimate_cli import FakeModels, write_series

from bodycomp_cli.estimate.cutoffs import CITATIONS, cutoff_flags, low_attenuation, sarcopenia
from bodycomp_cli.estimate.follow_up import patient_rows
from bodycomp_cli.estimate.indices import level_indices
from bodycomp_cli.estimate.inputs import collect_inputs
from bodycomp_cli.estimate.muscle_quality import gate_labels, muscle_quality
from bodycomp_cli.estimate.patient_facts import patient_facts
from bodycomp_cli.estimate.qc import QcSettings
from bodycomp_cli.estimate.run import EstimateOptions, run_estimate

CLASSES = ["background", "muscle", "subcutaneous_fat", "visceral_fat"]


# --- patient facts -----------------------------------------------------------------------------------------


def test_facts_from_the_dicom_header() -> None:
    header = {"PatientSex": "F", "PatientAge": "064Y", "PatientSize": "1.60", "PatientWeight": "64"}
    facts = patient_facts(header, {})
    assert facts["sex"] == "F" and facts["age_years"] == 64.0
    assert facts["height_m"] == 1.6 and facts["weight_kg"] == 64.0
    assert facts["bmi_kg_m2"] == pytest.approx(25.0)
    assert facts["height_source"] == "dicom" and facts["weight_source"] == "dicom" and facts["facts_note"] == ""


def test_age_from_birth_and_study_dates_and_from_months() -> None:
    assert patient_facts({"PatientBirthDate": "19600101", "StudyDate": "20200101"}, {})["age_years"] == pytest.approx(
        21915 / 365.25  # 60 years of days
    )
    assert patient_facts({"PatientAge": "018M"}, {})["age_years"] == 1.5


def test_manifest_overrides_the_header() -> None:
    header = {"PatientSex": "M", "PatientSize": "1.80", "PatientWeight": "90"}
    facts = patient_facts(header, {"sex": "F", "height_cm": "170", "weight_kg": "68"})
    assert facts["sex"] == "F" and facts["height_m"] == 1.7 and facts["weight_kg"] == 68.0
    assert facts["height_source"] == "manifest" and facts["weight_source"] == "manifest"


@pytest.mark.parametrize(
    ("header", "manifest", "reason"),
    [
        ({"PatientSize": "0"}, {}, "PatientSize 0 m implausible"),
        ({"PatientSize": "2.51"}, {}, "PatientSize 2.51 m implausible"),
        ({}, {"height_m": "175"}, "manifest height_m 175 m implausible"),
        ({}, {"height_m": "1.7", "height_cm": "170"}, "both height_m and height_cm"),
    ],
)
def test_implausible_height_is_blank_with_its_reason(header, manifest, reason) -> None:
    facts = patient_facts({"PatientWeight": "70", **header}, manifest)
    assert facts["height_m"] is None and facts["bmi_kg_m2"] is None
    assert facts["height_source"] == "missing"
    assert reason in facts["facts_note"]


def test_boundary_heights_are_kept_and_missing_facts_are_blank() -> None:
    assert patient_facts({"PatientSize": "2.5"}, {})["height_m"] == 2.5
    facts = patient_facts({}, {})
    assert facts["sex"] == "" and facts["age_years"] is None and facts["height_source"] == "missing"
    assert patient_facts({"PatientSex": "O"}, {})["facts_note"] == "sex `O` is neither M nor F, left blank"
    assert "PatientAge `65` is not nnnD/W/M/Y" in patient_facts({"PatientAge": "65"}, {})["facts_note"]


# --- indices -------------------------------------------------------------------------------------------------


def test_indices_exact() -> None:
    row = {"L3_muscle_area_cm2": 160.0, "L3_subcutaneous_fat_area_cm2": 200.0, "L3_visceral_fat_area_cm2": 100.0}
    out = level_indices(row, "L3", 2.0)
    assert out == {
        "L3_smi_cm2_m2": 40.0,
        "L3_sat_index_cm2_m2": 50.0,
        "L3_vat_index_cm2_m2": 25.0,
        "L3_total_fat_index_cm2_m2": 75.0,
        "L3_vat_sat_ratio": 0.5,
    }


def test_indices_without_height_or_sat_are_blank() -> None:
    row = {"L3_muscle_area_cm2": 160.0, "L3_subcutaneous_fat_area_cm2": 0.0, "L3_visceral_fat_area_cm2": float("nan")}
    out = level_indices(row, "L3", None)
    assert out["L3_smi_cm2_m2"] is None and out["L3_vat_sat_ratio"] is None and out["L3_total_fat_index_cm2_m2"] is None


# --- cut-offs ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("smi", "sex", "bmi", "flag"),
    [
        (42.99, "M", 24.99, "1"),
        (43.0, "M", 24.99, "0"),  # strictly below 43
        (52.99, "M", 25.0, "1"),  # BMI 25 counts as >= 25
        (53.0, "M", 25.0, "0"),
        (40.99, "F", None, "1"),  # women: BMI not needed
        (41.0, "F", 30.0, "0"),
    ],
)
def test_martin2013_sarcopenia_boundaries(smi, sex, bmi, flag) -> None:
    assert sarcopenia("martin2013", smi, sex, bmi)[0] == flag


@pytest.mark.parametrize(
    ("smi", "sex", "flag"), [(52.4, "M", "1"), (52.41, "M", "0"), (38.5, "F", "1"), (38.51, "F", "0")]
)
def test_prado2008_boundaries(smi, sex, flag) -> None:
    assert sarcopenia("prado2008", smi, sex, None)[0] == flag  # <=, and BMI not needed


@pytest.mark.parametrize(
    ("hu", "bmi", "flag"), [(40.99, 24.9, "1"), (41.0, 24.9, "0"), (32.99, 25.0, "1"), (33.0, 25.0, "0")]
)
def test_martin2013_low_attenuation_boundaries(hu, bmi, flag) -> None:
    assert low_attenuation("martin2013", hu, bmi)[0] == flag


def test_missing_input_gives_a_blank_flag_never_false() -> None:
    assert sarcopenia("martin2013", 30.0, "M", None) == ("", "missing BMI")
    assert sarcopenia("prado2008", None, "F", 20.0) == ("", "missing SMI")
    assert sarcopenia("martin2013", 30.0, "", 20.0) == ("", "missing sex")
    assert low_attenuation("martin2013", 20.0, None) == ("", "missing BMI")
    assert low_attenuation("prado2008", 20.0, 20.0)[0] == ""
    assert sarcopenia("none", 20.0, "M", 20.0)[0] == ""


def test_cutoff_flags_of_a_row_record_the_citation() -> None:
    row = {"L3_muscle_area_cm2": 100.0, "L3_smi_cm2_m2": 39.0, "L3_muscle_mean_hu": 45.0}
    out = cutoff_flags("martin2013", row, {"sex": "F", "bmi_kg_m2": 22.0})
    assert out["cutoffs"] == "martin2013" and out["cutoffs_citation"] == CITATIONS["martin2013"]
    assert "J Clin Oncol 2013;31:1539" in out["cutoffs_citation"]
    assert out["sarcopenia"] == "1" and out["low_muscle_attenuation"] == "0"
    no_l3 = cutoff_flags("prado2008", {"T12_muscle_area_cm2": 1.0}, {"sex": "F", "bmi_kg_m2": 22.0})
    assert no_l3["sarcopenia"] == "" and "L3 is not among the measured levels" in no_l3["sarcopenia_note"]


# --- muscle quality and HU ranges ------------------------------------------------------------------------------


def quality_slice() -> tuple[np.ndarray, np.ndarray]:
    """Muscle label over 10 pixels each of -100 (IMAT), -29, 29 (LAMA), 30, 150 (NAMA) and 151 (neither)."""
    hu = np.full((6, 10), -1000, dtype=np.int16)
    labels = np.ones((6, 10), dtype=np.uint8)
    for row, value in enumerate((-100, -29, 29, 30, 150, 151)):
        hu[row] = value
    return hu, labels


def test_lama_nama_imat_exact() -> None:
    hu, labels = quality_slice()
    quality = muscle_quality(hu, labels, CLASSES, (1.0, 2.0))  # 0.02 cm2 a pixel
    assert quality["lama_area_cm2"] == pytest.approx(20 * 0.02)
    assert quality["nama_area_cm2"] == pytest.approx(20 * 0.02)
    assert quality["imat_area_cm2"] == pytest.approx(10 * 0.02)
    assert quality["lama_share"] == 0.5 and quality["nama_share"] == 0.5


def test_quality_over_several_slices_is_the_mean_and_blank_without_muscle() -> None:
    hu, labels = quality_slice()
    two = muscle_quality(np.stack([hu, hu]), np.stack([labels, labels * 0]), CLASSES, (1.0, 1.0))
    assert two["lama_area_cm2"] == pytest.approx(10 * 0.01)
    assert np.isnan(muscle_quality(hu, labels, ["background", "fat"], (1.0, 1.0))["imat_area_cm2"])


def test_alberta_gating_keeps_only_pixels_in_each_tissue_range() -> None:
    hu = np.array([[-191, -190, -30, -29, 150, 151]], dtype=np.int16)
    muscle = np.ones_like(hu, dtype=np.uint8)
    assert gate_labels(hu, muscle, CLASSES, "alberta").tolist() == [[0, 0, 0, 1, 1, 0]]
    fat = np.full_like(muscle, 2)
    assert gate_labels(hu, fat, CLASSES, "alberta").tolist() == [[0, 2, 2, 0, 0, 0]]
    assert gate_labels(hu, fat, CLASSES, "none") is fat


# --- through estimate ----------------------------------------------------------------------------------------


def test_estimate_writes_facts_indices_and_flags_from_dicom_headers(tmp_path: Path) -> None:
    z = np.arange(24) * 4.0
    hu = np.full((24, 64, 64), -1000, dtype=np.int16)
    hu[:, 4:24, 4:54] = 40  # 1000 muscle pixels of 0.7 x 0.7 mm
    hu[:, 30:40, 4:54] = -100  # 500 fat pixels
    hu[:, 0, 0] = np.rint(z)
    folder = tmp_path / "tree" / "P1"
    write_ct_series(folder, hu, z, pixel_spacing=(0.7, 0.7))
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        ds.PatientSex, ds.PatientAge, ds.PatientSize, ds.PatientWeight = "M", "070Y", "0.5", "80"
        ds.save_as(path)
    out = tmp_path / "out"
    options = EstimateOptions(show_progress=False, previews=False, qc=QcSettings(min_matrix=64))
    run_estimate(collect_inputs([tmp_path / "tree"]), FakeModels(), out, options)
    row = pd.read_csv(out / "results.csv", dtype={"sarcopenia": str}, keep_default_na=False).iloc[0]
    area = 1000 * 0.49 / 100
    assert float(row["L3_muscle_area_cm2"]) == pytest.approx(area)
    assert row["sex"] == "M" and float(row["age_years"]) == 70.0 and row["height_source"] == "dicom"
    assert float(row["L3_smi_cm2_m2"]) == pytest.approx(area / 0.25)
    assert float(row["bmi_kg_m2"]) == pytest.approx(320.0)  # 80 kg at 0.5 m: plausible each, so kept
    assert row["hu_ranges"] == "none" and row["cutoffs"] == "martin2013"
    assert row["sarcopenia"] == "1"  # 19.6 cm2/m2 < 53 (BMI >= 25)
    assert float(row["L3_nama_area_cm2"]) == pytest.approx(area) and float(row["L3_imat_area_cm2"]) == 0.0
    assert (out / "patients.csv").read_text().startswith("patient_id,measure,study_date")  # one study: no rows
    page = (out / "report.html").read_text()
    assert (out / "cohort" / "smi_by_sex.png").stat().st_size > 0 and 'src="cohort/smi_by_sex.png"' in page
    assert "Cut-offs: martin2013 (Martin L et al." in page and "<tr><td>sarcopenia</td><td>1</td><td>0</td>" in page


def test_manifest_facts_and_an_implausible_height_through_estimate(tmp_path: Path) -> None:
    write_series(tmp_path / "s1.npz")
    manifest = tmp_path / "cohort.csv"
    manifest.write_text("series,path,sex,height_m,weight_kg\ns1,s1.npz,F,175,60\n")
    out = tmp_path / "out"
    options = EstimateOptions(show_progress=False, previews=False, hu_ranges="alberta", cutoffs="prado2008")
    run_estimate(collect_inputs([manifest]), FakeModels(), out, options)
    row = pd.read_csv(out / "results.csv", keep_default_na=False).iloc[0]
    assert row["height_m"] == "" and row["L3_smi_cm2_m2"] == "" and row["height_source"] == "missing"
    assert "manifest height_m 175 m implausible" in row["facts_note"]
    assert row["sarcopenia"] == "" and row["sarcopenia_note"] == "missing SMI"
    assert row["hu_ranges"] == "alberta" and row["weight_kg"] == 60.0


# --- follow-up -----------------------------------------------------------------------------------------------


def follow_up_row(series: str, patient: str, study: str, when: str, muscle: float | None) -> dict[str, object]:
    return {
        "series": series,
        "patient_id": patient,
        "study_instance_uid": study,
        "study_date": when,
        "n_slices": 40,
        "slice_thickness_mm": 2.5,
        "L3_zero_crossings": 1,
        "L3_muscle_area_cm2": muscle,
        "L3_z_mm": 10.0,
    }


def test_patients_table_gives_change_per_year_between_consecutive_studies() -> None:
    rows = [
        follow_up_row("b", "P1", "S2", "20210101", 140.0),
        follow_up_row("a", "P1", "S1", "20200101", 150.0),
        follow_up_row("c", "P1", "S3", "20210701", None),
        follow_up_row("d", "P2", "S4", "20200101", 100.0),  # one study: not followed up
    ]
    table = patient_rows(rows, ["series", "L3_z_mm", "L3_muscle_area_cm2"], ["L3"])
    assert [(r["series"], r["measure"]) for r in table] == [("a", "L3_muscle_area_cm2")] * 1 + [
        ("b", "L3_muscle_area_cm2"),
        ("c", "L3_muscle_area_cm2"),
    ]
    first, second, third = table
    assert first["change_per_year"] is None and first["years_since_previous"] is None
    assert second["years_since_previous"] == pytest.approx(366 / 365.25)
    assert second["change_per_year"] == pytest.approx(-10.0 / (366 / 365.25))
    assert third["value"] is None and third["change_per_year"] is None  # a blank value gives a blank change

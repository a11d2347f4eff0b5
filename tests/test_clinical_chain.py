"""Issue 23's "done when", on a tiny DICOM tree whose headers carry sex, age, height and weight: `estimate`
writes results.csv with the indices, flags and their sources, the SR files, patients.csv, volumes.csv and the
cohort pictures; and a bad --hu-ranges, --cutoffs or --volume is refused with exit 2 and one line."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pydicom
import pytest
from conftest import invoke
from dicom_export import write_ct_series
from test_bad_inputs import refused
from test_ranges import SpineModels

from bodycomp_cli.estimate.inputs import collect_inputs
from bodycomp_cli.estimate.qc import QcSettings
from bodycomp_cli.estimate.run import EstimateOptions, run_estimate

# (patient, study date, sex, height m, weight kg, muscle rows): P1 is seen twice, and loses muscle
STUDIES = [
    ("P1", "20200115", "M", "1.80", "81", 20),
    ("P1", "20210115", "M", "1.80", "75", 16),
    ("P2", "20200601", "F", "1.60", "50", 12),
]


def write_tree(root: Path) -> None:
    z = np.arange(30) * 4.0  # as test_ranges: L2 (89 mm) and L4 (13 mm) well inside
    for number, (patient, when, sex, height, weight, muscle_rows) in enumerate(STUDIES, start=1):
        hu = np.full((len(z), 64, 64), -1000, dtype=np.int16)
        hu[:, 4 : 4 + muscle_rows, 4:54] = 40  # 50 muscle pixels a row, of 0.7 x 0.7 mm
        hu[:, 30:40, 4:54] = -100
        hu[:, 0, 0] = np.rint(z)  # where the fake selection model reads z
        folder = root / patient / when
        write_ct_series(folder, hu, z, patient_id=patient, series_number=number)
        for path in folder.iterdir():
            ds = pydicom.dcmread(path)
            ds.StudyDate, ds.PatientSex, ds.PatientAge = when, sex, "060Y"
            ds.PatientSize, ds.PatientWeight = height, weight
            ds.save_as(path)


def test_estimate_on_a_dicom_tree_writes_the_whole_clinical_report(tmp_path: Path) -> None:
    import highdicom as hd

    write_tree(tmp_path / "tree")
    out = tmp_path / "out"
    options = EstimateOptions(
        show_progress=False,
        previews=False,
        qc=QcSettings(min_matrix=64),
        dicom_seg=True,
        dicom_sr=True,
        per_vertebra=True,
        volumes=(("L2", "L4"),),
    )
    run_estimate(collect_inputs([tmp_path / "tree"]), SpineModels(), out, options)
    results = pd.read_csv(out / "results.csv", keep_default_na=False, dtype=str).set_index("series")
    assert list(results.index) == ["tree/P1/20200115", "tree/P1/20210115", "tree/P2/20200601"]
    pixel_cm2 = 0.49 / 100
    for (patient, _, sex, height, weight, muscle_rows), (series, row) in zip(STUDIES, results.iterrows(), strict=True):
        area = muscle_rows * 50 * pixel_cm2
        assert row["sex"] == sex and row["height_source"] == "dicom" and row["weight_source"] == "dicom"
        assert float(row["L3_muscle_area_cm2"]) == pytest.approx(area)
        assert float(row["L3_smi_cm2_m2"]) == pytest.approx(area / float(height) ** 2)
        assert float(row["bmi_kg_m2"]) == pytest.approx(float(weight) / float(height) ** 2)
        assert row["cutoffs"] == "martin2013" and row["sarcopenia"] == "1"  # tiny phantoms: far under any cut-off
        assert float(row["L3_vertebra_muscle_area_cm2"]) == pytest.approx(area)  # the same on every slice
        sr = hd.sr.srread(out / "dicom_sr" / f"{series.replace('/', '_')}.dcm")
        assert sr.PatientID == patient
        indices = [g for g in sr.content.get_image_measurement_groups() if g.tracking_identifier == "L3 indices"][0]
        smi = [m for m in indices.get_measurements() if m.name.value == "smi"][0]
        assert smi.value == pytest.approx(float(row["L3_smi_cm2_m2"])) and smi.unit.value == "cm2/m2"
    patients = pd.read_csv(out / "patients.csv", dtype=str, keep_default_na=False)
    smi = patients[patients["measure"] == "L3_smi_cm2_m2"]
    assert list(smi["patient_id"]) == ["P1", "P1"] and smi["change_per_year"].iloc[0] == ""
    change = (16 - 20) * 50 * pixel_cm2 / 1.8**2 / (366 / 365.25)  # 2020 is a leap year
    assert float(smi["change_per_year"].iloc[1]) == pytest.approx(change)
    volumes = pd.read_csv(out / "volumes.csv")
    assert list(volumes["volume"]) == ["L2:L4"] * 3 and list(volumes["n_slices"]) == [20] * 3
    assert volumes["muscle_cm3"].iloc[2] == pytest.approx(12 * 50 * pixel_cm2 * 20 * 0.4)
    page = (out / "report.html").read_text()
    for picture in ("cohort/smi_by_sex.png", "cohort/over_time.png"):
        assert f'src="{picture}"' in page
        assert iio.imread(out / picture).shape[2] in (3, 4)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--hu-ranges", "albert", "--hu-ranges 'albert': choose one of none, alberta"),
        ("--cutoffs", "martin", "--cutoffs 'martin': choose one of martin2013, prado2008, none"),
        ("--volume", "L1-L5", "--volume 'L1-L5': give two levels as FROM:TO, e.g. L1:L5"),
        ("--volume", "L3:L3", "--volume 'L3:L3': the two levels are the same"),
    ],
)
def test_a_bad_clinical_option_is_refused_with_one_line(tmp_path: Path, option, value, message) -> None:
    (tmp_path / "models").mkdir()
    args = ["estimate", tmp_path / "models", "--select-model", tmp_path / "models", "--seg-model"]
    refused(tmp_path, [*args, tmp_path / "models", "-o", tmp_path / "out", option, value], message)


@pytest.fixture
def spine_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """`bodycomp estimate` with SpineModels in place of the loaded runs (the CLI imports the loader when run)."""
    import bodycomp_cli.estimate.models as loader

    monkeypatch.setattr(loader, "load_estimator_models", lambda *args, **kwargs: SpineModels())


def test_the_cli_passes_the_clinical_options_through(tmp_path: Path, spine_models) -> None:
    write_tree(tmp_path / "tree")
    out = tmp_path / "out"
    args = ["estimate", tmp_path / "tree", "--select-model", tmp_path, "--seg-model", tmp_path, "-o", out]
    options = ["--min-matrix", "64", "--no-previews", "--workers", "0", "--cutoffs", "prado2008"]
    clinical = ["--hu-ranges", "alberta", "--per-vertebra", "--volume", "L2:L4,L3:L4", "--dicom-sr"]
    result = invoke([*args, *options, *clinical])
    assert result.exit_code == 0, (result.stderr or "") + result.output
    results = pd.read_csv(out / "results.csv", keep_default_na=False)
    assert set(results["hu_ranges"]) == {"alberta"} and set(results["cutoffs"]) == {"prado2008"}
    assert list(results["L3_vertebra_n_slices"]) == [10] * 3  # L2's and L4's midpoints, as in test_ranges
    volumes = pd.read_csv(out / "volumes.csv")
    assert list(volumes["volume"]) == ["L2:L4", "L3:L4"] * 3 and set(volumes["hu_ranges"]) == {"alberta"}
    assert sorted(path.name for path in (out / "dicom_sr").iterdir()) == [
        "tree_P1_20200115.dcm",
        "tree_P1_20210115.dcm",
        "tree_P2_20200601.dcm",
    ]


def test_a_volume_level_the_run_does_not_estimate_is_refused(tmp_path: Path, spine_models) -> None:
    write_tree(tmp_path / "tree")
    args = ["estimate", tmp_path / "tree", "--select-model", tmp_path, "--seg-model", tmp_path]
    message = "--volume L1:L5: level L1 is not estimated (levels: L2, L3, L4); add it with -L"
    refused(tmp_path, [*args, "-o", tmp_path / "out", "--volume", "L1:L5", "--min-matrix", "64"], message)

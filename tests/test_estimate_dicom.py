"""`estimate` on PACS exports: a DICOM tree in, identifiers, QC reasons, studies, edge flags out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dicom_export import AXIAL_PRIMARY, body_phantom, write_ct_series
from pydicom.uid import JPEGLosslessSV1, generate_uid
from test_estimate_cli import FakeModels

from bodycomp_cli.estimate.field_of_view import tissues_touching_edge
from bodycomp_cli.estimate.inputs import collect_inputs
from bodycomp_cli.estimate.qc import QcSettings
from bodycomp_cli.estimate.run import EstimateOptions, run_estimate
from bodycomp_cli.io.dicom_tree import IDENTIFIER_COLUMNS

QC_64 = QcSettings(min_matrix=64)


def marked_phantom(z_mm: np.ndarray, seed: int = 0) -> np.ndarray:
    """body_phantom with each slice's z in pixel [0, 0], where FakeModels reads it."""
    hu = body_phantom(len(z_mm), seed=seed)
    hu[:, 0, 0] = np.rint(z_mm)
    return hu


def build_export(root: Path) -> dict[str, object]:
    """Two patients. P1: a study folder with a CT series, a JPEG-Lossless thin series, a localizer and a
    derived reformat. P2: one flat folder holding two CT series of one study (thick and thin slices)."""
    z5, z25 = np.arange(24) * 5.0, np.arange(40) * 2.5
    study1, study2 = generate_uid(), generate_uid()
    uids = {}
    uids["ct"] = write_ct_series(
        root / "P1" / "CT_ABD" / "ct_5mm",
        marked_phantom(z5),
        z5,
        patient_id="P1",
        study_uid=study1,
        slice_thickness=5.0,
    )
    uids["jpeg"] = write_ct_series(
        root / "P1" / "CT_ABD" / "ct_thin",
        marked_phantom(z25, 1),
        z25,
        patient_id="P1",
        study_uid=study1,
        series_number=2,
        slice_thickness=2.5,
        transfer_syntax=JPEGLosslessSV1,
    )
    localizer = ("ORIGINAL", "PRIMARY", "LOCALIZER")
    write_ct_series(
        root / "P1" / "CT_ABD" / "scout",
        body_phantom(1),
        [0.0],
        patient_id="P1",
        study_uid=study1,
        image_type=localizer,
    )
    write_ct_series(
        root / "P1" / "CT_ABD" / "reformat",
        marked_phantom(z5),
        z5,
        patient_id="P1",
        study_uid=study1,
        series_number=4,
        image_type=("DERIVED", "SECONDARY", "AXIAL"),
    )
    flat = root / "P2" / "export"
    write_ct_series(flat, marked_phantom(z5, 2), z5, patient_id="P2", study_uid=study2, series_number=7)
    write_ct_series(
        flat, marked_phantom(z25, 3), z25, patient_id="P2", study_uid=study2, series_number=8, slice_thickness=1.25
    )
    return {"study1": study1, "study2": study2, "uids": uids, "z5": z5}


def test_estimate_a_dicom_tree_with_fake_models(tmp_path: Path) -> None:
    export = build_export(tmp_path / "pacs")
    inputs = collect_inputs([tmp_path / "pacs"])
    assert [entry.series for entry in inputs] == [
        "pacs/P1/CT_ABD/ct_5mm",
        "pacs/P1/CT_ABD/ct_thin",
        "pacs/P1/CT_ABD/reformat",
        "pacs/P1/CT_ABD/scout",
        "pacs/P2/export_S7",
        "pacs/P2/export_S8",
    ]
    out = tmp_path / "out"
    summary = run_estimate(inputs, FakeModels(), out, EstimateOptions(previews=False, show_progress=False, qc=QC_64))
    assert len(summary.estimated) == 4
    results = pd.read_csv(out / "results.csv", dtype=str, keep_default_na=False).set_index("series")
    assert list(results.columns[:13]) == ["slice_selection", "n_slices", *IDENTIFIER_COLUMNS]
    ct = results.loc["pacs/P1/CT_ABD/ct_5mm"]
    assert ct["patient_id"] == "P1" and ct["study_instance_uid"] == export["study1"]
    assert ct["accession_number"] == "ACCP1" and ct["study_date"] == "20240131" and ct["kvp"] == "120.0"
    assert ct["slice_thickness_mm"] == "5.0" and ct["convolution_kernel"] == "B30f"
    assert ct["manufacturer"] == "PHANTOM" and ct["contrast_bolus_agent"] == "IODINE"
    # The chosen slice (z 50 mm, index 10) traced to its file.
    assert ct["L3_slice_index"] == "10" and ct["L3_sop_instance_uid"] == export["uids"]["ct"][10]
    thin = results.loc["pacs/P1/CT_ABD/ct_thin"]  # the JPEG Lossless series decodes and is measured
    assert thin["L3_sop_instance_uid"] == export["uids"]["jpeg"][20] and thin["n_slices"] == "40"
    assert ct["L3_muscle_touches_edge"] == "False"

    qc = pd.read_csv(out / "qc.csv", dtype=str, keep_default_na=False).set_index("series")
    assert qc.loc["pacs/P1/CT_ABD/scout", "reason"] == "ImageType ORIGINAL\\PRIMARY\\LOCALIZER is a localizer (scout)"
    assert qc.loc["pacs/P1/CT_ABD/reformat", "reason"].startswith("ImageType DERIVED\\SECONDARY\\AXIAL is a derived")
    assert set(qc["study_instance_uid"]) == {export["study1"]} and set(qc["patient_id"]) == {"P1"}

    studies = pd.read_csv(out / "studies.csv", dtype=str, keep_default_na=False).set_index("study_instance_uid")
    assert list(studies.index) == [export["study1"], export["study2"]]
    first = studies.loc[export["study1"]]
    assert first["recommended_series"] == "pacs/P1/CT_ABD/ct_5mm"
    assert first["rule"] == "one zero crossing at every level (2 of 2 series); then the thickest slices (5 mm)"
    assert (first["series_estimated"], first["series_failed_qc"]) == ("2", "2")
    assert studies.loc[export["study2"], "recommended_series"] == "pacs/P2/export_S7"


def test_npz_rows_leave_the_dicom_columns_blank(tmp_path: Path) -> None:
    from test_estimate_cli import write_series

    write_series(tmp_path / "s1.npz")
    run_estimate(
        collect_inputs([tmp_path / "s1.npz"]),
        FakeModels(),
        tmp_path / "out",
        EstimateOptions(previews=False, show_progress=False),
    )
    row = pd.read_csv(tmp_path / "out" / "results.csv", dtype=str, keep_default_na=False).iloc[0]
    assert all(row[column] == "" for column in [*IDENTIFIER_COLUMNS, "L3_sop_instance_uid"])
    assert pd.read_csv(tmp_path / "out" / "studies.csv").empty


def test_tissue_touching_the_border_or_the_reconstruction_circle() -> None:
    classes = ["background", "muscle", "subcutaneous_fat"]
    hu = np.full((32, 32), -1000, dtype=np.int16)
    labels = np.zeros((32, 32), dtype=np.uint8)
    labels[10:20, 10:20] = 1
    labels[12:14, 0:5] = 2  # fat cut by the image border
    assert tissues_touching_edge(hu, labels, classes) == {"muscle": False, "subcutaneous_fat": True}
    yy, xx = np.mgrid[:32, :32]
    circle = np.hypot(yy - 15.5, xx - 15.5) < 12
    hu[~circle] = -3024  # padding outside the reconstruction circle
    labels[:] = 0
    labels[circle & (np.hypot(yy - 15.5, xx - 15.5) > 10)] = 1  # a muscle ring reaching the circle
    labels[14:17, 14:17] = 2
    assert tissues_touching_edge(hu, labels, classes) == {"muscle": True, "subcutaneous_fat": False}
    assert tissues_touching_edge(hu[None], labels[None], classes)["muscle"]


@pytest.mark.parametrize("image_type", [AXIAL_PRIMARY])
def test_a_one_series_folder_keeps_its_name(tmp_path: Path, image_type) -> None:
    z = np.arange(24) * 5.0
    write_ct_series(tmp_path / "patient7", marked_phantom(z), z, image_type=image_type)
    (entry,) = collect_inputs([tmp_path / "patient7"])
    assert entry.series == "patient7"

"""--dicom-sr (issue 23, item 6): the TID 1500 report read back with highdicom, values and units exactly as in
results.csv, its groups referencing the source image and, with --dicom-seg, the SEG's segments."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from dicom_export import write_ct_series
from test_estimate_cli import FakeModels

from bodycomp_cli.estimate.inputs import collect_inputs
from bodycomp_cli.estimate.qc import QcSettings
from bodycomp_cli.estimate.run import EstimateOptions, run_estimate

TISSUES = ("muscle", "subcutaneous_fat", "visceral_fat")


def write_patient_series(folder: Path, n_slices: int = 24) -> list[str]:
    """A 64 x 64 series with muscle (40 HU) and fat (-100 HU) blocks, its headers carrying sex, age, height and
    weight; the fake selection model reads z from pixel [0, 0]."""
    z = np.arange(n_slices) * 4.0
    hu = np.full((n_slices, 64, 64), -1000, dtype=np.int16)
    hu[:, 4:24, 4:54] = 40
    hu[:, 30:40, 4:54] = -100
    hu[:, 0, 0] = np.rint(z)
    uids = write_ct_series(folder, hu, z, pixel_spacing=(0.7, 0.7))
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        ds.PatientSex, ds.PatientAge, ds.PatientSize, ds.PatientWeight = "F", "061Y", "1.60", "70"
        ds.save_as(path)
    return uids


def run(tmp_path: Path, **options) -> tuple[pd.Series, Path]:
    out = tmp_path / "out"
    settings = EstimateOptions(show_progress=False, previews=False, qc=QcSettings(min_matrix=64), **options)
    run_estimate(collect_inputs([tmp_path / "ct"]), FakeModels(), out, settings)
    return pd.read_csv(out / "results.csv", dtype={"L3_sop_instance_uid": str}).iloc[0], out


def measurement(group, name: str):
    found = [m for m in group.get_measurements() if m.name.meaning == name]
    assert len(found) == 1, [m.name.meaning for m in group.get_measurements()]
    return found[0]


def test_sr_reads_back_with_values_units_and_segment_references(tmp_path: Path) -> None:
    import highdicom as hd

    uids = write_patient_series(tmp_path / "ct")
    row, out = run(tmp_path, dicom_seg=True, dicom_sr=True)
    sr = hd.sr.srread(out / "dicom_sr" / "ct.dcm")
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    seg = hd.seg.segread(out / "dicom_seg" / "ct_L3.dcm")
    source_uid = row["L3_sop_instance_uid"]
    assert source_uid == uids[row["L3_slice_index"]]
    rois = sr.content.get_volumetric_roi_measurement_groups()
    assert [group.tracking_identifier for group in rois] == ["L3 muscle", "L3 subcutaneous_fat"]  # visceral: no frame
    for number, group in enumerate(rois, start=1):
        tissue = TISSUES[number - 1]
        area = measurement(group, "Area")
        assert area.value == row[f"L3_{tissue}_area_cm2"] and area.unit.value == "cm2"
        hu = measurement(group, "Attenuation Coefficient")
        assert hu.value == row[f"L3_{tissue}_mean_hu"] and hu.unit.value == "[hnsf'U]"
        assert hu.derivation.meaning == "Mean"
        segment_item, source_item = group.referenced_segment  # the SEG's segment, and its source image
        assert segment_item.referenced_sop_instance_uid == seg.SOPInstanceUID
        assert segment_item.referenced_segment_numbers == [number]
        assert segment_item.get("ReferencedFrameNumber") is None
        assert source_item.referenced_sop_instance_uid == source_uid
        assert group.finding_sites[0].value.value == "36470004"  # SCT L3 vertebra
    plain = sr.content.get_image_measurement_groups()
    assert [group.tracking_identifier for group in plain] == ["L3 visceral_fat", "L3 indices"]
    visceral, indices = plain
    assert measurement(visceral, "Area").value == 0.0 and not [
        m for m in visceral.get_measurements() if m.name.meaning == "Attenuation Coefficient"
    ]  # no visceral fat: its mean HU is blank in results.csv, and left out here
    assert visceral.source_images[0].referenced_sop_instance_uid == source_uid
    smi = measurement(indices, "Skeletal muscle index")
    assert smi.name.scheme_designator == "99BODYCOMP" and smi.unit.value == "cm2/m2"
    assert smi.value == pytest.approx(row["L3_smi_cm2_m2"], rel=1e-12)
    assert smi.value == pytest.approx(1000 * 0.49 / 100 / 1.6**2)
    assert measurement(indices, "Normal-attenuation muscle area").value == row["L3_nama_area_cm2"]
    assert measurement(indices, "Low-attenuation muscle area").unit.value == "cm2"
    ratio = measurement(indices, "Visceral to subcutaneous adipose tissue area ratio")
    assert ratio.value == row["L3_vat_sat_ratio"] == 0.0 and ratio.unit.value == "{ratio}"
    evidence = {
        item.ReferencedSOPInstanceUID
        for s in sr.CurrentRequestedProcedureEvidenceSequence
        for series in s.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    assert evidence == {source_uid, seg.SOPInstanceUID}
    assert sr.PatientID == "P1" and sr.PatientSex == "F"


def test_sr_without_seg_references_the_source_image(tmp_path: Path) -> None:
    import highdicom as hd

    write_patient_series(tmp_path / "ct")
    row, out = run(tmp_path, dicom_sr=True)
    sr = hd.sr.srread(out / "dicom_sr" / "ct.dcm")
    assert sr.content.get_planar_roi_measurement_groups() == []
    groups = sr.content.get_image_measurement_groups()
    assert [group.tracking_identifier for group in groups] == [f"L3 {t}" for t in TISSUES] + ["L3 indices"]
    assert measurement(groups[0], "Area").value == row["L3_muscle_area_cm2"]
    assert {g.source_images[0].referenced_sop_instance_uid for g in groups} == {row["L3_sop_instance_uid"]}
    assert not (out / "dicom_seg").exists()

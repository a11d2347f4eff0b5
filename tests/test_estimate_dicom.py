"""`estimate` on PACS exports: a DICOM tree in, identifiers, QC reasons, studies, edge flags out."""

from __future__ import annotations

import html
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
    cut_off = marked_phantom(z25, 3)
    cut_off[:, 20:40, -3:] = -100  # fat running off the image's right edge
    write_ct_series(flat, cut_off, z25, patient_id="P2", study_uid=study2, series_number=8, slice_thickness=1.25)
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
    summary = run_estimate(inputs, FakeModels(), out, EstimateOptions(show_progress=False, qc=QC_64))
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
    assert results.loc["pacs/P2/export_S8", "L3_subcutaneous_fat_touches_edge"] == "True"
    assert results.loc["pacs/P2/export_S7", "L3_subcutaneous_fat_touches_edge"] == "False"
    headings = check_report(out, results, qc)
    assert headings[0] == "pacs/P2/export_S8"  # the only flagged series comes first
    assert "L3: subcutaneous fat touches the edge of the image" in (out / "report.html").read_text()


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
    hu[~circle] = -1024  # a circle filled with air's own value: recognised as one constant outside the circle
    hu[circle] = -1000 + (yy[circle] % 3)
    assert tissues_touching_edge(hu, labels, classes) == {"muscle": True, "subcutaneous_fat": False}
    labels[circle & (np.hypot(yy - 15.5, xx - 15.5) > 10)] = 0  # the ring pulled 2 px inside the circle
    labels[circle & (np.hypot(yy - 15.5, xx - 15.5) > 8) & (np.hypot(yy - 15.5, xx - 15.5) < 10)] = 1
    assert tissues_touching_edge(hu, labels, classes)["muscle"] is False


@pytest.mark.parametrize("image_type", [AXIAL_PRIMARY])
def test_a_one_series_folder_keeps_its_name(tmp_path: Path, image_type) -> None:
    z = np.arange(24) * 5.0
    write_ct_series(tmp_path / "patient7", marked_phantom(z), z, image_type=image_type)
    (entry,) = collect_inputs([tmp_path / "patient7"])
    assert entry.series == "patient7"


def test_cli_end_to_end_on_a_pacs_export(trained: dict[str, Path], tmp_path: Path) -> None:
    """The issue's acceptance run: two patients, plain and JPEG-Lossless series, a localizer, a derived
    reformat and a flat folder with two series, through `bodycomp estimate TREE/` with tiny trained models."""
    import highdicom as hd
    from conftest import invoke

    phantoms = pd.read_csv(trained["series_csv"], dtype={"series": str})
    volumes = []
    for path, z_l3 in zip(phantoms["path"][:3], phantoms["z_L3"][:3], strict=True):
        with np.load(trained["series_csv"].parent / path) as series:
            # 40 slices around L3 keep the run short; the clip keeps HU inside what 12-bit CT stores.
            middle = int(np.argmin(np.abs(series["z_mm"] - float(z_l3))))
            keep = slice(max(middle - 20, 0), middle + 20)
            hu = np.clip(series["hu"][keep], -1024, 3071).astype(np.int16)
            volumes.append((hu, series["z_mm"][keep], tuple(series["pixel_spacing"])))
    root, study1, study2 = tmp_path / "pacs", generate_uid(), generate_uid()
    written: dict[str, list[str]] = {}

    def series(folder: Path, index: int, name: str, **kwargs) -> None:
        hu, z, spacing = volumes[index]
        written[name] = write_ct_series(folder, hu, z, pixel_spacing=spacing, **kwargs)

    series(root / "P1" / "study" / "ct", 0, "ct", patient_id="P1", study_uid=study1, slice_thickness=5.0)
    series(
        root / "P1" / "study" / "ct_jpeg",
        1,
        "ct_jpeg",
        patient_id="P1",
        study_uid=study1,
        series_number=2,
        transfer_syntax=JPEGLosslessSV1,
    )
    localizer = ("ORIGINAL", "PRIMARY", "LOCALIZER")
    write_ct_series(root / "P1" / "study" / "scout", volumes[0][0][:1], [0.0], study_uid=study1, image_type=localizer)
    derived = ("DERIVED", "SECONDARY", "AXIAL")
    series(
        root / "P1" / "study" / "mpr", 0, "mpr", patient_id="P1", study_uid=study1, series_number=4, image_type=derived
    )
    series(root / "P2" / "flat", 2, "flat_a", patient_id="P2", study_uid=study2, series_number=5, slice_thickness=5.0)
    series(root / "P2" / "flat", 1, "flat_b", patient_id="P2", study_uid=study2, series_number=6, prefix="B")

    out = tmp_path / "out"
    args = ["estimate", root, "--select-model", trained["select"], "--seg-model", trained["seg"], "-o", out]
    args += ["--dicom-seg", "--save-masks", "--range", "3", "--min-matrix", "64", "-g", "0", "--min-slices", "5"]
    result = invoke(args)
    assert result.exit_code == 0, result.output + (result.stderr or "")

    results = pd.read_csv(out / "results.csv", dtype=str, keep_default_na=False).set_index("series")
    names = {"pacs/P1/study/ct": "ct", "pacs/P1/study/ct_jpeg": "ct_jpeg", "pacs/P2/flat_S5": "flat_a"}
    names["pacs/P2/flat_S6"] = "flat_b"
    assert sorted(results.index) == sorted(names)
    assert list(results.loc[list(names), "patient_id"]) == ["P1", "P1", "P2", "P2"]
    assert list(results.loc[list(names), "study_instance_uid"]) == [study1, study1, study2, study2]
    for series_id, name in names.items():
        row = results.loc[series_id]
        assert row["L3_sop_instance_uid"] == written[name][int(row["L3_slice_index"])]
        assert row["series_instance_uid"] and row["accession_number"] == f"ACC{row['patient_id']}"

    qc = pd.read_csv(out / "qc.csv", dtype=str, keep_default_na=False).set_index("series")
    assert sorted(qc.index) == ["pacs/P1/study/mpr", "pacs/P1/study/scout"]
    assert "localizer" in qc.loc["pacs/P1/study/scout", "reason"]
    assert "derived" in qc.loc["pacs/P1/study/mpr", "reason"]

    studies = pd.read_csv(out / "studies.csv", dtype=str, keep_default_na=False).set_index("study_instance_uid")
    assert list(studies.index) == [study1, study2]
    for uid, study in studies.iterrows():
        members = results[results["study_instance_uid"] == uid]
        single = members[members["L3_zero_crossings"] == "1"]
        if single.empty:
            assert study["recommended_series"] == "" and "none of its" in study["rule"]
        else:
            thickest = single["slice_thickness_mm"].astype(float).max()
            assert float(results.loc[study["recommended_series"], "slice_thickness_mm"]) == thickest
            assert study["rule"].startswith(f"one zero crossing at every level ({len(single)} of {len(members)}")
    assert studies.loc[study1, "series_failed_qc"] == "2"

    for series_id in names:
        stem = series_id.replace("/", "_")
        seg = hd.seg.segread(out / "dicom_seg" / f"{stem}_L3.dcm")
        row = results.loc[series_id]
        assert seg.PatientID == row["patient_id"] and seg.StudyInstanceUID == row["study_instance_uid"]
        assert [d.SegmentLabel for d in seg.SegmentSequence] == ["muscle", "subcutaneous fat", "visceral fat"]
        sources = [ref.ReferencedSOPInstanceUID for ref in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence]
        assert row["L3_sop_instance_uid"] in sources and len(sources) >= 1
        labels = seg.get_pixels_by_source_instance([row["L3_sop_instance_uid"]], combine_segments=True, relabel=False)[
            0
        ]
        np.testing.assert_array_equal(labels, np.load(out / "masks" / f"{stem}_L3.npy"))

    check_report(out, results, qc)


def check_report(out: Path, results: pd.DataFrame, qc: pd.DataFrame) -> list[str]:
    """Every link and image of report.html resolves; flagged series come first; QC reasons are shown."""
    from html.parser import HTMLParser

    class Links(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.targets: list[str] = []
            self.headings: list[str] = []
            self._in_h3 = False

        def handle_starttag(self, tag: str, attrs: list) -> None:
            self.targets += [value for name, value in attrs if name in ("src", "href")]
            self._in_h3 = tag == "h3"

        def handle_data(self, data: str) -> None:
            if self._in_h3:
                self.headings.append(data)
                self._in_h3 = False

    page = (out / "report.html").read_text()
    parser = Links()
    parser.feed(page)
    assert len(parser.targets) == 2 * len(results)  # each preview shown and linked
    assert all(not target.startswith(("/", "http")) and (out / target).is_file() for target in parser.targets)
    flagged = [
        series
        for series, row in results.iterrows()
        if row["L3_zero_crossings"] != "1" or any(row[c] == "True" for c in results.columns if c.endswith("edge"))
    ]
    assert set(parser.headings[: len(flagged)]) == set(flagged)
    assert sorted(parser.headings) == sorted(results.index)
    for reason in qc["reason"]:
        assert html.escape(reason) in page
    return parser.headings


def test_dicom_seg_lies_on_the_stored_pixel_grid(tmp_path: Path) -> None:
    """A series stored transposed and flipped: the SEG frame is the mask in the files' own row/column order."""
    import highdicom as hd

    from bodycomp_cli.io.volumes import read_volume

    z = np.arange(24) * 5.0
    display = marked_phantom(z)
    display[:, 40:44, 10:30] = 50  # an asymmetric muscle block, so any flip or transpose shows
    # Stored columns run along +y (posterior), stored rows along -x (to the patient's right):
    # display[i, j] = stored[N - 1 - j, i], so stored = display with columns reversed, then transposed.
    stored = display[:, :, ::-1].transpose(0, 2, 1)
    write_ct_series(tmp_path / "ct", stored, z, orientation=(0, 1, 0, -1, 0, 0))
    np.testing.assert_array_equal(read_volume(tmp_path / "ct").hu, display)
    out = tmp_path / "out"
    options = EstimateOptions(show_progress=False, previews=False, save_masks=True, dicom_seg=True, qc=QC_64)
    run_estimate(collect_inputs([tmp_path / "ct"]), FakeModels(), out, options)
    row = pd.read_csv(out / "results.csv", dtype=str, keep_default_na=False).iloc[0]
    seg = hd.seg.segread(out / "dicom_seg" / "ct_L3.dcm")
    frame = seg.get_pixels_by_source_instance([row["L3_sop_instance_uid"]], combine_segments=True, relabel=False)[0]
    mask = np.load(out / "masks" / "ct_L3.npy")
    np.testing.assert_array_equal(frame, mask[:, ::-1].T)
    assert (mask == 1).sum() > 80 and not np.array_equal(frame, mask)


def test_dicom_seg_from_an_anonymised_export(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Missing PatientName/AccessionNumber are written empty; a series highdicom refuses (no frame of
    reference) gets no SEG file and a console line, and the run goes on."""
    import pydicom

    z = np.arange(24) * 5.0
    write_ct_series(tmp_path / "export" / "anon", marked_phantom(z), z)
    write_ct_series(tmp_path / "export" / "no_for", marked_phantom(z), z, series_number=2)
    for path in (tmp_path / "export").rglob("IM*"):
        ds = pydicom.dcmread(path)
        del ds.PatientName, ds.AccessionNumber
        if path.parent.name == "no_for":
            del ds.FrameOfReferenceUID
        ds.save_as(path)
    options = EstimateOptions(show_progress=False, previews=False, dicom_seg=True, qc=QC_64)
    summary = run_estimate(collect_inputs([tmp_path / "export"]), FakeModels(), tmp_path / "out", options)
    assert summary.estimated == ["export/anon", "export/no_for"]
    assert sorted(p.name for p in (tmp_path / "out" / "dicom_seg").iterdir()) == ["export_anon_L3.dcm"]
    assert pydicom.dcmread(tmp_path / "out" / "dicom_seg" / "export_anon_L3.dcm").PatientName == ""
    assert "export/no_for: no DICOM SEG for L3 (Source images have no Frame Of Reference UID" in capsys.readouterr().err

"""DICOM exports: series found by content in a tree of any depth, compressed syntaxes, header filters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from dicom_export import body_phantom, write_ct_series
from pydicom.uid import (
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from bodycomp_cli.errors import BodycompError
from bodycomp_cli.io.dicom_tree import only_series, scan_tree
from bodycomp_cli.io.series_filters import header_failure, image_type_failure
from bodycomp_cli.io.volumes import read_volume

Z_MM = np.arange(24) * 2.5


def test_tree_is_found_by_content_with_headers_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study = generate_uid()
    root = tmp_path / "export"
    write_ct_series(root / "p1" / "study" / "ct", body_phantom(4), Z_MM[:4], study_uid=study)
    flat = root / "p1" / "study" / "mixed"  # one folder, two series, as some PACS export them
    write_ct_series(flat, body_phantom(3), Z_MM[:3], study_uid=study, series_number=3)
    write_ct_series(flat, body_phantom(5), Z_MM[:5], study_uid=study, series_number=4, prefix="X")
    (root / "p1" / "README.txt").write_text("not DICOM")
    (root / "p1" / "fake.dcm").write_bytes(b"\0" * 200)  # a .dcm name is no proof of DICOM
    reads = []
    original = pydicom.dcmread
    monkeypatch.setattr(pydicom, "dcmread", lambda *a, **k: reads.append(k) or original(*a, **k))
    scan = scan_tree(root)
    assert reads and all(kwargs.get("stop_before_pixels") for kwargs in reads)  # no pixel was read
    ids = {series.series_id: len(series.slices) for series in scan.series}
    assert ids == {"export/p1/study/ct": 4, "export/p1/study/mixed_S3": 3, "export/p1/study/mixed_S4": 5}
    assert {series.study_uid for series in scan.series} == {study}
    assert sorted(p.name for p in scan.not_dicom) == ["README.txt", "fake.dcm"]
    # A folder given directly keeps its own name as the series id (the one-series-per-folder input).
    assert [s.series_id for s in scan_tree(root / "p1" / "study" / "ct").series] == ["ct"]


def test_repeated_positions_split_by_acquisition_or_refused(tmp_path: Path) -> None:
    uid = generate_uid()
    hu = body_phantom(8)
    z = np.concatenate([Z_MM[:4], Z_MM[:4]])  # two acquisitions over the same 4 positions
    write_ct_series(tmp_path / "two_acq", hu, z, series_uid=uid, acquisition=[1, 1, 1, 1, 2, 2, 2, 2])
    parts = scan_tree(tmp_path / "two_acq").series
    assert sorted(s.series_id for s in parts) == ["two_acq_acq1", "two_acq_acq2"]
    assert all(s.problem is None and len(s.slices) == 4 for s in parts)

    write_ct_series(tmp_path / "entangled", hu, z, series_uid=generate_uid())  # one acquisition: cannot split
    (entangled,) = scan_tree(tmp_path / "entangled").series
    assert entangled.problem == "4 slices repeat another slice's position (an entangled series); refused"
    with pytest.raises(BodycompError, match="entangled series"):
        read_volume(tmp_path / "entangled")

    uid = generate_uid()  # a scout saved inside the CT series: another orientation, another part
    write_ct_series(tmp_path / "with_scout", body_phantom(4), Z_MM[:4], series_uid=uid)
    write_ct_series(
        tmp_path / "with_scout", body_phantom(1), [0.0], series_uid=uid, orientation=(1, 0, 0, 0, 0, -1), prefix="S"
    )
    assert sorted(len(s.slices) for s in scan_tree(tmp_path / "with_scout").series) == [1, 4]


@pytest.mark.parametrize(
    "syntax", [JPEGLosslessSV1, RLELossless, JPEGLSLossless, JPEG2000Lossless], ids=lambda uid: uid.name
)
def test_compressed_series_read_back_exactly(tmp_path: Path, syntax) -> None:
    from pydicom.pixels import pixel_array

    hu = body_phantom(5, seed=3)
    hu[0, 0, 0], hu[0, 0, 1] = -1024, 3071  # both ends of the 12-bit CT range
    uids = write_ct_series(tmp_path / "ct", hu, Z_MM[:5], transfer_syntax=syntax)
    # The runtime dependencies decode every file exactly (python-gdcm, which wrote JPEG Lossless, is test-only).
    plugin = "pyjpegls" if syntax == JPEGLSLossless else "pylibjpeg"
    for path in (tmp_path / "ct").iterdir():
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert ds.file_meta.TransferSyntaxUID == syntax
        stored = pixel_array(path, decoding_plugin=plugin).astype(np.int32)
        np.testing.assert_array_equal(stored - 1024, hu[list(Z_MM).index(float(ds.ImagePositionPatient[2]))])
    volume = read_volume(tmp_path / "ct")
    np.testing.assert_array_equal(volume.hu, hu)
    assert volume.hu.dtype == np.int16 and volume.sop_instance_uids == tuple(uids)


def test_image_type_filter() -> None:
    assert image_type_failure(["ORIGINAL", "PRIMARY", "AXIAL"]) is None
    assert image_type_failure(["ORIGINAL", "PRIMARY", "LOCALIZER"]) == (
        "ImageType ORIGINAL\\PRIMARY\\LOCALIZER is a localizer (scout)"
    )
    assert "a derived series" in image_type_failure(["DERIVED", "SECONDARY", "REFORMATTED"])
    assert "secondary capture" in image_type_failure(["ORIGINAL", "SECONDARY"])
    for dual_energy in (["ORIGINAL", "PRIMARY", "AXIAL", "GSI MD"], ["ORIGINAL", "PRIMARY", "MONOE 70KEV"]):
        assert "dual-energy" in image_type_failure(dual_energy)


@pytest.mark.parametrize(
    ("kwargs", "n_slices", "size", "reason"),
    [
        ({"modality": "MR"}, 24, 64, "modality is MR, not CT"),
        ({"image_type": ("DERIVED", "SECONDARY", "MPR")}, 24, 64, "a derived series"),
        ({"orientation": (0, 1, 0, 0, 0, -1)}, 24, 64, "not an axial series (slices tilted 90 degrees"),
        ({}, 12, 64, "12 slices, fewer than the minimum 20"),
        ({}, 24, 32, "in-plane size 32 x 32 is smaller than 64 x 64"),
    ],
)
def test_header_filters(tmp_path: Path, kwargs: dict, n_slices: int, size: int, reason: str) -> None:
    write_ct_series(tmp_path / "s", body_phantom(n_slices, size=size), Z_MM[:n_slices], **kwargs)
    (series,) = scan_tree(tmp_path / "s").series
    assert reason in header_failure(series, min_slices=20, spacing_tolerance_mm=0.1, min_matrix=64)


def test_spacing_gap_is_filtered(tmp_path: Path) -> None:
    z = np.delete(Z_MM, 10)  # a missing slice
    write_ct_series(tmp_path / "s", body_phantom(len(z)), z)
    (series,) = scan_tree(tmp_path / "s").series
    assert header_failure(series, 20, 0.1, 64).startswith("z spacing is not uniform: steps range 2.5-5 mm")


def test_a_study_folder_tree_names_its_one_ct_series(tmp_path: Path) -> None:
    """prepare-slices' manifest `path` may name a study tree: its localizer and reformats are passed over."""
    from bodycomp_cli.prepare.slices import prepare_slices

    study = generate_uid()
    hu = body_phantom(6)
    write_ct_series(tmp_path / "study" / "a" / "b" / "ct", hu, Z_MM[:6], study_uid=study, series_number=2)
    localizer = ("ORIGINAL", "PRIMARY", "LOCALIZER")
    write_ct_series(tmp_path / "study" / "loc", hu[:1], [0.0], study_uid=study, image_type=localizer)
    write_ct_series(tmp_path / "study" / "cor", hu[:3], Z_MM[:3], study_uid=study, image_type=("DERIVED", "MPR"))
    assert only_series(tmp_path / "study").series_id == "study/a/b/ct"
    np.testing.assert_array_equal(read_volume(tmp_path / "study").hu, hu)
    pd.DataFrame({"series": ["s1"], "path": ["study"], "z_L3": [5.0]}).to_csv(tmp_path / "m.csv", index=False)
    prepare_slices(tmp_path / "m.csv", tmp_path / "out", levels=["L3"], workers=1)
    assert len(list((tmp_path / "out" / "images").rglob("*.png"))) == 6

    write_ct_series(tmp_path / "study" / "ct2", hu, Z_MM[:6] + 1, study_uid=study, series_number=5)
    with pytest.raises(BodycompError, match="4 DICOM series .* 2 are axial primary CT"):
        read_volume(tmp_path / "study")

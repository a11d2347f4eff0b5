"""prepare-slices level positions without millimetres: vertebra label volumes, vertebrae_<LEVEL> folders, VerSe
centroid JSONs and slice numbers, on small nibabel-written volumes (RAS and LPS) and on the real CTs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from conftest import assert_user_error, invoke  # as test_one_source does: rt-utils installs a package named tests
from test_volumes import make_display_volume, write_dicom_series

from bodycomp_cli.errors import BodycompError
from bodycomp_cli.io.atomic import TEMP_PREFIX
from bodycomp_cli.io.labels.nifti import read_nifti_labels
from bodycomp_cli.io.vertebrae import parse_vertebra_labels
from bodycomp_cli.io.vertebrae.numbering import TOTALSEGMENTATOR_V2, VERSE

REALCT = Path(__file__).resolve().parents[2] / "shared" / "realct"
Z, H, W = 10, 6, 8  # display slices, rows, columns of the synthetic volumes
Z0, DZ = 10.0, 2.0  # slice k lies at world z = Z0 + DZ * k
SLICE_Z = Z0 + DZ * np.arange(Z)


def write_nifti(path: Path, display: np.ndarray, orientation: str, z0: float = Z0) -> Path:
    """Store a display-orientation Z x H x W array as nibabel writes it, with RAS or LPS voxel axes (x, y, z)."""
    xyz = np.transpose(display, (2, 1, 0))  # x: columns (right -> left), y: rows (anterior -> posterior), z
    if orientation == "RAS":  # x toward the right, y toward anterior: both reversed
        data, affine = xyz[::-1, ::-1, :], np.diag([1.0, 1.0, DZ, 1.0])
        affine[:3, 3] = [-(W - 1), -(H - 1), z0]
    else:
        data, affine = xyz, np.diag([-1.0, -1.0, DZ, 1.0])
        affine[:3, 3] = [0.0, 0.0, z0]
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), affine), str(path))
    return path


def vertebra_labels(l3: int, l1: int) -> np.ndarray:
    """L3 on slices 3 (three voxels) and 4 (one voxel): centroid slice 3.25, z 16.5 mm. L1 on the last slice."""
    labels = np.zeros((Z, H, W), dtype=np.uint8)
    labels[3, 2, 2:5] = l3
    labels[4, 3, 3] = l3
    labels[9, 1, 1] = l1
    return labels


L3_Z = Z0 + DZ * 3.25


def no_output_left(output: Path) -> None:
    assert not output.exists()
    assert not list(output.parent.glob(f"{TEMP_PREFIX}*"))


def run(tmp_path: Path, rows: list[dict], *options: str):
    pd.DataFrame(rows).to_csv(tmp_path / "series.csv", index=False)
    return invoke(["prepare-slices", tmp_path / "series.csv", tmp_path / "out", "--workers", "1", *options])


def meta(tmp_path: Path) -> pd.DataFrame:
    return pd.read_csv(tmp_path / "out" / "meta" / "train.csv", index_col=0)


def assert_levels(tmp_path: Path, expected: dict[str, float | None]) -> None:
    table = meta(tmp_path)
    np.testing.assert_array_equal(table["z_mm"], SLICE_Z)
    for level, z in expected.items():
        if z is None:
            assert table[f"ZOffset_{level}"].isna().all(), level
        else:
            np.testing.assert_allclose(table[f"ZOffset_{level}"], SLICE_Z - z, atol=1e-4)


@pytest.mark.parametrize(("ct_orientation", "label_orientation"), [("RAS", "RAS"), ("LPS", "RAS"), ("RAS", "LPS")])
@pytest.mark.parametrize(("preset", "numbering"), [("totalsegmentator", TOTALSEGMENTATOR_V2), ("verse", VERSE)])
def test_label_volume_gives_the_centroid_z_and_blanks_a_cut_or_absent_vertebra(
    tmp_path, ct_orientation, label_orientation, preset, numbering
):
    write_nifti(tmp_path / "ct.nii.gz", make_display_volume(Z, H, W), ct_orientation)
    write_nifti(tmp_path / "seg.nii.gz", vertebra_labels(numbering["L3"], numbering["L1"]), label_orientation)
    rows = [{"series": "a", "path": "ct.nii.gz", "vertebrae": "seg.nii.gz", "split": "train"}]
    result = run(tmp_path, rows, "-L", "L3", "L1", "L4", "--vertebra-labels", preset)
    assert result.exit_code == 0, result.output + result.stderr
    assert_levels(tmp_path, {"L3": L3_Z, "L1": None, "L4": None})
    assert meta(tmp_path)["ZOffset_L3"].iloc[3] == -0.5  # slice 3 at 16 mm, half a millimetre below L3's centroid
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    label = numbering["L1"]
    assert warnings == [
        f"warning: series.csv row 1: L1 (label {label} of seg.nii.gz) reaches the last slice of the volume, "
        "which cuts it: level left blank"
    ]


def test_explicit_map_and_a_folder_of_per_vertebra_masks(tmp_path):
    write_nifti(tmp_path / "ct.nii.gz", make_display_volume(Z, H, W), "LPS")
    write_nifti(tmp_path / "seg.nii.gz", vertebra_labels(7, 9), "RAS")
    (tmp_path / "masks").mkdir()
    write_nifti(tmp_path / "masks" / "vertebrae_L3.nii.gz", vertebra_labels(1, 0), "RAS")
    write_nifti(tmp_path / "masks" / "vertebrae_L1.nii.gz", vertebra_labels(0, 1), "LPS")
    write_nifti(tmp_path / "masks" / "vertebrae_L2.nii.gz", np.zeros((Z, H, W), np.uint8), "LPS")
    rows = [
        {"series": "map", "path": "ct.nii.gz", "vertebrae": "seg.nii.gz", "split": "train"},
        {"series": "folder", "path": "ct.nii.gz", "vertebrae": "masks", "split": "val"},
    ]
    result = run(tmp_path, rows, "-L", "L3", "L1", "L2", "--vertebra-labels", "L3=7, L1=9 L2=8")
    assert result.exit_code == 0, result.output + result.stderr
    assert_levels(tmp_path, {"L3": L3_Z, "L1": None, "L2": None})
    val = pd.read_csv(tmp_path / "out" / "meta" / "val.csv", index_col=0)
    np.testing.assert_allclose(val["ZOffset_L3"], SLICE_Z - L3_Z, atol=1e-4)
    assert val["ZOffset_L1"].isna().all() and val["ZOffset_L2"].isna().all()
    assert sum(line.startswith("warning:") and "L1" in line for line in result.stderr.splitlines()) == 2


def test_verse_centroid_json_in_its_own_direction(tmp_path):
    write_nifti(tmp_path / "ct.nii.gz", make_display_volume(Z, H, W), "RAS")
    # Direction P I R: Y counts slices from the top (I), so Y 2.5 is display slice 9 - 2.5 = 6.5, z 23 mm.
    centroids = [
        {"direction": ["P", "I", "R"]},
        {"label": 22, "X": 2.0, "Y": 2.5, "Z": 3.0},  # L3
        {"label": 20, "X": 2.0, "Y": 0.0, "Z": 3.0},  # L1 centred on the top slice: cut
        {"label": 19, "X": float("nan"), "Y": float("nan"), "Z": float("nan")},  # T12 not placed
    ]
    (tmp_path / "ctd.json").write_text(json.dumps(centroids))
    rows = [{"series": "a", "path": "ct.nii.gz", "vertebrae": "ctd.json", "split": "train"}]
    result = run(tmp_path, rows, "-L", "L3", "L1", "T12", "L4")
    assert result.exit_code == 0, result.output + result.stderr
    assert_levels(tmp_path, {"L3": Z0 + DZ * 6.5, "L1": None, "T12": None, "L4": None})
    assert "L1 (label 20 of ctd.json) is centred on the volume's end slice" in result.stderr


def test_slice_numbers_by_index_or_instance_number_and_z_columns_win(tmp_path):
    z_mm = np.array([40.0, 42.5, 45.0, 47.5, 50.0])
    hu = make_display_volume(5, 6, 7)
    write_dicom_series(tmp_path / "dicom", hu, z_mm[::-1])  # stored head first
    np.savez(tmp_path / "s.npz", hu=make_display_volume(Z, H, W), z_mm=SLICE_Z[::-1])
    write_nifti(tmp_path / "seg.nii.gz", vertebra_labels(29, 31), "RAS")
    rows = [
        {"series": "s", "path": "s.npz", "vertebrae": "seg.nii.gz", "slice_L3": "", "z_L1": "11", "split": "train"},
        {"series": "d", "path": "dicom", "vertebrae": "", "slice_L3": "1", "z_L1": "", "split": "val"},
    ]
    result = run(tmp_path, rows, "-L", "L3", "L1", "--vertebra-labels", "totalsegmentator")
    assert result.exit_code == 0, result.output + result.stderr
    assert_levels(tmp_path, {"L3": L3_Z, "L1": 11.0})  # the typed z_L1 wins over the cut L1 in the labels
    assert "L1 (label" not in result.stderr
    val = pd.read_csv(tmp_path / "out" / "meta" / "val.csv", index_col=0)
    np.testing.assert_allclose(val["ZOffset_L3"], z_mm - 42.5)  # index 1 of the z-ascending series
    assert val["ZOffset_L1"].isna().all()
    # InstanceNumber: the file that carries number 3, wherever it lies.
    headers = [pydicom.dcmread(path) for path in sorted((tmp_path / "dicom").iterdir())]
    z_of_3 = next(float(ds.ImagePositionPatient[2]) for ds in headers if int(ds.InstanceNumber) == 3)
    rows[1]["slice_L3"] = "3"
    result = run(tmp_path, rows[1:], "-L", "L3", "--slice-numbers", "instance", "--overwrite")
    assert result.exit_code == 0, result.output + result.stderr
    val = pd.read_csv(tmp_path / "out" / "meta" / "val.csv", index_col=0)
    np.testing.assert_allclose(val["ZOffset_L3"], z_mm - z_of_3)


def test_level_columns_alone_name_the_levels(tmp_path):
    np.savez(tmp_path / "s.npz", hu=make_display_volume(Z, H, W), z_mm=SLICE_Z)
    result = run(tmp_path, [{"series": "s", "path": "s.npz", "slice_L3": "2", "split": "train"}])
    assert result.exit_code == 0, result.output + result.stderr
    assert_levels(tmp_path, {"L3": Z0 + DZ * 2})


@pytest.mark.parametrize(
    ("cells", "options", "fragments"),
    [
        ({"vertebrae": "seg.nii.gz"}, ["--vertebra-labels", "tss"], ["--vertebra-labels", "unknown preset 'tss'"]),
        ({"vertebrae": "seg.nii.gz"}, [], ["row 1", "--vertebra-labels"]),
        ({"vertebrae": "far.nii.gz"}, ["--vertebra-labels", "verse"], ["row 1", "far.nii.gz", "do not overlap"]),
        ({"vertebrae": "missing.nii.gz"}, ["--vertebra-labels", "verse"], ["row 1", "vertebrae file not found"]),
        ({"vertebrae": "frac.nii.gz"}, ["--vertebra-labels", "verse"], ["row 1", "frac.nii.gz", "fractional"]),
        ({"vertebrae": "seg.nii.gz"}, ["--vertebra-labels", "L1=20"], ["row 1", "no label for L3"]),
        ({"vertebrae": "nodir.json"}, [], ["row 1", "nodir.json", "no 'direction'"]),
        ({"vertebrae": "outside.json"}, [], ["row 1", "outside.json", "outside the CT grid"]),
        ({"vertebrae": "ct.txt"}, [], ["row 1", "vertebrae must be"]),
        ({"slice_L3": "10"}, [], ["row 1", "slice_L3", "outside the series' slice indices 0 to 9"]),
        ({"slice_L3": "2.5"}, [], ["row 1", "slice_L3", "not a whole slice number"]),
        ({"slice_L3": "2", "z_L3": "4"}, [], ["row 1", "both z_L3 and slice_L3"]),
        ({"slice_L3": "2"}, ["--slice-numbers", "instance"], ["row 1", "needs a DICOM series"]),
        ({"slice_L3": "2"}, ["--slice-numbers", "uid"], ["--slice-numbers", "index, instance"]),
    ],
)
def test_bad_level_sources_exit_2_with_one_line_and_no_output(tmp_path, cells, options, fragments):
    write_nifti(tmp_path / "ct.nii.gz", make_display_volume(Z, H, W), "RAS")
    write_nifti(tmp_path / "seg.nii.gz", vertebra_labels(22, 20), "RAS")
    write_nifti(tmp_path / "far.nii.gz", vertebra_labels(22, 20), "RAS", z0=500.0)
    write_nifti(tmp_path / "frac.nii.gz", vertebra_labels(22, 20).astype(np.float32) / 4, "RAS")
    (tmp_path / "nodir.json").write_text(json.dumps([{"label": 22, "X": 1, "Y": 1, "Z": 1}]))
    (tmp_path / "outside.json").write_text(
        json.dumps([{"direction": ["P", "I", "R"]}, {"label": 22, "X": 1, "Y": 10, "Z": 1}])
    )
    (tmp_path / "ct.txt").write_text("")
    rows = [{"series": "a", "path": "ct.nii.gz", "split": "train", **cells}]
    result = run(tmp_path, rows, "-L", "L3", *options)
    assert_user_error(result, *fragments)
    # One error line (a refusal found beside the volume comes after the progress bar's line).
    lines = (result.stderr + result.stdout).splitlines()
    assert [line for line in lines if line.startswith("error:")] == [lines[-1]], result.stderr
    no_output_left(tmp_path / "out")


def test_vertebra_label_presets_follow_the_published_numbering():
    # TotalSegmentator v2 `total` (class_map["total"] in totalsegmentator/map_to_binary.py) and VerSe's README.
    assert {k: TOTALSEGMENTATOR_V2[k] for k in ("S1", "L5", "L3", "L1", "T12", "T11", "T1", "C7", "C2", "C1")} == {
        "S1": 26, "L5": 27, "L3": 29, "L1": 31, "T12": 32, "T11": 33, "T1": 43, "C7": 44, "C2": 49, "C1": 50,
    }  # fmt: skip
    assert {k: VERSE[k] for k in ("C1", "C7", "T1", "T12", "L1", "L5", "L6", "T13")} == {
        "C1": 1, "C7": 7, "T1": 8, "T12": 19, "L1": 20, "L5": 24, "L6": 25, "T13": 28,
    }  # fmt: skip
    assert parse_vertebra_labels("l3=29 L4=28") == {"L3": 29, "L4": 28}
    for text, fragment in [("L3=29,L4=29", "label 29 is given to two levels"), ("L3=x", "not LEVEL=VALUE")]:
        with pytest.raises(BodycompError, match=fragment):
            parse_vertebra_labels(text)


# ------------------------------------------------------------------------------------------- real CT


def realct(*parts: str) -> Path:
    path = REALCT.joinpath(*parts)
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing, and CI must run the real-CT tests")
        pytest.skip(f"{REALCT} is absent (the real CT lives beside the repository, ../shared/realct)")
    return path


def level_slice_labels(tmp_path: Path, series: str, label_file: Path, level: str, split: str = "train") -> np.ndarray:
    """The labels, in display orientation, on the slice nearest to the level's z that prepare-slices wrote."""
    table = pd.read_csv(tmp_path / "out" / "meta" / f"{split}.csv", index_col=0)
    rows = table[table["series"] == series]
    nearest = rows.iloc[int(np.argmin(np.abs(rows[f"ZOffset_{level}"].to_numpy())))]
    assert abs(nearest[f"ZOffset_{level}"]) <= 1.5  # slices 3 mm apart at most
    return read_nifti_labels(label_file).labels[int(nearest["slice_index"])]


def test_totalsegmentator_multilabel_places_l3_inside_l3_and_blanks_the_cut_t12(tmp_path):
    folder = realct("totalsegmentator")
    rows = [
        {
            "series": "ts",
            "path": folder / "example_ct.nii.gz",
            "vertebrae": folder / "example_seg_fast_force_split.nii.gz",
            "split": "train",
        }
    ]
    result = run(tmp_path, rows, "-L", "T12", "L1", "L3", "--vertebra-labels", "totalsegmentator")
    assert result.exit_code == 0, result.output + result.stderr
    first = meta(tmp_path).iloc[0]
    # The README's centroids (world z, mm): L3 314.9, L1 382.7; T12 is cut by the top of the volume.
    assert round(first["z_mm"] - first["ZOffset_L3"], 1) == 314.9
    assert round(first["z_mm"] - first["ZOffset_L1"], 1) == 382.7
    assert meta(tmp_path)["ZOffset_T12"].isna().all()
    assert "warning: series.csv row 1: T12 (label 32" in result.stderr
    assert (level_slice_labels(tmp_path, "ts", folder / "example_seg_fast_force_split.nii.gz", "L3") == 29).sum() > 50


def test_verse_masks_in_pir_place_l3_inside_l3(tmp_path):
    folder = realct("verse")
    rows = [
        {"series": s, "path": folder / f"sub-{s}_ct.nii.gz", "vertebrae": folder / f"sub-{s}_seg-vert_msk.nii.gz"}
        for s in ("verse005", "verse008")
    ]
    for row in rows:
        row["split"] = "train"
    result = run(tmp_path, rows, "-L", "L3", "--vertebra-labels", "verse")
    assert result.exit_code == 0, result.output + result.stderr
    for row in rows:
        labels = level_slice_labels(tmp_path, row["series"], row["vertebrae"], "L3")
        assert (labels == VERSE["L3"]).sum() > 100, row["series"]


def test_verse_centroid_json_agrees_with_its_mask_on_real_pir_scans(tmp_path):
    # A VerSe-style JSON as VerSe's tools write it: each label's centre of mass in stored (P, I, R) voxels. verse008:
    # 2 x 1 x 1 mm voxels on slightly sheared axes.
    folder = realct("verse")
    rows = []
    for subject in ("verse008",):
        mask = nib.load(str(folder / f"sub-{subject}_seg-vert_msk.nii.gz"))
        assert nib.aff2axcodes(mask.affine) == ("P", "I", "R")
        data = np.asanyarray(mask.dataobj)
        centroids = [{"direction": ["P", "I", "R"]}]
        for label in (VERSE["L3"], VERSE["L4"]):
            x, y, z = (float(np.mean(axis)) for axis in np.nonzero(data == label))
            centroids.append({"label": label, "X": x, "Y": y, "Z": z})
        (tmp_path / f"{subject}.json").write_text(json.dumps(centroids))
        ct, vertebrae = folder / f"sub-{subject}_ct.nii.gz", mask.get_filename()
        rows.append({"series": f"{subject}_mask", "path": ct, "vertebrae": vertebrae, "split": "train"})
        rows.append(
            {"series": f"{subject}_json", "path": ct, "vertebrae": tmp_path / f"{subject}.json", "split": "train"}
        )
    result = run(tmp_path, rows, "-L", "L3", "L4", "--vertebra-labels", "verse")
    assert result.exit_code == 0, result.output + result.stderr
    table = meta(tmp_path).groupby("series").first()
    for subject in ("verse008",):
        for level in ("L3", "L4"):
            by_mask, by_json = (table.loc[f"{subject}_{kind}", f"ZOffset_{level}"] for kind in ("mask", "json"))
            assert abs(by_mask - by_json) < 1e-3, (subject, level, by_mask, by_json)


def test_dicom_series_with_a_nifti_multilabel_blanks_both_cut_vertebrae(tmp_path):
    # 20 JPEG 2000 slices at T11/T12: both vertebrae run off the series, one at each end.
    folder = realct("totalsegmentator")
    rows = [{"series": "d", "path": folder / "dicom_series", "vertebrae": folder / "example_seg_dicom.nii.gz"}]
    rows[0]["split"] = "train"
    result = run(tmp_path, rows, "-L", "T11", "T12", "--vertebra-labels", "totalsegmentator")
    assert result.exit_code == 0, result.output + result.stderr
    assert meta(tmp_path)[["ZOffset_T11", "ZOffset_T12"]].isna().all().all()
    assert "T11 (label 33 of example_seg_dicom.nii.gz) reaches the last slice" in result.stderr
    assert "T12 (label 32 of example_seg_dicom.nii.gz) reaches the first slice" in result.stderr

"""prepare-seg masks from NIfTI label volumes and per-tissue mask folders, matched through world coordinates."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import assert_user_error, invoke

from bodycomp_cli.errors import BodycompError
from bodycomp_cli.io.labels.label_map import parse_label_map

REALCT = Path(__file__).resolve().parents[2] / "shared" / "realct"
TS = REALCT / "totalsegmentator"
H, W, Z = 6, 8, 4  # display rows, columns, slices of the synthetic volumes


def display_volume(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(HU, labels) Z x H x W in display orientation: rows anterior->posterior, columns right->left."""
    rng = np.random.default_rng(seed)
    hu = rng.integers(-1000, 1000, size=(Z, H, W)).astype(np.int16)
    labels = rng.integers(0, 4, size=(Z, H, W)).astype(np.uint8)
    return hu, labels


def write_nifti(path: Path, display: np.ndarray, orientation: str, spacing=(1.0, 1.0, 2.0), z0: float = 10.0) -> Path:
    """Store a display-orientation Z x H x W array the way nibabel writes it, as RAS or LPS axes (x, y, z)."""
    xyz = np.transpose(display, (2, 1, 0))  # x: columns (right->left), y: rows (anterior->posterior), z
    sx, sy, sz = spacing
    # Display pixel (row r, column c) lies at RAS world x = -c * sx, y = -r * sy in both storages.
    if orientation == "RAS":  # x toward Right, y toward Anterior: both reversed
        data, affine = xyz[::-1, ::-1, :], np.diag([sx, sy, sz, 1.0])
        affine[:3, 3] = [-(xyz.shape[0] - 1) * sx, -(xyz.shape[1] - 1) * sy, z0]
    else:  # LPS: x toward Left, y toward Posterior, as displayed
        data, affine = xyz, np.diag([-sx, -sy, sz, 1.0])
        affine[:3, 3] = [0.0, 0.0, z0]
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), affine), str(path))
    return path


def prepare(tmp_path: Path, rows: list[dict], *extra: str):
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    return invoke(["prepare-seg", tmp_path / "m.csv", tmp_path / "out", "--size", str(W), *extra])


def arrays(tmp_path: Path) -> tuple[np.ndarray, np.ndarray]:
    return np.load(tmp_path / "out" / "train_images.npy"), np.load(tmp_path / "out" / "train_masks.npy")


@pytest.mark.parametrize("image_orientation", ["RAS", "LPS"])
@pytest.mark.parametrize("mask_orientation", ["RAS", "LPS"])
def test_nifti_label_volume_in_ras_or_lps_comes_out_in_display_orientation(
    tmp_path, image_orientation, mask_orientation
):
    hu, labels = display_volume()
    hu, labels = hu[:, :, :H], labels[:, :, :H]  # square slices: no resizing, exact comparison
    write_nifti(tmp_path / "ct.nii.gz", hu, image_orientation)
    write_nifti(tmp_path / "seg.nii.gz", labels, mask_orientation)
    rows = [{"image": "ct.nii.gz", "mask": "seg.nii.gz", "slice_index": 2, "split": "train"}]
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    result = invoke(["prepare-seg", tmp_path / "m.csv", tmp_path / "out", "--size", str(H)])
    assert result.exit_code == 0, result.output
    images, masks = arrays(tmp_path)
    np.testing.assert_array_equal(images[0, :, :, 0], hu[2])
    np.testing.assert_array_equal(masks[0, :, :, 0], labels[2])


def test_z_mm_names_the_slice_and_a_mask_on_a_coarser_grid_is_sampled_nearest(tmp_path):
    hu, labels = display_volume(1)
    hu = hu[:, :, :H]
    write_nifti(tmp_path / "ct.nii.gz", hu, "LPS", spacing=(1.0, 1.0, 2.0), z0=10.0)
    # A 2-D mask of one slice at z = 14 mm (slice 2), with 2 mm pixels: each mask pixel covers 2 x 2 image pixels.
    coarse = np.array([[1, 2, 3], [0, 1, 2], [3, 3, 1]], dtype=np.uint8)
    xyz = coarse.T[:, :, np.newaxis]
    affine = np.diag([-2.0, -2.0, 2.0, 1.0])
    affine[:3, 3] = [-0.5, -0.5, 14.0]  # voxel centres at image pixels 0.5, 2.5, 4.5: image pixel 2k, 2k+1 -> k
    nib.save(nib.Nifti1Image(np.ascontiguousarray(xyz), affine), str(tmp_path / "seg.nii.gz"))
    rows = [{"image": "ct.nii.gz", "mask": "seg.nii.gz", "z_mm": 14.0, "split": "train"}]
    result = prepare(tmp_path, rows, "--size", str(H))
    assert result.exit_code == 0, result.output
    images, masks = arrays(tmp_path)
    np.testing.assert_array_equal(images[0, :, :, 0], hu[2])
    np.testing.assert_array_equal(masks[0, :, :, 0], np.repeat(np.repeat(coarse, 2, axis=0), 2, axis=1))


def test_mask_on_another_slice_or_outside_the_image_is_refused(tmp_path):
    hu, labels = display_volume(2)
    write_nifti(tmp_path / "ct.nii.gz", hu[:, :, :H], "RAS", z0=10.0)
    write_nifti(tmp_path / "seg.nii.gz", labels[:1, :, :H], "RAS", z0=50.0)
    write_nifti(tmp_path / "far.nii.gz", labels[:, :, :H], "RAS", z0=10.0)
    far = nib.load(str(tmp_path / "far.nii.gz"))
    moved = far.affine.copy()
    moved[:2, 3] = [500.0, 500.0]
    nib.save(nib.Nifti1Image(np.asanyarray(far.dataobj), moved), str(tmp_path / "far.nii.gz"))
    rows = [{"image": "ct.nii.gz", "mask": "seg.nii.gz", "slice_index": 0, "split": "train"}]
    assert_user_error(prepare(tmp_path, rows, "--size", str(H)), "row 1", "seg.nii.gz", "another slice")
    rows[0]["mask"] = "far.nii.gz"
    assert_user_error(prepare(tmp_path, rows, "--size", str(H)), "row 1", "far.nii.gz", "does not overlap")
    assert not (tmp_path / "out").exists()


def test_label_map_maps_values_and_refuses_an_unmapped_present_label(tmp_path):
    hu, _ = display_volume(3)
    source = np.zeros((Z, H, H), dtype=np.uint8)
    source[1, :2] = 5
    source[1, 2:4] = 7
    source[1, 4, :3] = 2
    source[1, 5, :3] = 9
    write_nifti(tmp_path / "ct.nii.gz", hu[:, :, :H], "RAS")
    write_nifti(tmp_path / "seg.nii.gz", source, "RAS")
    rows = [{"image": "ct.nii.gz", "mask": "seg.nii.gz", "slice_index": 1, "split": "train"}]
    label_map = "muscle=1,2 subcutaneous_fat=5 visceral_fat=7"
    assert_user_error(prepare(tmp_path, rows, "--size", str(H), "--label-map", label_map), "row 1", "label 9")
    assert not (tmp_path / "out").exists()
    result = prepare(tmp_path, rows, "--size", str(H), "--label-map", label_map, "--unmapped", "background")
    assert result.exit_code == 0, result.output
    expected = np.zeros((H, H), dtype=np.uint8)
    expected[:2], expected[2:4], expected[4, :3] = 2, 3, 1
    np.testing.assert_array_equal(arrays(tmp_path)[1][0, :, :, 0], expected)


def test_label_map_text_and_presets():
    assert parse_label_map("muscle=1,2 subcutaneous_fat=5 visceral_fat=7").mapping == {1: 1, 2: 1, 5: 2, 7: 3}
    preset = parse_label_map("totalsegmentator").mapping
    assert preset == {"skeletal_muscle": 1, "subcutaneous_fat": 2, "torso_fat": 3}
    assert parse_label_map(None).mapping is None
    with pytest.raises(BodycompError, match="not CLASS=LABEL"):
        parse_label_map("fat=1")
    with pytest.raises(BodycompError, match="two classes"):
        parse_label_map("muscle=1 visceral_fat=1")
    # A part runs to the next CLASS=, so names keep their spaces; ';' may separate parts too.
    spaced = parse_label_map("muscle=Skeletal muscle visceral_fat=Visceral fat,VAT; subcutaneous_fat=SAT;").mapping
    assert spaced == {"skeletal_muscle": 1, "visceral_fat": 3, "vat": 3, "sat": 2}
    assert parse_label_map("sliceomatic-alberta").mapping == {1: 1, 2: 1, 5: 3, 7: 2}  # IMAT in the muscle compartment
    for bad in ("muscle=1 fat=2", "muscle=", "junk muscle=1", ";"):
        with pytest.raises(BodycompError, match="not CLASS=LABEL"):
            parse_label_map(bad)


def test_bad_label_files_give_one_line_and_no_output(tmp_path):
    hu, labels = display_volume(4)
    write_nifti(tmp_path / "ct.nii.gz", hu[:, :, :H], "RAS")
    write_nifti(tmp_path / "seg.nii.gz", labels[:, :, :H], "RAS")
    data = (tmp_path / "seg.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    rows = [{"image": "ct.nii.gz", "mask": "cut.nii.gz", "slice_index": 1, "split": "train"}]
    assert_user_error(prepare(tmp_path, rows, "--size", str(H)), "row 1", "cut.nii.gz")
    rows[0]["mask"] = "seg.nii.gz"
    del rows[0]["slice_index"]
    assert_user_error(prepare(tmp_path, rows, "--size", str(H)), "row 1", "give z_mm or slice_index")
    (tmp_path / "tissues").mkdir()
    write_nifti(tmp_path / "tissues" / "skeletal_muscle.nii.gz", (labels[:, :, :H] == 1).astype(np.uint8), "RAS")
    write_nifti(tmp_path / "tissues" / "bone.nii.gz", (labels[:, :, :H] == 2).astype(np.uint8), "RAS")
    rows = [{"image": "ct.nii.gz", "mask": "tissues", "slice_index": 1, "split": "train"}]
    result = prepare(tmp_path, rows, "--size", str(H), "--label-map", "totalsegmentator")
    assert_user_error(result, "row 1", "bone.nii.gz", "'bone'")
    assert sum(line.startswith("error:") for line in result.stderr.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def realct_or_skip() -> None:
    if not TS.is_dir():
        if os.environ.get("CI"):
            raise AssertionError(f"{TS} is missing and CI is set")
        pytest.skip(f"{TS} absent (the repository's sibling shared/realct); outside CI this test skips")


def test_totalsegmentator_tissue_masks_match_their_image_pixel_for_pixel(tmp_path):
    realct_or_skip()
    ct = nib.load(str(TS / "example_ct_sm.nii.gz"))
    assert nib.aff2axcodes(ct.affine) == ("R", "A", "S")
    k = 15
    # RAS array (x toward Right, y toward Anterior): display rows A->P reverse y, columns R->L reverse x.
    expected_image = np.asanyarray(ct.dataobj)[:, :, k].T[::-1, ::-1]
    expected_mask = np.zeros(expected_image.shape, dtype=np.uint8)
    for name, label in (("skeletal_muscle", 1), ("subcutaneous_fat", 2), ("torso_fat", 3)):
        tissue = np.asanyarray(nib.load(str(TS / "tissue_types" / f"{name}.nii.gz")).dataobj)[:, :, k].T[::-1, ::-1]
        expected_mask[tissue == 1] = label
    assert {1, 2, 3} <= set(np.unique(expected_mask).tolist())
    import bodycomp_cli.prepare.seg as seg

    row = seg.SegRow(0, "a", TS / "example_ct_sm.nii.gz", TS / "tissue_types", "train", slice_index=k)
    image, mask = seg.load_pair(row, "row 1", seg.LABELS[False], parse_label_map("totalsegmentator"))
    np.testing.assert_array_equal(image, expected_image)
    np.testing.assert_array_equal(mask, expected_mask)
    # And end to end through the CLI (resized to a square): exit 0, one row, all four classes kept.
    rows = [{"image": str(TS / "example_ct_sm.nii.gz"), "mask": str(TS / "tissue_types"), "slice_index": k}]
    pd.DataFrame([{**rows[0], "split": "train"}]).to_csv(tmp_path / "m.csv", index=False)
    result = invoke(
        ["prepare-seg", tmp_path / "m.csv", tmp_path / "out", "--size", "64", "--label-map", "totalsegmentator"]
    )
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "out" / "train_masks.npy").shape == (1, 64, 64, 1)
    assert set(np.unique(np.load(tmp_path / "out" / "train_masks.npy")).tolist()) == {0, 1, 2, 3}


def test_masks_that_give_one_pixel_two_classes_are_refused(tmp_path):
    """One rule for every source (paint_class): a pixel two masks claim for different classes is refused."""
    from bodycomp_cli.io.labels.label_map import paint_class
    from bodycomp_cli.io.labels.mask_folder import read_mask_folder

    classes = np.zeros((2, 3), dtype=np.uint8)
    paint_class(classes, np.array([[1, 1, 0], [0, 0, 0]], bool), 1, "a")
    paint_class(classes, np.array([[1, 0, 0], [0, 0, 1]], bool), 1, "b")  # the same class again: fine
    np.testing.assert_array_equal(classes, [[1, 1, 0], [0, 0, 1]])
    with pytest.raises(BodycompError, match=r"^c overlaps another class on 1 pixels$"):
        paint_class(classes, np.array([[0, 1, 1], [0, 0, 0]], bool), 2, "c")
    folder = tmp_path / "tissues"
    folder.mkdir()
    muscle = np.zeros((4, 4, 2), dtype=np.uint8)
    muscle[1:3, 1:3, 0] = 1
    fat = np.zeros_like(muscle)
    fat[2:4, 2:4, 0] = 1  # shares voxel (2, 2, 0) with muscle
    for name, data in (("skeletal_muscle", muscle), ("subcutaneous_fat", fat)):
        nib.save(nib.Nifti1Image(data, np.eye(4)), str(folder / f"{name}.nii.gz"))
    with pytest.raises(BodycompError, match=r"row 1: .*subcutaneous_fat\.nii\.gz overlaps another class on 1 pixels"):
        read_mask_folder(folder, parse_label_map("totalsegmentator"), "row 1")

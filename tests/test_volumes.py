"""read_volume: npz, DICOM series folders and NIfTI files all come back as HU, display orientation, z ascending."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dicom_export import ct_dataset

from bodycomp_cli.errors import BodycompError
from bodycomp_cli.io.volumes import read_volume


def make_display_volume(z: int = 5, h: int = 6, w: int = 7, seed: int = 0) -> np.ndarray:
    """A small int16 HU volume whose every voxel differs, so any flip or transpose shows."""
    rng = np.random.default_rng(seed)
    return rng.permutation(np.arange(-1000, -1000 + z * h * w)).reshape(z, h, w).astype(np.int16)


def write_dicom_series(
    folder: Path,
    hu: np.ndarray,
    z_mm: np.ndarray,
    orientation: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
    series_uid: str | None = None,
    seed: int = 0,
) -> list[Path]:
    """Write a display-oriented HU volume as a DICOM series, stored the way `orientation` says.

    Files are named in a shuffled order and InstanceNumber is not in z order; pixels are stored
    unsigned with RescaleIntercept -1024, as many scanners do.
    """
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    rng = np.random.default_rng(seed)
    names = rng.permutation(len(z_mm))
    instance_numbers = rng.permutation(len(z_mm)) + 1
    row_dir, col_dir = np.array(orientation[:3]), np.array(orientation[3:])
    paths = []
    for k, z in enumerate(z_mm):
        stored = hu[k]
        # Undo the display conversion: stored columns run along row_dir, stored rows along col_dir.
        if abs(row_dir[1]) > abs(row_dir[0]):
            stored = stored.T
            row_dir_x, col_dir_y = col_dir[0], row_dir[1]
        else:
            row_dir_x, col_dir_y = row_dir[0], col_dir[1]
        if row_dir_x < 0:
            stored = stored[:, ::-1]
        if col_dir_y < 0:
            stored = stored[::-1, :]
        ds = ct_dataset(
            stored,
            z,
            series_uid=series_uid,
            instance=int(instance_numbers[k]),
            orientation=orientation,
            pixel_spacing=(0.5, 0.75),
        )
        path = folder / f"IM{names[k]:04d}"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def test_npz_is_sorted_by_z(tmp_path):
    hu = make_display_volume()
    z = np.array([4.0, 0.0, 2.0, 1.0, 3.0])
    np.savez(tmp_path / "v.npz", hu=hu, z_mm=z)
    volume = read_volume(tmp_path / "v.npz")
    order = np.argsort(z)
    np.testing.assert_array_equal(volume.z_mm, z[order])
    np.testing.assert_array_equal(volume.hu, hu[order])
    assert volume.hu.dtype == np.int16 and volume.modality is None


def test_dicom_series_reads_exact_hu_in_z_order(tmp_path):
    hu = make_display_volume()
    z = np.array([-30.0, -27.5, -25.0, -22.5, -20.0])
    write_dicom_series(tmp_path / "series", hu, z)
    (tmp_path / "series" / "notes.txt").write_text("exported by PACS\n")
    with pytest.warns(UserWarning, match="notes.txt: not a DICOM file"):
        volume = read_volume(tmp_path / "series")
    np.testing.assert_array_equal(volume.z_mm, z)
    np.testing.assert_array_equal(volume.hu, hu)
    assert volume.hu.dtype == np.int16
    assert volume.pixel_spacing == (0.5, 0.75)
    assert volume.modality == "CT"


@pytest.mark.parametrize(
    "orientation",
    [(-1, 0, 0, 0, 1, 0), (1, 0, 0, 0, -1, 0), (-1, 0, 0, 0, -1, 0), (0, 1, 0, 1, 0, 0)],
    ids=["cols-flipped", "rows-flipped", "both-flipped", "transposed"],
)
def test_dicom_orientation_is_converted_to_display(tmp_path, orientation):
    hu = make_display_volume(h=6, w=6)
    z = np.arange(5) * 2.0
    write_dicom_series(tmp_path / "s", hu, z, orientation=orientation)
    volume = read_volume(tmp_path / "s")
    np.testing.assert_array_equal(volume.hu, hu)
    np.testing.assert_array_equal(volume.z_mm, z)


def test_dicom_non_axial_and_two_series_are_refused(tmp_path):
    hu = make_display_volume()
    write_dicom_series(tmp_path / "sag", hu, np.arange(5.0), orientation=(0, 1, 0, 0, 0, -1))
    with pytest.raises(BodycompError, match="not an axial series"):
        read_volume(tmp_path / "sag")
    write_dicom_series(tmp_path / "mixed", hu, np.arange(5.0), seed=1)
    write_dicom_series(tmp_path / "mixed2", hu, np.arange(5.0) + 10, seed=2)
    for path in (tmp_path / "mixed2").iterdir():
        path.rename(tmp_path / "mixed" / f"B{path.name}")
    with pytest.raises(BodycompError, match="2 DICOM series"):
        read_volume(tmp_path / "mixed")


def nifti_from_display(
    hu: np.ndarray, z_mm: np.ndarray, signs: tuple[int, int, int], spacing=(0.8, 0.6)
) -> nib.Nifti1Image:
    """Store a display volume (z ascending, rows A->P, cols R->L) in NIfTI voxel order with a diagonal affine.

    signs[i] = +1 means voxel axis i runs toward RAS+ (Right, Anterior, Superior), -1 the opposite.
    """
    sx, sy, sz = signs
    row_mm, col_mm = spacing
    step = float(z_mm[1] - z_mm[0])
    data = hu
    if sz < 0:
        data = data[::-1]
    if sy > 0:  # display rows run toward Posterior
        data = data[:, ::-1]
    if sx > 0:  # display columns run toward Left
        data = data[:, :, ::-1]
    data = np.ascontiguousarray(data.transpose(2, 1, 0))
    affine = np.diag([sx * col_mm, sy * row_mm, sz * step, 1.0])
    affine[2, 3] = z_mm[0] if sz > 0 else z_mm[-1]
    return nib.Nifti1Image(data, affine)


@pytest.mark.parametrize("signs", [(-1, -1, -1), (-1, -1, 1), (1, 1, 1)], ids=["flip-xyz", "lps", "ras"])
def test_nifti_reads_back_like_the_npz(tmp_path, signs):
    hu = make_display_volume()
    z = np.array([10.0, 12.5, 15.0, 17.5, 20.0])
    np.savez(tmp_path / "v.npz", hu=hu, z_mm=z)
    nib.save(nifti_from_display(hu, z, signs), tmp_path / "v.nii.gz")
    from_nifti = read_volume(tmp_path / "v.nii.gz")
    from_npz = read_volume(tmp_path / "v.npz")
    np.testing.assert_array_equal(from_nifti.hu, from_npz.hu)
    np.testing.assert_allclose(from_nifti.z_mm, from_npz.z_mm)
    assert from_nifti.pixel_spacing == pytest.approx((0.8, 0.6))


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"hu": np.zeros((2, 4, 4), np.int16)}, "no z_mm"),
        ({"hu": np.zeros((2, 4, 4), np.int16), "z_mm": np.arange(3.0)}, "z_mm has 3 values but hu has 2"),
        ({"hu": np.zeros((4, 4), np.int16), "z_mm": np.arange(4.0)}, "not 3-D"),
        ({"hu": np.zeros((2, 4, 4), np.uint8), "z_mm": np.arange(2.0)}, "cannot hold HU"),
        ({"hu": np.zeros((0, 4, 4), np.int16), "z_mm": np.arange(0.0)}, "volume is empty"),
    ],
)
def test_bad_npz_is_refused(tmp_path, arrays, message):
    np.savez(tmp_path / "v.npz", **arrays)
    with pytest.raises(BodycompError, match=message):
        read_volume(tmp_path / "v.npz")


def test_scaled_hu_stays_int16_only_while_whole():
    from bodycomp_cli.io.volumes import stack_scaled_hu

    stored = [np.array([[0, 1024]], np.uint16), np.array([[2000, 3]], np.uint16)]
    whole = stack_scaled_hu(iter(stored), 2, [1.0, 1.0], [-1024.0, -1024.0])
    assert whole.dtype == np.int16
    np.testing.assert_array_equal(whole, [[[-1024, 0]], [[976, -1021]]])
    half = stack_scaled_hu(iter(stored), 2, [1.0, 0.5], [-1024.0, -1024.0])
    assert half.dtype == np.float32
    np.testing.assert_array_equal(half, [[[-1024, 0]], [[-24, -1022.5]]])


def test_scaled_nifti_matches_nibabel_scaling(tmp_path):
    hu = (np.arange(7 * 6 * 5) % 256 - 1024).reshape(7, 6, 5).astype(np.float64)
    image = nib.Nifti1Image(hu, np.diag([-1.0, -1.0, 2.0, 1.0]))
    image.header.set_data_dtype(np.uint8)  # forces nibabel to store scl_slope / scl_inter
    nib.save(image, tmp_path / "scaled.nii")
    expected = nib.load(tmp_path / "scaled.nii").get_fdata().transpose(2, 1, 0)  # LPS voxels: (z, y, x) is display
    np.testing.assert_allclose(read_volume(tmp_path / "scaled.nii").hu, expected, rtol=0, atol=1e-3)


# A NIfTI grid is resliced along whichever voxel axis is nearest the patient's z, so what counts is the tilt
# left after that: 20 degrees stays 20, 50 leaves 40 (refused, as for DICOM), 90 is a grid stored coronally.
@pytest.mark.parametrize("rotation_deg, residual_tilt", [(20.0, None), (50.0, 40), (90.0, None)])
def test_oblique_nifti_is_refused_beyond_the_dicom_tilt_limit(tmp_path, rotation_deg, residual_tilt):
    hu = np.zeros((4, 6, 6), dtype=np.int16)  # stored as x, y, z
    angle = np.radians(rotation_deg)
    affine = np.eye(4)
    affine[1:3, 1:3] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]  # about the x axis
    nib.save(nib.Nifti1Image(hu, affine), tmp_path / "tilted.nii.gz")
    if residual_tilt is None:
        assert read_volume(tmp_path / "tilted.nii.gz").hu.shape == (6, 6, 4)
    else:
        message = rf"tilted.nii.gz: not an axial volume \(slices tilted {residual_tilt} degrees"
        with pytest.raises(BodycompError, match=message):
            read_volume(tmp_path / "tilted.nii.gz")

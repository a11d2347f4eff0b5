"""prepare-seg end to end on tiny slices: arrays, order, resizing, splits, inputs and refusals."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import assert_user_error, invoke
from test_volumes import write_dicom_series

import bodycomp_cli.prepare.seg as seg
from bodycomp_cli.io.atomic import TEMP_PREFIX

S = 16


def slice_pair(folder: Path, name: str, shape=(S, S), seed: int = 0, labels: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(-1024, 2000, size=shape).astype(np.int16)
    mask = rng.integers(0, labels, size=shape).astype(np.uint8)
    np.save(folder / f"{name}_img.npy", image)
    np.save(folder / f"{name}_mask.npy", mask)
    return image, mask


def manifest(folder: Path, rows: list[dict], name: str = "m.csv") -> Path:
    pd.DataFrame(rows).to_csv(folder / name, index=False)
    return folder / name


def run(folder: Path, path: Path, *extra: str):
    return invoke(["prepare-seg", path, folder / "out", "--size", str(S), *extra])


def test_arrays_keep_manifest_order_within_each_split(tmp_path, monkeypatch):
    monkeypatch.setattr(seg, "CHUNK_ROWS", 2)  # several chunk boundaries with 5 rows
    pairs = {name: slice_pair(tmp_path, name, seed=i) for i, name in enumerate("abcde")}
    splits = {"a": "train", "b": "val", "c": "train", "d": "train", "e": "val"}
    rows = [{"id": f"id-{n}", "image": f"{n}_img.npy", "mask": f"{n}_mask.npy", "split": s} for n, s in splits.items()]
    result = run(tmp_path, manifest(tmp_path, rows))
    assert result.exit_code == 0, result.stderr
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["dataset.json"]
        + [f"{split}_{kind}" for split in ("train", "val") for kind in ("images.npy", "masks.npy", "index.csv")]
    )
    for split, names in (("train", "acd"), ("val", "be")):
        images = np.load(out / f"{split}_images.npy")
        masks = np.load(out / f"{split}_masks.npy")
        assert images.shape == masks.shape == (len(names), S, S, 1)
        assert images.dtype == np.int16 and masks.dtype == np.uint8
        for row, name in enumerate(names):
            np.testing.assert_array_equal(images[row, :, :, 0], pairs[name][0])  # S x S: copied unchanged
            np.testing.assert_array_equal(masks[row, :, :, 0], pairs[name][1])
        index = pd.read_csv(out / f"{split}_index.csv")
        assert list(index.columns) == ["row", "id", "image", "mask"]
        assert list(index["id"]) == [f"id-{n}" for n in names]
        assert list(index["image"]) == [str(tmp_path / f"{n}_img.npy") for n in names]


def test_resize_is_antialiased_bilinear_for_images_and_nearest_for_masks(tmp_path):
    checker = np.where(np.indices((2 * S, 2 * S)).sum(axis=0) % 2 == 0, 1000, -1000).astype(np.int16)
    np.save(tmp_path / "img.npy", checker[..., np.newaxis])  # H x W x 1 is accepted
    blocks = np.kron(np.arange(16).reshape(4, 4) % 4, np.ones((8, 8))).astype(np.uint8)
    iio.imwrite(tmp_path / "mask.png", blocks)
    result = run(tmp_path, manifest(tmp_path, [{"image": "img.npy", "mask": "mask.png", "split": "train"}]))
    assert result.exit_code == 0, result.stderr
    image = np.load(tmp_path / "out" / "train_images.npy")[0, :, :, 0]
    # Without antialiasing a 2x shrink of a +-1000 checkerboard keeps +-1000; with it, it averages to 0.
    assert np.abs(image[1:-1, 1:-1]).max() == 0
    mask = np.load(tmp_path / "out" / "train_masks.npy")[0, :, :, 0]
    np.testing.assert_array_equal(mask, np.kron(np.arange(16).reshape(4, 4) % 4, np.ones((4, 4))))


def test_float_images_are_rounded_and_clipped_to_int16(tmp_path):
    np.save(tmp_path / "img.npy", np.array([[12.6, -3.5], [40000.0, -50000.0]], dtype=np.float64))
    np.save(tmp_path / "mask.npy", np.zeros((2, 2), np.uint8))
    result = invoke(
        ["prepare-seg", manifest(tmp_path, [{"image": "img.npy", "mask": "mask.npy"}]), tmp_path / "p", "--size", "2"]
    )
    assert result.exit_code == 0, result.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "p" / "train_images.npy")[0, :, :, 0], [[13, -4], [32767, -32768]])


def test_split_by_group_keeps_groups_together(tmp_path):
    slice_pair(tmp_path, "x")
    groups = ["p1", "p1", "p2", "p3", "p3", "p4", "p5", "p5", "p5", "p6"]
    rows = [{"image": "x_img.npy", "mask": "x_mask.npy", "group": g} for g in groups]
    result = run(tmp_path, manifest(tmp_path, rows), "--val-frac", "0.5", "--seed", "4")
    assert result.exit_code == 0, result.stderr
    val_ids = set(pd.read_csv(tmp_path / "out" / "val_index.csv")["id"])
    train_ids = set(pd.read_csv(tmp_path / "out" / "train_index.csv")["id"])
    assert len(val_ids | train_ids) == 10 and not val_ids & train_ids  # default ids: row numbers 1..10
    val_groups = {groups[i - 1] for i in val_ids}
    assert len(val_groups) == 3 and not val_groups & {groups[i - 1] for i in train_ids}
    assert np.load(tmp_path / "out" / "val_images.npy").shape[0] == len(val_ids)


def test_thoracic_allows_labels_0_to_2_only(tmp_path):
    slice_pair(tmp_path, "t", labels=3)
    slice_pair(tmp_path, "a", labels=4, seed=1)
    thoracic = manifest(tmp_path, [{"image": "t_img.npy", "mask": "t_mask.npy"}], "t.csv")
    assert invoke(["prepare-seg", thoracic, tmp_path / "t", "--size", str(S), "-t"]).exit_code == 0
    abdominal = manifest(tmp_path, [{"image": "a_img.npy", "mask": "a_mask.npy"}], "a.csv")
    assert_user_error(
        invoke(["prepare-seg", abdominal, tmp_path / "a", "--size", str(S), "--thoracic"]),
        "a.csv row 1",
        "a_mask.npy",
        "labels 3 outside the allowed 0, 1, 2",
    )
    assert invoke(["prepare-seg", abdominal, tmp_path / "a", "--size", str(S)]).exit_code == 0


def test_dicom_and_nifti_images(tmp_path):
    hu = np.arange(S * S, dtype=np.int16).reshape(1, S, S) - 100
    (path,) = write_dicom_series(tmp_path / "dcm", hu, np.array([12.0]), orientation=(-1, 0, 0, 0, 1, 0))
    # A 2-D NIfTI as DICOM converters write it: voxel axes (x, y), affine flipping x and y (LPS -> RAS).
    nib.save(nib.Nifti1Image(np.ascontiguousarray(hu[0].T), np.diag([-1.0, -1.0, 1.0, 1.0])), tmp_path / "s.nii.gz")
    np.save(tmp_path / "mask.npy", np.ones((S, S), np.uint8))
    rows = [{"image": str(path), "mask": "mask.npy"}, {"image": "s.nii.gz", "mask": "mask.npy"}]
    result = run(tmp_path, manifest(tmp_path, rows), "--val-frac", "0")
    assert result.exit_code == 0, result.stderr
    images = np.load(tmp_path / "out" / "train_images.npy")[..., 0]
    np.testing.assert_array_equal(images[0], hu[0])
    np.testing.assert_array_equal(images[1], hu[0])


def _bad_cases(tmp: Path) -> dict[str, tuple[object, tuple[str, ...]]]:
    slice_pair(tmp, "ok")
    np.save(tmp / "big_mask.npy", np.zeros((S + 2, S), np.uint8))
    np.save(tmp / "labels_mask.npy", np.array([[0, 5], [7, 1]], np.uint8).repeat(S // 2, 0).repeat(S // 2, 1))
    np.save(tmp / "u8_img.npy", np.zeros((S, S), np.uint8))
    np.save(tmp / "bool_img.npy", np.zeros((S, S), bool))
    nan = np.zeros((S, S), np.float32)
    nan[3, 4] = np.nan
    np.save(tmp / "nan_img.npy", nan)
    np.save(tmp / "inf_img.npy", np.where(np.eye(S) > 0, np.inf, 0.0))
    np.save(tmp / "vol_img.npy", np.zeros((2, S, S), np.int16))
    np.save(tmp / "vol_mask.npy", np.zeros((2, S, S), np.uint8))
    (tmp / "empty.csv").write_text("image,mask\n")
    iio.imwrite(tmp / "rgb_mask.png", np.zeros((S, S, 3), np.uint8))
    iio.imwrite(tmp / "cut_mask.png", np.ones((S, S), np.uint8))
    (tmp / "cut_mask.png").write_bytes((tmp / "cut_mask.png").read_bytes()[:-20])  # pixels intact, end cut off

    def row(image="ok_img.npy", mask="ok_mask.npy", **extra):
        return [{"image": image, "mask": mask, **extra}]

    return {
        "shape mismatch": (row(mask="big_mask.npy"), ("row 1", "(16, 16)", "big_mask.npy", "(18, 16)")),
        "labels out of set": (
            row(mask="labels_mask.npy"),
            ("row 1", "labels_mask.npy", "labels 5, 7", "found 0, 1, 5, 7"),
        ),
        "uint8 image": (row(image="u8_img.npy"), ("row 1", "u8_img.npy", "uint8 cannot hold HU")),
        "bool image": (row(image="bool_img.npy"), ("row 1", "bool_img.npy", "cannot hold HU")),
        "NaN image": (row(image="nan_img.npy"), ("row 1", "nan_img.npy", "NaN or inf")),
        "inf image": (row(image="inf_img.npy"), ("row 1", "inf_img.npy", "NaN or inf")),
        "3-D image": (row(image="vol_img.npy"), ("row 1", "vol_img.npy", "image is not 2-D")),
        "3-D mask": (row(mask="vol_mask.npy"), ("row 1", "vol_mask.npy", "mask is not 2-D")),
        "RGB PNG mask": (row(mask="rgb_mask.png"), ("row 1", "rgb_mask.png", "not 8-bit grayscale (mode RGB")),
        "truncated PNG mask": (row(mask="cut_mask.png"), ("row 1", "cut_mask.png", "corrupt or truncated PNG")),
        "missing column": ([{"image": "ok_img.npy"}], ("m.csv", "missing column 'mask'")),
        "empty manifest": (tmp / "empty.csv", ("empty.csv", "empty")),
        "missing file": (row() + row(image="gone.npy"), ("row 2", "image file not found", "gone.npy")),
        "duplicate ids": (row(id="a") + row(id="a"), ("row 2", "duplicate id 'a'", "row 1")),
        "bad split": (row(split="test"), ("row 1", "'test'", "train, val")),
    }


@pytest.mark.parametrize(
    "case",
    [
        "shape mismatch",
        "labels out of set",
        "uint8 image",
        "bool image",
        "NaN image",
        "inf image",
        "3-D image",
        "3-D mask",
        "RGB PNG mask",
        "truncated PNG mask",
        "missing column",
        "empty manifest",
        "missing file",
        "duplicate ids",
        "bad split",
    ],
)
def test_refusals_exit_2_and_leave_nothing(tmp_path, case):
    rows, fragments = _bad_cases(tmp_path)[case]
    path = rows if isinstance(rows, Path) else manifest(tmp_path, rows)
    assert_user_error(run(tmp_path, path), *fragments)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(f"{TEMP_PREFIX}*"))

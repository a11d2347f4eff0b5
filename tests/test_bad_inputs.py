"""The bad-input suite (issue 6): every command refuses bad input with exit 2 and one line, leaving nothing.

Each case builds tiny data in tmp_path, breaks one thing, runs the CLI in-process and checks:
exit code 2, no traceback, exactly one `error:` line (the last line on stderr) naming the file, row
or column, and a tmp_path that is byte-for-byte as it was before the command ran (no output folder, no
temp folder, no run folder, and an existing output folder left untouched).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest
from conftest import assert_user_error, invoke
from helpers_train import make_seg_data, make_select_data
from test_volumes import write_dicom_series

S = 16  # pixels of the prepare-* slices
TRAIN_FAST = ["--encoder", "resnet18", "--image-size", "32", "-e", "1", "-b", "2", "--workers", "0", "--quiet"]
SELECT_FAST = ["--arch", "resnet18", "--image-size", "32", "-e", "1", "-b", "2", "--workers", "0", "--quiet"]


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under root with its size and modification time: any write shows up as a difference."""
    return {
        str(path.relative_to(root)): (path.stat().st_size if path.is_file() else -1, path.stat().st_mtime_ns)
        for path in root.rglob("*")
    }


def refused(root: Path, args: list, *fragments: str) -> str:
    """Run the CLI; assert exit 2, one error line naming every fragment, and nothing written under root."""
    before = snapshot(root)
    result = invoke(args)
    assert_user_error(result, *fragments)
    lines = [line for line in (result.stderr or "").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], f"not one final error line: {lines}"
    for fragment in fragments:
        assert fragment in errors[0], f"{fragment!r} not in the error line {errors[0]!r}"
    after = snapshot(root)
    assert after == before, f"left behind or changed: {sorted(set(after.items()) ^ set(before.items()))}"
    return errors[0]


def case_in(registry: dict[str, Callable], name: str) -> Callable:
    """Register a case builder under its test id (the parametrize ids are the registry's keys)."""

    def add(builder: Callable) -> Callable:
        registry[name] = builder
        return builder

    return add


# ------------------------------------------------------------------------------------------ prepare-seg


def seg_rows(folder: Path, n: int = 3) -> list[dict[str, str]]:
    """n valid labelled slices (int16 HU .npy images, uint8 .npy masks) and their manifest rows."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        np.save(folder / f"img{i}.npy", rng.integers(-1000, 1000, (S, S)).astype(np.int16))
        np.save(folder / f"mask{i}.npy", rng.integers(0, 4, (S, S)).astype(np.uint8))
        rows.append({"id": f"s{i}", "image": f"img{i}.npy", "mask": f"mask{i}.npy"})
    return rows


def write_csv(path: Path, rows: list[dict], columns: list[str] | None = None) -> Path:
    pd.DataFrame(rows, columns=columns).to_csv(path, index=False)
    return path


SEG_CASES: dict[str, Callable[[Path, list[dict]], list[str]]] = {}


@case_in(SEG_CASES, "shape mismatch")
def _seg_shape_mismatch(folder: Path, rows: list[dict]) -> list[str]:
    np.save(folder / "mask1.npy", np.zeros((S, S + 2), np.uint8))
    return ["row 2", "img1.npy", "mask1.npy"]


@case_in(SEG_CASES, "uint8 HU")
def _seg_uint8_image(folder: Path, rows: list[dict]) -> list[str]:
    np.save(folder / "img0.npy", np.zeros((S, S), np.uint8))
    return ["row 1", "img0.npy", "uint8"]


@case_in(SEG_CASES, "bool HU")
def _seg_bool_image(folder: Path, rows: list[dict]) -> list[str]:
    np.save(folder / "img2.npy", np.zeros((S, S), bool))
    return ["row 3", "img2.npy", "bool"]


@case_in(SEG_CASES, "float mask with fractions")
def _seg_fractional_mask(folder: Path, rows: list[dict]) -> list[str]:
    np.save(folder / "mask0.npy", np.full((S, S), 1.5, np.float32))
    return ["row 1", "mask0.npy", "fraction"]


@case_in(SEG_CASES, "label out of range")
def _seg_label_out_of_range(folder: Path, rows: list[dict]) -> list[str]:
    mask = np.zeros((S, S), np.uint8)
    mask[3, 3] = 7
    np.save(folder / "mask2.npy", mask)
    return ["row 3", "mask2.npy", "7"]


@case_in(SEG_CASES, "NaN image")
def _seg_nan_image(folder: Path, rows: list[dict]) -> list[str]:
    image = np.zeros((S, S), np.float32)
    image[5, 5] = np.nan
    np.save(folder / "img1.npy", image)
    return ["row 2", "img1.npy", "NaN"]


@case_in(SEG_CASES, "inf image")
def _seg_inf_image(folder: Path, rows: list[dict]) -> list[str]:
    image = np.zeros((S, S), np.float64)
    image[0, 0] = -np.inf
    np.save(folder / "img0.npy", image)
    return ["row 1", "img0.npy", "inf"]


@case_in(SEG_CASES, "truncated npy")
def _seg_truncated_npy(folder: Path, rows: list[dict]) -> list[str]:
    data = (folder / "img1.npy").read_bytes()
    (folder / "img1.npy").write_bytes(data[: len(data) // 2])
    return ["row 2", "img1.npy"]


@case_in(SEG_CASES, "corrupt png")
def _seg_corrupt_png_mask(folder: Path, rows: list[dict]) -> list[str]:
    (folder / "mask0.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    rows[0]["mask"] = "mask0.png"
    return ["row 1", "mask0.png"]


@case_in(SEG_CASES, "truncated png")
def _seg_truncated_png_mask(folder: Path, rows: list[dict]) -> list[str]:
    iio.imwrite(folder / "mask1.png", np.ones((S, S), np.uint8))
    data = (folder / "mask1.png").read_bytes()
    (folder / "mask1.png").write_bytes(data[: len(data) // 2])
    rows[1]["mask"] = "mask1.png"
    return ["row 2", "mask1.png"]


@case_in(SEG_CASES, "png without its end")
def _seg_png_without_end(folder: Path, rows: list[dict]) -> list[str]:
    # Cut inside the last chunks: pixels may still decode, but the file is truncated (CRC and IEND gone).
    iio.imwrite(folder / "mask0.png", np.ones((S, S), np.uint8))
    data = (folder / "mask0.png").read_bytes()
    (folder / "mask0.png").write_bytes(data[: len(data) - 20])
    rows[0]["mask"] = "mask0.png"
    return ["row 1", "mask0.png"]


@case_in(SEG_CASES, "RGB png")
def _seg_rgb_png_mask(folder: Path, rows: list[dict]) -> list[str]:
    iio.imwrite(folder / "mask2.png", np.zeros((S, S, 3), np.uint8))
    rows[2]["mask"] = "mask2.png"
    return ["row 3", "mask2.png"]


@case_in(SEG_CASES, "missing file")
def _seg_missing_file(folder: Path, rows: list[dict]) -> list[str]:
    (folder / "img2.npy").unlink()
    return ["row 3", "img2.npy"]


@case_in(SEG_CASES, "duplicate ids")
def _seg_duplicate_ids(folder: Path, rows: list[dict]) -> list[str]:
    rows[2]["id"] = "s0"
    return ["row 3", "duplicate", "s0"]


@case_in(SEG_CASES, "image not 2-D")
def _seg_not_2d(folder: Path, rows: list[dict]) -> list[str]:
    np.save(folder / "img0.npy", np.zeros((2, S, S), np.int16))
    return ["row 1", "img0.npy", "2-D"]


@case_in(SEG_CASES, "unknown split")
def _seg_unknown_split(folder: Path, rows: list[dict]) -> list[str]:
    for row, split in zip(rows, ("train", "val", "tset"), strict=True):
        row["split"] = split
    return ["row 3", "split", "tset"]


@pytest.mark.parametrize("case", SEG_CASES)
def test_prepare_seg_refuses(tmp_path: Path, case: str) -> None:
    rows = seg_rows(tmp_path)
    fragments = SEG_CASES[case](tmp_path, rows)
    manifest = write_csv(tmp_path / "seg.csv", rows)
    refused(tmp_path, ["prepare-seg", manifest, tmp_path / "out", "--size", S], "seg.csv", *fragments)


def test_prepare_seg_thoracic_refuses_visceral_fat_label(tmp_path: Path) -> None:
    rows = seg_rows(tmp_path)  # random masks hold label 3, which is fine without -t
    for i in range(3):
        np.save(tmp_path / f"mask{i}.npy", np.full((S, S), i, np.uint8))
    manifest = write_csv(tmp_path / "seg.csv", rows)
    np.save(tmp_path / "mask1.npy", np.full((S, S), 3, np.uint8))
    refused(tmp_path, ["prepare-seg", manifest, tmp_path / "out", "--size", S, "-t"], "row 2", "mask1.npy", "3")


@pytest.mark.parametrize(
    ("columns", "fragments"),
    [(["id", "image"], ["'mask'"]), (["id", "image", "mask"], ["empty"])],
    ids=["missing column", "empty manifest"],
)
def test_prepare_seg_refuses_manifest(tmp_path: Path, columns: list[str], fragments: list[str]) -> None:
    rows = seg_rows(tmp_path) if "mask" not in columns else []
    manifest = write_csv(tmp_path / "seg.csv", [{k: r[k] for k in columns} for r in rows], columns)
    refused(tmp_path, ["prepare-seg", manifest, tmp_path / "out", "--size", S], "seg.csv", *fragments)


def test_prepare_seg_refuses_existing_output_and_leaves_it_alone(tmp_path: Path) -> None:
    manifest = write_csv(tmp_path / "seg.csv", seg_rows(tmp_path))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("earlier results")
    refused(tmp_path, ["prepare-seg", manifest, tmp_path / "out", "--size", S], "out", "--overwrite")
    assert (tmp_path / "out" / "keep.txt").read_text() == "earlier results"


# --------------------------------------------------------------------------------------- prepare-slices


def series_manifest(folder: Path, n: int = 3, slices: int = 4) -> list[dict]:
    """n valid .npz series (int16 HU, z ascending) with a z_L3 column; returns the manifest rows."""
    rng = np.random.default_rng(1)
    rows = []
    for i in range(n):
        z_mm = 100.0 + 5.0 * np.arange(slices)
        np.savez(folder / f"ct{i}.npz", hu=rng.integers(-1000, 1000, (slices, S, S)).astype(np.int16), z_mm=z_mm)
        rows.append({"series": f"ct{i}", "path": f"ct{i}.npz", "z_L3": str(z_mm[1])})
    return rows


def _npz(folder: Path, name: str, **arrays: np.ndarray) -> None:
    np.savez(folder / name, **arrays)


SLICES_CASES: dict[str, Callable[[Path, list[dict]], list[str]]] = {}


@case_in(SLICES_CASES, "missing file")
def _slices_missing_file(folder: Path, rows: list[dict]) -> list[str]:
    (folder / "ct1.npz").unlink()
    return ["row 2", "ct1.npz"]


@case_in(SLICES_CASES, "npz without z_mm")
def _slices_npz_without_z(folder: Path, rows: list[dict]) -> list[str]:
    _npz(folder, "ct0.npz", hu=np.zeros((4, S, S), np.int16))
    return ["ct0.npz", "z_mm"]


@case_in(SLICES_CASES, "z_mm count mismatch")
def _slices_npz_count_mismatch(folder: Path, rows: list[dict]) -> list[str]:
    _npz(folder, "ct2.npz", hu=np.zeros((4, S, S), np.int16), z_mm=np.arange(3.0))
    return ["ct2.npz", "3"]


@case_in(SLICES_CASES, "truncated npz")
def _slices_truncated_npz(folder: Path, rows: list[dict]) -> list[str]:
    data = (folder / "ct1.npz").read_bytes()
    (folder / "ct1.npz").write_bytes(data[: len(data) // 3])
    return ["ct1.npz"]


@case_in(SLICES_CASES, "volume not 3-D")
def _slices_not_3d(folder: Path, rows: list[dict]) -> list[str]:
    _npz(folder, "ct0.npz", hu=np.zeros((S, S), np.int16), z_mm=np.arange(S, dtype=float))
    return ["ct0.npz", "3-D"]


@case_in(SLICES_CASES, "uint8 HU")
def _slices_uint8_hu(folder: Path, rows: list[dict]) -> list[str]:
    _npz(folder, "ct2.npz", hu=np.zeros((4, S, S), np.uint8), z_mm=np.arange(4.0))
    return ["ct2.npz", "uint8"]


@case_in(SLICES_CASES, "NaN HU")
def _slices_nan_hu(folder: Path, rows: list[dict]) -> list[str]:
    hu = np.zeros((4, S, S), np.float32)
    hu[2, 1, 1] = np.nan
    _npz(folder, "ct1.npz", hu=hu, z_mm=np.arange(4.0))
    return ["ct1.npz", "NaN"]


@case_in(SLICES_CASES, "non-numeric z")
def _slices_non_numeric_z(folder: Path, rows: list[dict]) -> list[str]:
    rows[1]["z_L3"] = "L3-ish"
    return ["row 2", "z_L3", "L3-ish"]


@case_in(SLICES_CASES, "duplicate series ids")
def _slices_duplicate_series(folder: Path, rows: list[dict]) -> list[str]:
    rows[2]["series"] = "ct0"
    return ["row 3", "duplicate", "ct0"]


def run_prepare_slices(folder: Path, rows: list[dict], *extra) -> list:
    manifest = write_csv(folder / "series.csv", rows)
    return ["prepare-slices", manifest, folder / "out", "--workers", "1", *extra]


@pytest.mark.parametrize("case", SLICES_CASES)
def test_prepare_slices_refuses(tmp_path: Path, case: str) -> None:
    rows = series_manifest(tmp_path)
    fragments = SLICES_CASES[case](tmp_path, rows)
    refused(tmp_path, run_prepare_slices(tmp_path, rows), *fragments)


def test_prepare_slices_refuses_bad_series_with_several_workers(tmp_path: Path) -> None:
    # The same refusal as above, raised inside a worker process, must cross back as one clean line.
    rows = series_manifest(tmp_path, n=4)
    _slices_truncated_npz(tmp_path, rows)
    args = run_prepare_slices(tmp_path, rows)
    refused(tmp_path, [*args[:-2], "--workers", "2"], "ct1.npz")


def test_prepare_slices_refuses_unknown_level(tmp_path: Path) -> None:
    rows = series_manifest(tmp_path)
    refused(tmp_path, run_prepare_slices(tmp_path, rows, "-L", "L3", "T12"), "series.csv", "T12", "z_T12")


@pytest.mark.parametrize(
    ("columns", "fragments"),
    [(["series", "z_L3"], ["'path'"]), (["series", "path", "z_L3"], ["empty"])],
    ids=["missing column", "empty manifest"],
)
def test_prepare_slices_refuses_manifest(tmp_path: Path, columns: list[str], fragments: list[str]) -> None:
    rows = series_manifest(tmp_path) if "path" not in columns else []
    manifest = write_csv(tmp_path / "series.csv", [{k: r[k] for k in columns} for r in rows], columns)
    refused(tmp_path, ["prepare-slices", manifest, tmp_path / "out", "--workers", "1"], "series.csv", *fragments)


def test_prepare_slices_refuses_existing_output_and_leaves_it_alone(tmp_path: Path) -> None:
    rows = series_manifest(tmp_path)
    (tmp_path / "out" / "images").mkdir(parents=True)
    (tmp_path / "out" / "images" / "000000.png").write_bytes(b"earlier")
    refused(tmp_path, run_prepare_slices(tmp_path, rows), "out", "--overwrite")
    assert (tmp_path / "out" / "images" / "000000.png").read_bytes() == b"earlier"


def dicom_volume(slices: int = 4) -> tuple[np.ndarray, np.ndarray]:
    hu = np.arange(slices * S * S, dtype=np.int16).reshape(slices, S, S) % 500 - 200
    return hu, 50.0 + 2.5 * np.arange(slices)


def test_prepare_slices_refuses_mixed_series_dicom_folder(tmp_path: Path) -> None:
    hu, z_mm = dicom_volume()
    write_dicom_series(tmp_path / "ct0", hu, z_mm)
    for path in write_dicom_series(tmp_path / "other", hu, z_mm + 1.0, seed=1):
        path.rename(tmp_path / "ct0" / f"B{path.name}")  # a second SeriesInstanceUID in the same folder
    (tmp_path / "other").rmdir()
    rows = [{"series": "ct0", "path": "ct0", "z_L3": "52.5"}]
    refused(tmp_path, run_prepare_slices(tmp_path, rows), "ct0", "2 DICOM series")


def test_prepare_slices_refuses_non_axial_dicom(tmp_path: Path) -> None:
    hu, z_mm = dicom_volume()
    write_dicom_series(tmp_path / "sag", hu, z_mm, orientation=(0, 1, 0, 0, 0, -1))  # sagittal
    rows = [{"series": "sag", "path": "sag", "z_L3": "52.5"}]
    refused(tmp_path, run_prepare_slices(tmp_path, rows), "sag", "axial")


def test_prepare_slices_refuses_oblique_nifti(tmp_path: Path) -> None:
    import nibabel as nib

    affine = np.eye(4)
    affine[1:3, 1:3] = [[np.cos(0.8), -np.sin(0.8)], [np.sin(0.8), np.cos(0.8)]]  # 46 degrees about x
    nib.save(nib.Nifti1Image(np.zeros((S, S, 4), np.int16), affine), tmp_path / "tilted.nii.gz")
    rows = [{"series": "tilted", "path": "tilted.nii.gz", "z_L3": "1.0"}]
    refused(tmp_path, run_prepare_slices(tmp_path, rows), "tilted.nii.gz", "not an axial volume")


def test_prepare_slices_skips_non_dicom_files_with_a_warning(tmp_path: Path) -> None:
    hu, z_mm = dicom_volume()
    write_dicom_series(tmp_path / "ct0", hu, z_mm)
    (tmp_path / "ct0" / "README.txt").write_text("exported by PACS\n")
    (tmp_path / "ct0" / "DICOMDIR").write_bytes(b"\0" * 200)
    rows = [{"series": "ct0", "path": "ct0", "z_L3": "52.5", "split": "train"}]
    result = invoke(run_prepare_slices(tmp_path, rows))
    assert result.exit_code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert any("README.txt" in line and "skipped" in line for line in warnings), result.stderr
    assert any("DICOMDIR" in line and "skipped" in line for line in warnings), result.stderr
    pngs = sorted((tmp_path / "out" / "images" / "train").iterdir())
    assert [p.name for p in pngs] == [f"{i:06d}.png" for i in range(4)]
    meta = pd.read_csv(tmp_path / "out" / "meta" / "train.csv", index_col=0)
    assert meta["ZOffset_L3"].tolist() == [-2.5, 0.0, 2.5, 5.0]


# ------------------------------------------------------------------------------------------- train-seg


TRAIN_SEG_CASES: dict[str, Callable[[Path], list[str]]] = {}


@case_in(TRAIN_SEG_CASES, "uint8 HU")
def _train_uint8_images(folder: Path) -> list[str]:
    np.save(folder / "train_images.npy", np.zeros((4, 32, 32, 1), np.uint8))
    return ["train_images.npy", "raw HU"]


@case_in(TRAIN_SEG_CASES, "label out of range")
def _train_label_out_of_range(folder: Path) -> list[str]:
    masks = np.load(folder / "val_masks.npy")
    masks[1, 2, 2, 0] = 4
    np.save(folder / "val_masks.npy", masks)
    return ["val_masks.npy", "4"]


@case_in(TRAIN_SEG_CASES, "float masks with fractions")
def _train_fractional_masks(folder: Path) -> list[str]:
    np.save(folder / "train_masks.npy", np.load(folder / "train_masks.npy").astype(np.float32) * 0.5)
    return ["train_masks.npy", "fraction"]


@case_in(TRAIN_SEG_CASES, "inf in images")
def _train_inf_images(folder: Path) -> list[str]:
    images = np.load(folder / "val_images.npy").astype(np.float32)
    images[1, 0, 0, 0] = np.inf
    np.save(folder / "val_images.npy", images)
    return ["val_images.npy", "inf"]


@case_in(TRAIN_SEG_CASES, "count mismatch")
def _train_count_mismatch(folder: Path) -> list[str]:
    np.save(folder / "train_masks.npy", np.load(folder / "train_masks.npy")[:3])
    return ["train_masks.npy", "train_images.npy"]


@case_in(TRAIN_SEG_CASES, "truncated npy")
def _train_truncated(folder: Path) -> list[str]:
    data = (folder / "train_images.npy").read_bytes()
    (folder / "train_images.npy").write_bytes(data[: len(data) // 2])
    return ["train_images.npy"]


@case_in(TRAIN_SEG_CASES, "missing file")
def _train_missing(folder: Path) -> list[str]:
    (folder / "val_masks.npy").unlink()
    return ["val_masks.npy"]


@pytest.fixture
def seg_data(tmp_path: Path) -> Path:
    return make_seg_data(tmp_path / "data", n_train=4, n_val=2, size=32)


@pytest.mark.parametrize("case", TRAIN_SEG_CASES)
def test_train_seg_refuses_data(tmp_path: Path, seg_data: Path, case: str) -> None:
    fragments = TRAIN_SEG_CASES[case](seg_data)
    refused(tmp_path, ["train-seg", seg_data, tmp_path / "models", "-a", "run", *TRAIN_FAST], *fragments)


def test_train_seg_thoracic_refuses_visceral_fat_label(tmp_path: Path, seg_data: Path) -> None:
    # make_seg_data's abdominal masks hold label 3, which a thoracic (-t) model does not have.
    args = ["train-seg", seg_data, tmp_path / "models", "-a", "run", "-t", *TRAIN_FAST]
    refused(tmp_path, args, "train_masks.npy", "3")


@pytest.mark.parametrize(
    ("option", "fragments"),
    [
        (["-b", "0"], ["--batch-size", "0"]),
        (["-l", "-0.001"], ["--learning-rate", "-0.001"]),
        (["-l", "nan"], ["--learning-rate", "nan"]),
        (["-g", "2"], ["--gpus", "2", "visible"]),
        (["--encoder", "resnet35"], ["resnet35", "resnet34"]),
        (["--arch", "unet3d"], ["unet3d", "fpn"]),
    ],
    ids=["batch 0", "negative lr", "nan lr", "more GPUs than visible", "unknown encoder", "unknown arch"],
)
def test_train_seg_refuses_settings(tmp_path: Path, seg_data: Path, option: list[str], fragments: list[str]) -> None:
    # The bad option comes last, so it overrides the defaults in TRAIN_FAST.
    refused(tmp_path, ["train-seg", seg_data, tmp_path / "models", "-a", "run", *TRAIN_FAST, *option], *fragments)


def test_train_seg_resume_with_nothing_to_resume(tmp_path: Path, seg_data: Path) -> None:
    args = ["train-seg", seg_data, tmp_path / "models", "-a", "run", "--resume", *TRAIN_FAST]
    refused(tmp_path, args, "run", "nothing to resume")


def test_train_seg_refuses_existing_run_folder(tmp_path: Path, seg_data: Path) -> None:
    run_dir = tmp_path / "models" / "run"
    run_dir.mkdir(parents=True)
    (run_dir / "checkpoint_last.pt").write_bytes(b"an earlier run")
    refused(tmp_path, ["train-seg", seg_data, tmp_path / "models", "-a", "run", *TRAIN_FAST], "run", "--resume")
    assert (run_dir / "checkpoint_last.pt").read_bytes() == b"an earlier run"


# ---------------------------------------------------------------------------------------- train-select


TRAIN_SELECT_CASES: dict[str, Callable[[Path], list[str]]] = {}


@case_in(TRAIN_SELECT_CASES, "non-contiguous png ids")
def _select_gap_in_ids(folder: Path) -> list[str]:
    images = folder / "images" / "train"
    last = sorted(images.iterdir())[-1]
    last.rename(images / f"{int(last.stem) + 5:06d}.png")
    return ["images/train", f"{int(last.stem) + 5:06d}.png"]


@case_in(TRAIN_SELECT_CASES, "RGB png")
def _select_rgb_png(folder: Path) -> list[str]:
    iio.imwrite(folder / "images" / "val" / "000002.png", np.zeros((32, 32, 3), np.uint8))
    return ["000002.png"]


@case_in(TRAIN_SELECT_CASES, "truncated png")
def _select_truncated_png(folder: Path) -> list[str]:
    path = folder / "images" / "train" / "000004.png"
    path.write_bytes(path.read_bytes()[:40])
    return ["000004.png"]


@case_in(TRAIN_SELECT_CASES, "non-numeric offset")
def _select_non_numeric_offset(folder: Path) -> list[str]:
    meta = pd.read_csv(folder / "meta" / "train.csv", index_col=0)
    meta["ZOffset_L3"] = meta["ZOffset_L3"].astype(object)
    meta.loc[3, "ZOffset_L3"] = "about 5"
    meta.to_csv(folder / "meta" / "train.csv")
    return ["train.csv", "ZOffset_L3", "about 5"]


@case_in(TRAIN_SELECT_CASES, "count mismatch")
def _select_count_mismatch(folder: Path) -> list[str]:
    (folder / "images" / "val" / "000005.png").unlink()
    return ["images/val", "val.csv"]


@case_in(TRAIN_SELECT_CASES, "missing meta csv")
def _select_missing_meta(folder: Path) -> list[str]:
    (folder / "meta" / "val.csv").unlink()
    return ["val.csv"]


@case_in(TRAIN_SELECT_CASES, "empty meta csv")
def _select_empty_meta(folder: Path) -> list[str]:
    header = (folder / "meta" / "val.csv").read_text().splitlines()[0]
    (folder / "meta" / "val.csv").write_text(header + "\n")
    shutil.rmtree(folder / "images" / "val")
    (folder / "images" / "val").mkdir()
    return ["val.csv"]


@pytest.fixture
def select_data(tmp_path: Path) -> Path:
    return make_select_data(tmp_path / "data", n_series=(2, 1), slices=6, size=32)


@pytest.mark.parametrize("case", TRAIN_SELECT_CASES)
def test_train_select_refuses_data(tmp_path: Path, select_data: Path, case: str) -> None:
    fragments = TRAIN_SELECT_CASES[case](select_data)
    refused(tmp_path, ["train-select", select_data, tmp_path / "models", "-a", "run", *SELECT_FAST], *fragments)


@pytest.mark.parametrize(
    ("option", "fragments"),
    [
        (["-L", "L3", "-L", "T12"], ["ZOffset_T12"]),
        (["-b", "-4"], ["--batch-size", "-4"]),
        (["-l", "0"], ["--learning-rate", "0"]),
        (["-g", "2"], ["--gpus", "2", "visible"]),
        (["--resume"], ["run", "nothing to resume"]),
    ],
    ids=["unknown level", "negative batch", "zero lr", "more GPUs than visible", "nothing to resume"],
)
def test_train_select_refuses_settings(
    tmp_path: Path, select_data: Path, option: list[str], fragments: list[str]
) -> None:
    args = ["train-select", select_data, tmp_path / "models", "-a", "run", *SELECT_FAST, *option]
    refused(tmp_path, args, *fragments)


# --------------------------------------------------------------------------------- estimate / evaluate


def run_without_checkpoint(folder: Path, task: str) -> Path:
    """A run folder with a config.json but no checkpoint (training never finished an epoch)."""
    folder.mkdir(parents=True)
    config = {"task": task, "window": {"level": 40, "width": 400}, "image_size": 32, "levels": ["L3"]}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture
def estimate_args(tmp_path: Path) -> list:
    rows = series_manifest(tmp_path, n=1, slices=24)
    select = run_without_checkpoint(tmp_path / "models" / "select", "slice_selection")
    seg = run_without_checkpoint(tmp_path / "models" / "seg", "segmentation")
    return ["estimate", tmp_path / rows[0]["path"], "--select-model", select, "--seg-model", seg, "-g", "0"]


def test_estimate_refuses_model_folder_without_checkpoint(tmp_path: Path, estimate_args: list) -> None:
    refused(tmp_path, [*estimate_args, "-o", tmp_path / "out"], str(tmp_path / "models" / "select"), "checkpoint")


def test_estimate_refuses_missing_input(tmp_path: Path, estimate_args: list) -> None:
    args = [*estimate_args, tmp_path / "nowhere.nii.gz", "-o", tmp_path / "out"]
    refused(tmp_path, args, "nowhere.nii.gz")


def test_estimate_refuses_manifest_without_path_column(tmp_path: Path, estimate_args: list) -> None:
    manifest = write_csv(tmp_path / "cohort.csv", [{"series": "a", "file": "ct0.npz"}])
    refused(tmp_path, [*estimate_args[:1], manifest, *estimate_args[2:], "-o", tmp_path / "out"], "cohort.csv", "path")


def test_estimate_refuses_existing_output(tmp_path: Path, estimate_args: list) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "results.csv").write_text("series\nold\n")
    refused(tmp_path, [*estimate_args, "-o", tmp_path / "out"], "out", "--overwrite")
    assert (tmp_path / "out" / "results.csv").read_text() == "series\nold\n"


def test_evaluate_refuses_run_without_checkpoint(tmp_path: Path, seg_data: Path) -> None:
    run_dir = run_without_checkpoint(tmp_path / "models" / "seg", "segmentation")
    refused(tmp_path, ["evaluate", run_dir, seg_data, "-o", tmp_path / "eval", "-g", "0"], str(run_dir), "checkpoint")


# ------------------------------------------------------------------------------------------- phantoms


def test_phantoms_refuse_bad_size_and_existing_output(tmp_path: Path) -> None:
    refused(tmp_path, ["phantoms", tmp_path / "ph", "--size", "8", "--series", "1"], "--size", "8")
    (tmp_path / "ph").mkdir()
    (tmp_path / "ph" / "series.csv").write_text("series,path\n")
    refused(tmp_path, ["phantoms", tmp_path / "ph", "--size", "32", "--series", "1"], "ph", "--overwrite")

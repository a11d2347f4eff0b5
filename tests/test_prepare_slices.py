"""prepare-slices end to end on tiny series: layout, pixels, offsets, splits, workers and refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest
from conftest import assert_user_error, invoke
from helpers_atomic import dead_temp_name
from test_volumes import make_display_volume, write_dicom_series

from bodycomp_cli.core.preprocess import window_hu
from bodycomp_cli.io.atomic import TEMP_PREFIX
from bodycomp_cli.prepare.slices import window_volume

REPO = Path(__file__).resolve().parents[1]


def make_series(folder: Path, n_series: int = 3, slices: int = 6, size: int = 32, float_hu: bool = False) -> dict:
    """npz series with z not in file order; returns {series id: (hu sorted by z, z sorted)}."""
    rng = np.random.default_rng(7)
    made = {}
    for i in range(n_series):
        hu = rng.integers(-1200, 600, size=(slices, size, size)).astype(np.float32 if float_hu else np.int16)
        if float_hu:
            hu += 0.5  # exercise the float path, with rint ties
        z = 100.0 - 2.5 * np.arange(slices) + i  # stored head-first: the reader must sort
        np.savez(folder / f"s{i}.npz", hu=hu, z_mm=z)
        order = np.argsort(z)
        made[f"S{i}"] = (hu[order], z[order])
    return made


def write_manifest(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def no_output_left(output: Path) -> None:
    assert not output.exists()
    assert not list(output.parent.glob(f"{TEMP_PREFIX}*"))


def test_layout_pixels_and_offsets(tmp_path):
    made = make_series(tmp_path, float_hu=False)
    rows = [
        {"series": "S0", "path": "s0.npz", "z_L3": 90.0, "z_T5": "", "split": "train"},
        {"series": "S1", "path": str(tmp_path / "s1.npz"), "z_L3": 95.0, "z_T5": 300.0, "split": "val"},
        {"series": "S2", "path": "s2.npz", "z_L3": 80.0, "z_T5": "", "split": "train"},
    ]
    manifest = write_manifest(tmp_path / "series.csv", rows)
    out = tmp_path / "out"
    result = invoke(["prepare-slices", manifest, out, "--workers", "1"])
    assert result.exit_code == 0, result.output + result.stderr
    assert sorted(p.name for p in (out / "images").iterdir()) == ["train", "val"]
    train = pd.read_csv(out / "meta" / "train.csv", index_col=0)
    assert (out / "meta" / "train.csv").read_text().startswith(",series,slice_index,z_mm,ZOffset_L3,ZOffset_T5\n")
    assert list(train.index) == list(range(12))
    assert sorted(p.name for p in (out / "images" / "train").iterdir()) == [f"{i:06d}.png" for i in range(12)]
    assert list(train["series"]) == ["S0"] * 6 + ["S2"] * 6
    for i, row in train.iterrows():
        hu, z = made[row["series"]]
        assert row["z_mm"] == z[row["slice_index"]]
        image = iio.imread(out / "images" / "train" / f"{i:06d}.png")
        assert image.dtype == np.uint8 and image.shape == (32, 32)
        np.testing.assert_array_equal(image, window_hu(hu[row["slice_index"]]))
    # ZOffset = z_slice - z_level: S0's lowest slice is at z 87.5, 2.5 mm below (toward the feet of) L3 at 90.
    assert train["ZOffset_L3"].iloc[0] == -2.5
    assert train["ZOffset_L3"].iloc[5] == 100.0 - 90.0
    assert train["ZOffset_T5"].isna().all()
    val = pd.read_csv(out / "meta" / "val.csv", index_col=0)
    assert list(val["ZOffset_T5"]) == list(made["S1"][1] - 300.0)
    assert "series" in result.stdout and "train" in result.stdout


def test_float_volumes_window_like_window_hu(tmp_path):
    made = make_series(tmp_path, n_series=1, float_hu=True)
    manifest = write_manifest(tmp_path / "m.csv", [{"series": "S0", "path": "s0.npz", "z_L3": 95, "split": "train"}])
    assert (
        invoke(
            ["prepare-slices", manifest, tmp_path / "out", "--window-level", "50", "--window-width", "350"]
        ).exit_code
        == 0
    )
    hu, _ = made["S0"]
    for k in range(len(hu)):
        image = iio.imread(tmp_path / "out" / "images" / "train" / f"{k:06d}.png")
        np.testing.assert_array_equal(image, window_hu(hu[k], 50, 350))


def test_lookup_table_windowing_equals_window_hu_for_every_int16():
    every = np.arange(-32768, 32768, dtype=np.int16).reshape(1, 256, 256)
    for level, width in ((40, 400), (-600, 1500), (35.5, 333)):
        np.testing.assert_array_equal(window_volume(every, level, width), window_hu(every, level, width))


def test_same_output_for_any_workers_and_split_by_series(tmp_path):
    make_series(tmp_path, n_series=5, slices=4, size=16)
    rows = [{"series": f"S{i}", "path": f"s{i}.npz", "z_L3": 90 + i} for i in range(5)]
    manifest = write_manifest(tmp_path / "m.csv", rows)
    outputs = []
    for workers in ("1", "2"):
        out = tmp_path / f"out{workers}"
        result = invoke(
            ["prepare-slices", manifest, out, "--workers", workers, "--val-frac", "0.2", "--test-frac", "0.2"]
        )
        assert result.exit_code == 0, result.stderr
        outputs.append({p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()})
    assert outputs[0] == outputs[1]
    metas = {split: pd.read_csv(tmp_path / "out1" / "meta" / f"{split}.csv") for split in ("train", "val", "test")}
    assert [len(metas[s]) for s in ("train", "val", "test")] == [12, 4, 4]
    series_sets = [set(meta["series"]) for meta in metas.values()]
    assert sum(len(s) for s in series_sets) == 5 and set.union(*series_sets) == {f"S{i}" for i in range(5)}


def test_one_series_shared_by_several_workers_gives_the_same_output(tmp_path):
    make_series(tmp_path, n_series=1, slices=7, size=16)
    manifest = write_manifest(tmp_path / "m.csv", [{"series": "S0", "path": "s0.npz", "z_L3": 90}])
    outputs = []
    for workers in ("1", "3"):
        assert invoke(["prepare-slices", manifest, tmp_path / workers, "--workers", workers]).exit_code == 0
        outputs.append({p.relative_to(tmp_path / workers): p.read_bytes() for p in (tmp_path / workers).rglob("*.*")})
    assert len(outputs[0]) == 7 + 2 + 1 and outputs[0] == outputs[1]  # PNGs, meta CSVs, dataset.json


def test_levels_repeated_and_default_every_z_column(tmp_path):
    make_series(tmp_path, n_series=1, slices=2, size=8)
    manifest = write_manifest(
        tmp_path / "m.csv", [{"series": "S0", "path": "s0.npz", "z_T5": 1, "z_L3": 2, "z_T8": 3, "split": "train"}]
    )
    assert invoke(["prepare-slices", manifest, tmp_path / "a", "-L", "L3", "-L", "T5"]).exit_code == 0
    assert list(pd.read_csv(tmp_path / "a" / "meta" / "train.csv").columns)[4:] == ["ZOffset_L3", "ZOffset_T5"]
    assert invoke(["prepare-slices", manifest, tmp_path / "b"]).exit_code == 0
    assert list(pd.read_csv(tmp_path / "b" / "meta" / "train.csv").columns)[4:] == [
        "ZOffset_T5",
        "ZOffset_L3",
        "ZOffset_T8",
    ]


def test_levels_space_separated_after_one_flag(tmp_path):
    make_series(tmp_path, n_series=1, slices=2, size=8)
    manifest = write_manifest(tmp_path / "m.csv", [{"series": "S0", "path": "s0.npz", "z_T5": 1, "z_L3": 2, "z_T8": 3}])
    result = invoke(["prepare-slices", manifest, tmp_path / "a", "-L", "T8", "L3"])
    assert result.exit_code == 0, result.stderr
    assert list(pd.read_csv(tmp_path / "a" / "meta" / "train.csv").columns)[4:] == ["ZOffset_T8", "ZOffset_L3"]


def test_dicom_folder_with_a_stray_file_warns_and_works(tmp_path):
    hu = make_display_volume(z=3, h=8, w=8)
    write_dicom_series(tmp_path / "dcm", hu, np.array([5.0, 7.5, 10.0]))
    (tmp_path / "dcm" / "DICOMDIR.txt").write_text("not dicom")
    manifest = write_manifest(tmp_path / "m.csv", [{"series": "D", "path": "dcm", "z_L3": 7.5, "split": "train"}])
    result = invoke(["prepare-slices", manifest, tmp_path / "out", "--workers", "1"])
    assert result.exit_code == 0, result.stderr
    assert "DICOMDIR.txt: not a DICOM file, skipped" in result.stderr
    meta = pd.read_csv(tmp_path / "out" / "meta" / "train.csv")
    assert list(meta["ZOffset_L3"]) == [-2.5, 0.0, 2.5]
    np.testing.assert_array_equal(iio.imread(tmp_path / "out" / "images" / "train" / "000002.png"), window_hu(hu[2]))


def _refusal_cases(tmp: Path) -> dict[str, tuple[list[dict], list[str], tuple[str, ...]]]:
    good = {"series": "S0", "path": "s0.npz", "z_L3": 90}
    np.savez(tmp / "nohu.npz", z_mm=np.arange(3.0))
    np.savez(tmp / "short.npz", hu=np.zeros((3, 8, 8), np.int16), z_mm=np.arange(2.0))
    np.savez(tmp / "flat.npz", hu=np.zeros((8, 8), np.int16), z_mm=np.arange(8.0))
    hu = make_display_volume(z=2, h=8, w=8)
    write_dicom_series(tmp / "mixed", hu, np.array([0.0, 1.0]), seed=1)
    for path in write_dicom_series(tmp / "other", hu, np.array([2.0, 3.0]), seed=2):  # a second SeriesInstanceUID
        path.rename(tmp / "mixed" / f"B{path.name}")
    return {
        "missing file": ([good, {**good, "series": "S1", "path": "gone.npz"}], [], ("row 2", "gone.npz", "not found")),
        "npz without hu": ([good, {**good, "series": "S1", "path": "nohu.npz"}], [], ("nohu.npz", "no hu")),
        "length mismatch": ([{**good, "path": "short.npz"}], [], ("short.npz", "z_mm has 2 values but hu has 3")),
        "not 3-D": ([{**good, "path": "flat.npz"}], [], ("flat.npz", "not 3-D")),
        "non-numeric z": ([{**good, "z_L3": "L3-ish"}], [], ("row 1", "z_L3", "not a number")),
        "unknown level": ([good], ["-L", "T12"], ("-L T12", "z_T12", "levels in manifest: L3")),
        "duplicate series": ([good, {**good, "path": "s1.npz"}], [], ("row 2", "duplicate series 'S0'")),
        "two DICOM series": ([{**good, "path": "mixed"}], [], ("mixed", "2 DICOM series")),
        "bad split": ([{**good, "split": "training"}], [], ("row 1", "split", "'training'", "train, val, test")),
        "bad worker count": ([good], ["--workers", "0"], ("--workers",)),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing file",
        "npz without hu",
        "length mismatch",
        "not 3-D",
        "non-numeric z",
        "unknown level",
        "duplicate series",
        "two DICOM series",
        "bad split",
        "bad worker count",
    ],
)
def test_refusals_exit_2_and_leave_nothing(tmp_path, case):
    make_series(tmp_path, n_series=2, slices=3, size=8)
    rows, extra, fragments = _refusal_cases(tmp_path)[case]
    manifest = write_manifest(tmp_path / "m.csv", rows)
    result = invoke(["prepare-slices", manifest, tmp_path / "out", "--workers", "2", *extra])
    assert_user_error(result, *fragments)
    no_output_left(tmp_path / "out")


def test_existing_output_needs_overwrite_and_stale_temp_is_cleaned(tmp_path):
    make_series(tmp_path, n_series=1, slices=2, size=8)
    manifest = write_manifest(tmp_path / "m.csv", [{"series": "S0", "path": "s0.npz", "z_L3": 90}])
    out = tmp_path / "out"
    stale = tmp_path / dead_temp_name("out")  # what a killed run leaves: no complete-looking `out`
    (stale / "images").mkdir(parents=True)
    assert invoke(["prepare-slices", manifest, out]).exit_code == 0
    assert not stale.exists()
    (out / "marker").write_text("user data")
    assert_user_error(invoke(["prepare-slices", manifest, out]), "out", "--overwrite")
    assert (out / "marker").exists()
    assert invoke(["prepare-slices", manifest, out, "--overwrite"]).exit_code == 0
    assert not (out / "marker").exists() and (out / "meta" / "train.csv").exists()


def test_prepare_slices_never_imports_torch(tmp_path):
    make_series(tmp_path, n_series=2, slices=2, size=8)
    write_manifest(tmp_path / "m.csv", [{"series": f"S{i}", "path": f"s{i}.npz", "z_L3": 1} for i in range(2)])
    code = (
        "import sys; from bodycomp_cli.cli import main; sys.argv = ['bodycomp', 'prepare-slices', "
        f"{str(tmp_path / 'm.csv')!r}, {str(tmp_path / 'out')!r}, '--workers', '2']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, cwd=REPO)
    assert (tmp_path / "out" / "meta" / "train.csv").exists()


def test_benchmark_runs_in_tiny_mode():
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "prepare_slices.py"), "--tiny"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "ratio" in done.stdout and "identical pixels: yes" in done.stdout


def test_meta_csv_values_have_at_most_four_decimals(tmp_path):
    make_series(tmp_path, float_hu=False)
    rows = [{"series": "S0", "path": "s0.npz", "z_L3": 90.123456789, "split": "train"}]
    out = tmp_path / "out"
    result = invoke(["prepare-slices", write_manifest(tmp_path / "series.csv", rows), out, "--workers", "1"])
    assert result.exit_code == 0, result.output + result.stderr
    text = (out / "meta" / "train.csv").read_text()
    decimals = [len(field.split(".")[1]) for line in text.splitlines()[1:] for field in line.split(",") if "." in field]
    assert decimals and max(decimals) <= 4, text[:300]
    train = pd.read_csv(out / "meta" / "train.csv", index_col=0)
    assert np.allclose(train["ZOffset_L3"], train["z_mm"] - 90.123456789, atol=1e-4)

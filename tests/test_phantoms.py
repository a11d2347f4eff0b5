"""The phantom generator: determinism, labels consistent with HU, anatomy along z, manifests that the
prepare commands accept."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_user_error, invoke

from bodycomp_cli.phantoms import LEVELS, SeriesRenderer, generate_phantoms, series_params
from bodycomp_cli.phantoms import tissues as T
from bodycomp_cli.phantoms.anatomy import vertebra_index
from bodycomp_cli.phantoms.writer import slice_positions

SIZE = 64


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("phantoms") / "set"
    generate_phantoms(out, n_series=4, seed=3, size=SIZE, seg_slices=2, workers=1, progress=False)
    return out


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _render_at(seed: int, index: int, v: float, size: int = SIZE) -> tuple[np.ndarray, np.ndarray, SeriesRenderer]:
    params = series_params(seed, index, size)
    renderer = SeriesRenderer(params)
    hu, labels = renderer.render(float(params.spine.z_at(v)))
    return hu, labels, renderer


def test_same_seed_same_bytes_for_any_worker_count(phantom_dir, tmp_path):
    again = tmp_path / "again"
    generate_phantoms(again, n_series=4, seed=3, size=SIZE, seg_slices=2, workers=2, progress=False)
    for name in ("series.csv", "seg.csv", "seg_test.csv", "seg_thoracic.csv", "phantoms.json"):
        assert (again / name).read_bytes() == (phantom_dir / name).read_bytes(), name
    for path in sorted((phantom_dir / "series").glob("*.npz")) + sorted((phantom_dir / "slices").glob("*.npy")):
        twin = again / path.relative_to(phantom_dir)
        if path.suffix == ".npz":
            a, b = np.load(path), np.load(twin)
            for key in ("hu", "z_mm", "pixel_spacing"):
                np.testing.assert_array_equal(a[key], b[key])
        else:
            np.testing.assert_array_equal(np.load(path), np.load(twin))
    other = series_params(4, 0, SIZE)
    assert other != series_params(3, 0, SIZE)


def test_series_files_hold_hu_and_ascending_z(phantom_dir):
    rows = _rows(phantom_dir / "series.csv")
    assert [r["series"] for r in rows] == [f"phantom_{i:04d}" for i in range(4)]
    for row in rows:
        data = np.load(phantom_dir / row["path"])
        hu, z = data["hu"], data["z_mm"]
        assert hu.dtype == np.int16 and hu.ndim == 3 and hu.shape[1:] == (SIZE, SIZE)
        assert len(z) == len(hu) and np.all(np.diff(z) > 0)
        assert len(np.unique(np.round(np.diff(z), 3))) == 1  # uniform spacing
        assert 1.0 <= z[1] - z[0] <= 5.0
        spacing = data["pixel_spacing"]
        assert spacing.shape == (2,) and 300.0 <= spacing[0] * SIZE <= 500.0  # a real field of view
        assert hu.min() >= -1024 and hu.max() > 300  # air and bone


def test_levels_in_z_order_with_realistic_spacing():
    for index in range(30):
        spine = series_params(11, index, SIZE).spine
        z = [spine.z_of(level) for level in LEVELS]
        assert np.all(np.diff(z) < 0), z  # T5 highest (z grows toward the head)
        assert 50.0 < spine.z_of("L1") - spine.z_of("L3") < 85.0  # two lumbar vertebrae
        assert 140.0 < spine.z_of("T5") - spine.z_of("T12") < 210.0  # seven thoracic vertebrae


def test_coverage_varies_and_l3_is_always_scanned():
    missing = {"T5": 0, "L5": 0}
    for index in range(60):
        params = series_params(5, index, SIZE)
        z = slice_positions(params)
        l3 = params.spine.z_of("L3")
        assert z[0] < l3 < z[-1]
        for level in missing:
            missing[level] += not z[0] <= params.spine.z_of(level) <= z[-1]
    assert missing["T5"] >= 3 and missing["L5"] >= 3


@pytest.mark.parametrize("index", range(6))
def test_labelled_pixels_lie_in_their_tissue_hu_window(index):
    for v in (vertebra_index("T8"), vertebra_index("L3") - 0.3, vertebra_index("L3") + 0.3, 17.5):
        params = series_params(21, index, 96)
        rendered = SeriesRenderer(params).render_slice(float(params.spine.z_at(v)))
        hu, labels = rendered.hu, rendered.labels
        # Intermuscular fat is labelled muscle but has fat HU: it is checked with the other fat.
        fat = hu[(labels == T.SUBCUTANEOUS_FAT) | (labels == T.VISCERAL_FAT) | rendered.imat]
        muscle = hu[(labels == T.MUSCLE) & ~rendered.imat]
        assert fat.size and fat.min() >= T.FAT_HU_RANGE[0] and fat.max() <= T.FAT_HU_RANGE[1]
        assert muscle.size and muscle.min() >= T.MUSCLE_HU_RANGE[0] and muscle.max() <= T.MUSCLE_HU_RANGE[1]
        assert np.all(labels[rendered.imat] == T.MUSCLE)


def test_every_tissue_is_present_at_l3():
    for index in range(6):
        _, labels, renderer = _render_at(8, index, vertebra_index("L3"), size=128)
        pixel_cm2 = renderer.p.pixel_spacing_mm**2 / 100.0
        areas = {c: (labels == c).sum() * pixel_cm2 for c in (T.MUSCLE, T.SUBCUTANEOUS_FAT, T.VISCERAL_FAT)}
        assert 60.0 < areas[T.MUSCLE] < 400.0, areas  # adult L3 muscle areas are about 100-250 cm2
        assert areas[T.SUBCUTANEOUS_FAT] > 20.0 and areas[T.VISCERAL_FAT] > 10.0, areas


def test_anatomy_changes_with_the_level():
    """Lungs above the diaphragm only; ribs above L1; iliac wings below L5; kidneys around L1-L3."""
    for index in range(4):
        hu_t8, labels_t8, r = _render_at(2, index, vertebra_index("T8"), size=128)
        hu_l3, _, _ = _render_at(2, index, vertebra_index("L3"), size=128)
        hu_pelvis, _, _ = _render_at(2, index, vertebra_index("S1") + 0.5, size=128)
        body = (r.rho < 120.0) & (hu_t8 > -1000)
        assert ((hu_t8 < -700) & body).sum() > 200  # lungs
        # At most some bowel gas near the centre (the lungs at T8 fill over 1000 of these pixels). The bowel
        # packed between the visceral fat since issue 24 brings up to about 40 pixels of gas; 100 keeps a margin.
        assert ((hu_l3 < -700) & (r.rho < 60.0)).sum() < 100
        lateral = np.abs(r.x) > 75.0
        assert ((hu_t8 > 300) & lateral).sum() > 0  # ribs
        assert ((hu_l3 > 300) & lateral).sum() == 0
        assert ((hu_pelvis > 300) & lateral).sum() > 0  # iliac wings


def test_noise_has_the_series_sigma():
    hu, _, renderer = _render_at(1, 0, vertebra_index("L3"), size=128)
    noisy = renderer.add_noise(hu, np.random.default_rng(0)).astype(np.float64)
    body = hu > -500
    assert abs(np.std(noisy[body] - hu[body]) - renderer.p.noise_sd) < 0.15 * renderer.p.noise_sd


def test_seg_manifests_point_at_matching_slices(phantom_dir):
    rows = _rows(phantom_dir / "seg.csv")
    test_rows = _rows(phantom_dir / "seg_test.csv")
    series_split = {r["series"]: r["split"] for r in _rows(phantom_dir / "series.csv")}
    assert rows and test_rows
    for row in rows:
        assert row["split"] == series_split[row["group"]] and row["split"] in ("train", "val")
    assert {series_split[r["group"]] for r in test_rows} == {"test"}
    for row in rows[:3]:
        image, mask = np.load(phantom_dir / row["image"]), np.load(phantom_dir / row["mask"])
        assert image.dtype == np.int16 and mask.dtype == np.uint8 and image.shape == mask.shape == (SIZE, SIZE)
        assert set(np.unique(mask)) == {0, 1, 2, 3}
    for row in _rows(phantom_dir / "seg_thoracic.csv"):
        assert set(np.unique(np.load(phantom_dir / row["mask"]))) <= {0, 1, 2}


def test_prepare_commands_accept_the_manifests(phantom_dir, tmp_path):
    result = invoke(["prepare-slices", phantom_dir / "series.csv", tmp_path / "slices", "--workers", "1"])
    assert result.exit_code == 0, result.output + (result.stderr or "")
    series = {r["series"]: r for r in _rows(phantom_dir / "series.csv")}
    meta = _rows(tmp_path / "slices" / "meta" / "test.csv")
    assert meta and {row["series"] for row in meta} <= {s for s, r in series.items() if r["split"] == "test"}
    for row in meta[:50]:
        z_l3 = float(series[row["series"]]["z_L3"])
        assert float(row["ZOffset_L3"]) == pytest.approx(float(row["z_mm"]) - z_l3, abs=1e-6)
    result = invoke(["prepare-seg", phantom_dir / "seg.csv", tmp_path / "seg", "--size", "32"])
    assert result.exit_code == 0, result.output + (result.stderr or "")
    total = len(_rows(phantom_dir / "seg.csv"))
    shapes = [np.load(tmp_path / "seg" / f"{s}_masks.npy", mmap_mode="r").shape for s in ("train", "val")]
    assert shapes[0][0] + shapes[1][0] == total and shapes[0][1:3] == (32, 32)
    result = invoke(["prepare-seg", phantom_dir / "seg_thoracic.csv", tmp_path / "seg_t", "-t", "--size", "32"])
    assert result.exit_code == 0, result.output + (result.stderr or "")


def test_phantoms_command_writes_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "p"
    args = ["phantoms", out, "--series", "1", "--size", "32", "--seg-slices", "1", "--workers", "1"]
    result = invoke(args)
    assert result.exit_code == 0, result.output + (result.stderr or "")
    assert (out / "series" / "phantom_0000.npz").is_file() and (out / "seg.csv").is_file()
    assert_user_error(invoke(args), str(out), "--overwrite")
    assert invoke([*args, "--overwrite"]).exit_code == 0
    assert_user_error(invoke(["phantoms", tmp_path / "q", "--size", "8"]), "--size", "8")
    assert not (tmp_path / "q").exists()

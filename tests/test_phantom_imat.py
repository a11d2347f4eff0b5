"""Intermuscular fat (IMAT) truth of the phantoms: fat-HU pixels inside the muscle compartment, labelled
muscle, with their own mask; muscle_quality's IMAT on a phantom slice equals that truth."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import binary_dilation

from bodycomp_cli.estimate.muscle_quality import muscle_quality
from bodycomp_cli.phantoms import SeriesRenderer, generate_phantoms, series_params
from bodycomp_cli.phantoms import tissues as T

CLASSES = ("background", "muscle", "subcutaneous_fat", "visceral_fat")
# Noise moves a few muscle pixels of low HU into the fat range (and, rarely, an IMAT pixel out of it). Over
# 30 series at 128 and 256 px (seed 7), the noisy IMAT was -0.04 to +0.49 cm2 off a truth of 0.3-12.5 cm2.
NOISY_IMAT_TOLERANCE, NOISY_IMAT_FLOOR_CM2 = 0.25, 0.5


def _l3_slice(seed: int, index: int, size: int):
    params = series_params(seed, index, size)
    renderer = SeriesRenderer(params)
    return params, renderer, renderer.render_slice(float(params.spine.z_of("L3")))


@pytest.mark.parametrize("index", range(4))
def test_imat_is_fat_hu_labelled_muscle_away_from_other_fat(index):
    params, _, rendered = _l3_slice(7, index, 256)
    assert rendered.imat.dtype == bool and rendered.imat.shape == rendered.labels.shape
    assert rendered.imat.sum() > 0
    assert np.all(rendered.labels[rendered.imat] == T.MUSCLE)
    imat_hu = rendered.hu[rendered.imat]
    assert imat_hu.min() >= T.FAT_HU_RANGE[0] and imat_hu.max() <= T.FAT_HU_RANGE[1]
    # Every other muscle pixel has muscle HU: the mask is the whole of the fat inside the compartment.
    rest = rendered.hu[(rendered.labels == T.MUSCLE) & ~rendered.imat]
    assert rest.min() >= T.MUSCLE_HU_RANGE[0]
    # IMAT never touches subcutaneous or visceral fat (it lies 3 mm or more inside the compartment).
    near = binary_dilation(rendered.imat, iterations=1)
    assert not np.any(near & ((rendered.labels == T.SUBCUTANEOUS_FAT) | (rendered.labels == T.VISCERAL_FAT)))
    share = rendered.imat.sum() / (rendered.labels == T.MUSCLE).sum()
    assert 0.001 < share < params.imat_fraction + 0.01


@pytest.mark.parametrize("index", range(6))
def test_muscle_quality_imat_equals_the_truth(index):
    params, renderer, rendered = _l3_slice(7, index, 128)
    spacing = (params.pixel_spacing_mm, params.pixel_spacing_mm)
    truth_cm2 = rendered.imat.sum() * params.pixel_spacing_mm**2 / 100.0
    clean = muscle_quality(rendered.hu, rendered.labels, CLASSES, spacing)["imat_area_cm2"]
    assert clean == pytest.approx(truth_cm2, rel=1e-12)
    noisy_hu = renderer.add_noise(rendered.hu, np.random.default_rng(index))
    noisy = muscle_quality(noisy_hu, rendered.labels, CLASSES, spacing)["imat_area_cm2"]
    assert abs(noisy - truth_cm2) <= NOISY_IMAT_TOLERANCE * truth_cm2 + NOISY_IMAT_FLOOR_CM2


def test_imat_amount_varies_between_series():
    shares = []
    for index in range(8):
        _, _, rendered = _l3_slice(2, index, 128)
        shares.append(rendered.imat.sum() / (rendered.labels == T.MUSCLE).sum())
    assert max(shares) > 2.5 * min(shares)


def test_writer_saves_the_imat_truth(tmp_path):
    out = tmp_path / "set"
    generate_phantoms(out, n_series=1, seed=4, size=64, seg_slices=1, workers=1, progress=False)
    series = np.load(out / "series" / "phantom_0000.npz")
    assert series["imat"].dtype == bool and series["imat"].shape == series["hu"].shape
    params = series_params(4, 0, 64)
    renderer = SeriesRenderer(params)
    k = int(np.argmin(np.abs(series["z_mm"] - params.spine.z_of("L3"))))
    np.testing.assert_array_equal(series["imat"][k], renderer.render_slice(float(series["z_mm"][k])).imat)
    for name in ("L3_0", "T8_0"):
        imat = np.load(out / "slices" / f"phantom_0000_{name}_imat.npy")
        mask = np.load(out / "slices" / f"phantom_0000_{name}_mask.npy")
        assert imat.dtype == bool and imat.shape == mask.shape == (64, 64)
        assert np.all(mask[imat] == T.MUSCLE)

"""The estimate rule that turns per-slice sigmoid outputs into one slice per level."""

from __future__ import annotations

import numpy as np
import pytest

from bodycomp_cli.core.selection import ideal_curve, select_level_slice

THRESHOLD = 10.0


def model_outputs(z_mm: np.ndarray, z_level: float, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """What a good model predicts: sigmoid((z - z_level) / threshold), plus a little noise."""
    p = 1.0 / (1.0 + np.exp(-(z_mm - z_level) / THRESHOLD))
    rng = np.random.default_rng(seed)
    return np.clip(p + rng.normal(0.0, noise, size=p.shape), 0.0, 1.0)


def test_one_crossing_picks_the_slice_nearest_the_level() -> None:
    z = np.arange(100) * 2.5 - 40.0  # -40 .. 207.5 mm
    choice = select_level_slice(model_outputs(z, z_level=81.2, noise=0.03), z, THRESHOLD)
    assert choice.zero_crossings == 1
    assert choice.index == 48  # z = 80.0, the slice nearest 81.2 mm
    assert choice.smoothed.shape == (100,)
    assert choice.smoothed[0] == pytest.approx(-1.0, abs=0.1) and choice.smoothed[-1] == pytest.approx(1.0, abs=0.1)


def test_a_one_slice_spike_is_smoothed_away() -> None:
    z = np.arange(80) * 3.0
    p = model_outputs(z, z_level=180.0)
    p[10] = 1.0  # a single wild slice far below the level
    choice = select_level_slice(p, z, THRESHOLD)
    assert choice.zero_crossings == 1
    assert choice.index == 60
    # Unsmoothed, the spike would have been two more crossings.
    assert select_level_slice(p, z, THRESHOLD, sigma_slices=0).zero_crossings == 3


@pytest.mark.parametrize(
    ("z_level", "expected"),
    [(-100.0, 0), (500.0, 59)],  # level below the series: all positive; above it: all negative
)
def test_no_crossing_takes_the_minimum_absolute_value(z_level: float, expected: int) -> None:
    z = np.arange(60) * 5.0
    choice = select_level_slice(model_outputs(z, z_level), z, THRESHOLD)
    assert choice.zero_crossings == 0
    assert choice.index == expected


def decoy_series() -> tuple[np.ndarray, np.ndarray]:
    """The level at slice 70; below it a stretch (slices 0-24) the model wrongly calls 'above the level'."""
    z = np.arange(120) * 2.0
    p = model_outputs(z, z_level=z[70], noise=0.02, seed=1)
    p[:25] = 0.9  # a decoy: the curve falls through zero at slice ~25, the wrong direction
    return z, p


def test_two_crossings_with_a_decoy_pick_the_one_shaped_like_the_ideal_curve() -> None:
    z, p = decoy_series()
    choice = select_level_slice(p, z, THRESHOLD)
    assert choice.zero_crossings == 2
    assert choice.index == 70


def test_a_decoy_that_rises_too_steps_and_loses_to_the_sigmoid() -> None:
    z = np.arange(150) * 1.5
    p = model_outputs(z, z_level=z[110], noise=0.02, seed=2)
    p[20:30] = 0.95  # a short 'above the level' blip: one rising and one falling decoy crossing
    choice = select_level_slice(p, z, THRESHOLD)
    assert choice.zero_crossings == 3
    assert choice.index == 110


def test_flipped_direction_series_head_first_uses_z_not_the_slice_order() -> None:
    z, p = decoy_series()
    # The same series stored head -> feet: the true crossing now falls with the index and the decoy rises.
    choice = select_level_slice(p[::-1], z[::-1], THRESHOLD)
    assert choice.zero_crossings == 2
    assert choice.index == 119 - 70


def test_ideal_curve_is_the_model_target_on_the_plus_minus_one_scale() -> None:
    z = np.array([-20.0, 0.0, 10.0])
    expected = 2.0 * (1.0 / (1.0 + np.exp(-z / THRESHOLD)) - 0.5)
    np.testing.assert_allclose(ideal_curve(z, 0.0, THRESHOLD), expected)


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="one prediction per slice"):
        select_level_slice(np.zeros(5), np.arange(4.0), THRESHOLD)

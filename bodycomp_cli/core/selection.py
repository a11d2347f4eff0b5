"""Choose the slice of a vertebral level from a slice-selection model's per-slice outputs.

The model predicts sigmoid(offset / threshold) for every slice, where offset = z_slice - z_level in mm
(positive above the level, toward the head). On the +-1 scale 2(p - 0.5) that is tanh(offset / 2T): it
crosses zero at the level, rising with z.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

# The neighbourhood compared with the ideal curve: +-3 thresholds, where the sigmoid still carries
# information (beyond it the curve is flat at +-1), but never fewer than this many slices a side.
NEIGHBOURHOOD_THRESHOLDS = 3.0
MIN_NEIGHBOURS = 2


@dataclass(frozen=True)
class SliceChoice:
    index: int  # the chosen slice, an index into the series (z ascending for our volumes)
    # How many sign changes the smoothed curve has (0 means "min |value|" was used); None: no model was run.
    zero_crossings: int | None
    smoothed: np.ndarray | None  # the smoothed curve on the +-1 scale, one value per slice; None: no model


def ideal_curve(z_mm: np.ndarray, z_level: float, threshold_mm: float) -> np.ndarray:
    """The noise-free model output on the +-1 scale for a level at z_level: 2(sigmoid(offset/T) - 0.5)."""
    return np.tanh((np.asarray(z_mm, dtype=np.float64) - z_level) / (2.0 * threshold_mm))


def _sign_changes(values: np.ndarray) -> np.ndarray:
    """Indices i where the curve changes sign between slice i and i + 1.

    Exact zeros count as non-negative, so a curve that touches zero on a plateau is one change, not two.
    """
    non_negative = values >= 0
    return np.flatnonzero(non_negative[1:] != non_negative[:-1])


def _crossing_slice(values: np.ndarray, change: int) -> int:
    """The slice of a sign change: whichever side of it lies nearer zero."""
    return change if abs(values[change]) <= abs(values[change + 1]) else change + 1


def _neighbourhood_correlation(
    smoothed: np.ndarray, z_mm: np.ndarray, index: int, threshold_mm: float, sigma_slices: float
) -> float:
    """Pearson correlation of the curve around `index` with the ideal curve for a level at that slice."""
    # The ideal curve goes through the same smoothing as the observed one, so a perfect prediction
    # correlates exactly 1 whatever the slice spacing.
    ideal = ideal_curve(z_mm, float(z_mm[index]), threshold_mm)
    if sigma_slices > 0:
        ideal = gaussian_filter1d(ideal, sigma_slices, mode="nearest")
    spacing = float(np.median(np.abs(np.diff(z_mm)))) if len(z_mm) > 1 else 1.0
    half = max(MIN_NEIGHBOURS, math.ceil(NEIGHBOURHOOD_THRESHOLDS * threshold_mm / max(spacing, 1e-6)))
    lo, hi = max(0, index - half), min(len(smoothed), index + half + 1)
    observed, expected = smoothed[lo:hi], ideal[lo:hi]
    if observed.std() == 0 or expected.std() == 0:
        return -math.inf
    return float(np.corrcoef(observed, expected)[0, 1])


def select_level_slice(
    probabilities: np.ndarray, z_mm: np.ndarray, threshold_mm: float, sigma_slices: float = 2.0
) -> SliceChoice:
    """Pick one level's slice from its per-slice sigmoid outputs (shape Z) at positions z_mm (shape Z).

    Example: select_level_slice(outputs[:, 0], volume.z_mm, threshold_mm=10.0).index
    """
    p = np.asarray(probabilities, dtype=np.float64)
    z = np.asarray(z_mm, dtype=np.float64)
    if p.ndim != 1 or z.shape != p.shape or p.size == 0:
        raise ValueError(f"need one prediction per slice: probabilities {p.shape}, z_mm {z.shape}")
    if threshold_mm <= 0:
        raise ValueError(f"threshold_mm must be positive, got {threshold_mm}")
    smoothed = gaussian_filter1d(p, sigma_slices, mode="nearest") if sigma_slices > 0 else p.copy()
    smoothed = 2.0 * (smoothed - 0.5)
    changes = _sign_changes(smoothed)
    candidates = [_crossing_slice(smoothed, int(change)) for change in changes]
    if not candidates:
        index = int(np.argmin(np.abs(smoothed)))
    elif len(candidates) == 1:
        index = candidates[0]
    else:
        scores = [_neighbourhood_correlation(smoothed, z, c, threshold_mm, sigma_slices) for c in candidates]
        index = candidates[int(np.argmax(scores))]
    return SliceChoice(index=index, zero_crossings=len(changes), smoothed=smoothed)

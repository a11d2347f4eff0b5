"""Whether a vertebral level lies inside a series' scanned z-range, from the selection model's per-slice outputs.

The outputs are sigmoid(offset / T) per slice, offset = z_slice - z_level (positive toward the head), so each
slice whose output is not saturated says where the level is: z_level = z - T * logit(p). In series-head mode
the outputs are made from the head's one predicted level, so they always cross 0.5 when that level lies inside
the scan and never when it lies outside; counting crossings cannot tell a chest CT from an abdomen, but the
predicted position can. A level predicted more than a margin beyond the first or last slice is not in the scan:
it gets blank measures and a reason, never a chosen slice.

Where it fails: it trusts the model's position. A model that never saw a series without the level (a chest CT
for L3) may place the level inside it; the review flags catch that, not this test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NOT_IN_SCAN = "not in scan"
# Outputs inside (INFORMATIVE, 1 - INFORMATIVE) are read as positions: |offset| <= T * logit(0.95) ~ 2.9 T.
# Further out the sigmoid is flat and a small error in p is a large error in mm.
INFORMATIVE = 0.05


@dataclass(frozen=True)
class LevelPresence:
    in_scan: bool
    level_z_mm: float  # the predicted level position; beyond the scan, a bound (at least this far out)
    reason: str  # "" when in the scan


def predicted_level_z_mm(probabilities: np.ndarray, z_mm: np.ndarray, threshold_mm: float) -> float:
    """Where one level's per-slice outputs (shape Z) place it, in mm.

    The median of z - T * logit(p) over the slices whose output is informative; when none is (the
    whole curve lies flat on one side), the end slice nearer the level, pushed out by the largest offset an
    informative output reads (a bound: the level is at least that far beyond the scan). The outputs are not
    smoothed: smoothing bends the curve at the scan's ends, just where the answer is decided; the median
    is what makes one noisy slice harmless.

    Example: predicted_level_z_mm(outputs[:, 0], volume.z_mm, threshold_mm=10.0)
    """
    p = np.asarray(probabilities, dtype=np.float64)
    z = np.asarray(z_mm, dtype=np.float64)
    if p.ndim != 1 or z.shape != p.shape or p.size == 0:
        raise ValueError(f"need one prediction per slice: probabilities {p.shape}, z_mm {z.shape}")
    informative = (p > INFORMATIVE) & (p < 1.0 - INFORMATIVE)
    if informative.any():
        q = p[informative]
        offsets = threshold_mm * np.log(q / (1.0 - q))
        return float(np.median(z[informative] - offsets))
    bound = threshold_mm * float(np.log((1.0 - INFORMATIVE) / INFORMATIVE))
    if float(np.mean(p)) >= 0.5:  # every slice above the level: it lies below the lowest slice
        return float(z.min()) - bound
    return float(z.max()) + bound


def level_presence(
    probabilities: np.ndarray, z_mm: np.ndarray, threshold_mm: float, margin_mm: float | None = None
) -> LevelPresence:
    """Is the level inside [z_min - margin, z_max + margin]? margin defaults to one threshold (T mm): a level
    within it still gets the end slice, as the slice-choice rule gives.

    Example: level_presence(outputs[:, 0], volume.z_mm, 10.0).in_scan
    """
    margin = threshold_mm if margin_mm is None else margin_mm
    level_z = predicted_level_z_mm(probabilities, z_mm, threshold_mm)
    z = np.asarray(z_mm, dtype=np.float64)
    inside = float(z.min()) - margin <= level_z <= float(z.max()) + margin
    return LevelPresence(in_scan=inside, level_z_mm=level_z, reason="" if inside else NOT_IN_SCAN)

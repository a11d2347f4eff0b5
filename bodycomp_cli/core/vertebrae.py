"""Where a slice lies along the spine, from the level offsets a meta CSV already carries.

With two or more labelled levels (e.g. ZOffset_L1 and ZOffset_L3) every slice between them has a
*vertebral coordinate* v: the vertebra count from C1 (0 at the centre of C1, 7 at T1, ..., 24 at L5), read by
linear interpolation between the labelled levels' positions. With one labelled level (L3 alone, as most
sarcopenia cohorts are annotated) the slices within one vertebra of it get v from an average adult's
vertebra length (nominal_step_mm). The fractional part of v is the slice's phase within
a vertebra: 0 at a vertebral body's centre, 0.5 at the disc. That phase is what places a slice inside a
vertebra, which organs that slide along the spine cannot tell (the slice-selection CNN learns it as
cos/sin(2 pi v), see tasks/slice_selection.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SPINE = tuple(
    [f"C{i}" for i in range(1, 8)] + [f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 6)] + ["S1"]
)


def spine_index(level: str) -> int | None:
    """The level's count from C1 (None for a name that is not a vertebra, e.g. a user's own landmark)."""
    name = str(level).upper()
    return SPINE.index(name) if name in SPINE else None


def spine_levels(levels: Sequence[str]) -> list[int]:
    """Columns of `levels` that name distinct vertebrae (the first of duplicates), from head to feet."""
    seen: dict[int, int] = {}
    for column, level in enumerate(levels):
        index = spine_index(level)
        if index is not None and index not in seen:
            seen[index] = column
    return [seen[index] for index in sorted(seen)]


def nominal_step_mm(index: int) -> float:
    """An average adult's centre-to-centre distance (mm) from vertebra `index` to the next one down.

    Cervical bodies with their discs span about 16 mm, thoracic ones grow from about 20 mm (T1) to about
    27 mm (T12), lumbar ones about 36 mm. Used only where a slice has a single labelled level, and only
    within one such step of it, so a body 10 % taller or shorter than average shifts the phase by at most a
    tenth of a vertebra at the window's edge and not at all at the level itself.
    """
    if index < 7:
        return 16.0
    if index < 19:
        return 20.0 + 7.0 * (index - 7) / 11.0
    return 36.0


def vertebral_coordinate(offsets_mm: np.ndarray, levels: Sequence[str]) -> np.ndarray:
    """Per row (a slice, offsets z_slice - z_level per level, NaN: unknown), v between its labelled levels.

    NaN where no vertebral level is known or the slice lies outside the labelled ones (no extrapolation).
    Example: offsets [[-10.0, 25.0]] for levels ["L1", "L3"] (L1 10 mm above the slice, L3 25 mm below)
    -> [19.571...] (2/7 of the way from L1, 19, to L3, 21)
    A slice with one labelled level (the common L3-only annotation) gets v from that level's nominal step
    (nominal_step_mm) within one step of it: offset -18 mm from L3 -> 21.5, the L3/L4 disc.
    """
    offsets = np.atleast_2d(np.asarray(offsets_mm, dtype=np.float64))
    columns = spine_levels(levels)
    result = np.full(len(offsets), np.nan)
    if not columns:
        return result
    indices = np.array([spine_index(levels[c]) for c in columns], dtype=np.float64)
    # z_level - z_slice: falls with the vertebra index (z grows toward the head), and the slice sits at 0.
    above = -offsets[:, columns]
    finite = np.isfinite(above)
    for pattern in np.unique(finite, axis=0):  # each set of labelled levels a slice can have
        known = np.flatnonzero(pattern)
        rows = np.flatnonzero((finite == pattern).all(axis=1))
        if len(known) == 1:
            step = nominal_step_mm(int(indices[known[0]]))
            height = above[rows, known[0]]
            near = np.abs(height) <= step
            result[rows[near]] = indices[known[0]] + height[near] / step  # level above the slice: v grows
        if len(known) < 2:
            continue
        heights, spine = above[np.ix_(rows, known)], indices[known]
        for upper, lower in zip(range(len(known) - 1), range(1, len(known)), strict=True):
            top, bottom = heights[:, upper], heights[:, lower]
            between = (bottom <= 0.0) & (0.0 <= top) & (top > bottom)
            fraction = np.where(between, top / np.where(top > bottom, top - bottom, 1.0), 0.0)
            value = spine[upper] + fraction * (spine[lower] - spine[upper])
            result[rows[between]] = value[between]
    return result


def phase_targets(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of 2 pi v (N x 2 float32, 0 where v is NaN) and their validity (N float32)."""
    v = np.asarray(v, dtype=np.float64)
    valid = np.isfinite(v)
    angle = 2.0 * np.pi * np.nan_to_num(v)
    targets = np.where(valid[:, None], np.stack([np.cos(angle), np.sin(angle)], axis=1), 0.0)
    return targets.astype(np.float32), valid.astype(np.float32)


SNAP_WINDOW_MM = 45.0  # slices this close to the head's estimate vote for the vertebra's centre
MIN_PHASE_CONFIDENCE = 0.5  # |(cos, sin)| below this: the CNN cannot tell the phase (e.g. blank or cut slices)


def phase_of(phase_outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The CNN's (cos, sin) outputs (N x 2) as a phase in (-0.5, 0.5] vertebrae and its confidence |(cos, sin)|."""
    cs = np.asarray(phase_outputs, dtype=np.float64)
    return np.arctan2(cs[:, 1], cs[:, 0]) / (2.0 * np.pi), np.hypot(cs[:, 0], cs[:, 1])


def wrap(phase: np.ndarray | float) -> np.ndarray:
    """A phase difference folded into [-0.5, 0.5) vertebrae."""
    return (np.asarray(phase, dtype=np.float64) + 0.5) % 1.0 - 0.5


def _phase_track(z_mm: np.ndarray, phase_outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The slices whose phase the CNN is sure of, by ascending z: their z, phase, and phase unwrapped along z
    (v(z) less a whole number, falling as z rises)."""
    z_mm = np.asarray(z_mm, dtype=np.float64)
    phase, confidence = phase_of(phase_outputs)
    order = np.flatnonzero(confidence > MIN_PHASE_CONFIDENCE)
    order = order[np.argsort(z_mm[order])]
    return z_mm[order], phase[order], np.unwrap(2.0 * np.pi * phase[order]) / (2.0 * np.pi)


def level_phase(z_mm: np.ndarray, phase_outputs: np.ndarray, level_z_mm: float) -> float:
    """The phase a series shows at its labelled level (interpolated between slices): where readers put it."""
    z_mm = np.asarray(z_mm, dtype=np.float64)
    cs = np.asarray(phase_outputs, dtype=np.float64)
    order = np.argsort(z_mm)
    at = [np.interp(level_z_mm, z_mm[order], cs[order, column]) for column in (0, 1)]
    return float(phase_of(np.array([at]))[0][0])


def circular_mean(phases: np.ndarray) -> float:
    """The mean of phases in vertebrae, on the circle (0.45 and -0.45 average to 0.5, not 0)."""
    angles = 2.0 * np.pi * np.asarray(phases, dtype=np.float64)
    return float(np.arctan2(np.sin(angles).mean(), np.cos(angles).mean()) / (2.0 * np.pi))


def snap_to_phase(z_mm: np.ndarray, phase_outputs: np.ndarray, estimate_z_mm: float, target_phase: float) -> float:
    """Move a level's estimated z to the nearest place where the slices' vertebral phase equals the level's own.

    The series head tells which vertebra holds the level to within a fraction of one; the phase tells where in
    its vertebra each slice lies. Near the estimate, the vertebra's length L is read from how fast the
    (unwrapped) phase turns along z, each confident slice votes for the place of the target phase in its own
    vertebra (z + (phase - target) L, as v grows toward the feet), and the median of the votes within L/2 of
    the estimate wins. The estimate is kept where too few slices tell their phase. An estimate off by more
    than half a vertebra lands on the neighbouring vertebra: the snap sharpens, it does not re-count.
    """
    z_sorted, phase, turns = _phase_track(z_mm, phase_outputs)
    near = np.abs(z_sorted - estimate_z_mm) < SNAP_WINDOW_MM
    if near.sum() < 3:
        return float(estimate_z_mm)
    z_near = z_sorted[near]
    slope = np.polyfit(z_near, turns[near], 1)[0] if np.ptp(z_near) > 0 else 0.0
    if not slope < 0:  # the phase must advance toward the feet; otherwise it is not to be trusted here
        return float(estimate_z_mm)
    length = float(np.clip(-1.0 / slope, 10.0, 60.0))
    votes = z_near + wrap(phase[near] - target_phase) * length
    votes = votes[np.abs(votes - estimate_z_mm) < length / 2.0]
    return float(np.median(votes)) if len(votes) else float(estimate_z_mm)


NEIGHBOUR_SPAN = 4  # levels at most this many vertebrae apart check each other's vertebra count


def agree_on_vertebra_count(
    z_mm: np.ndarray, phase_outputs: np.ndarray, positions: np.ndarray, spine: np.ndarray, targets: np.ndarray
) -> np.ndarray:
    """Move a snapped level by whole vertebrae where its neighbouring levels count the vertebrae otherwise.

    Along z the phase turns once per vertebra, so unwrapped it is v(z) minus one whole number C for the series.
    Each level found at positions[k] (NaN: not found) with spine index spine[k] (NaN: not a vertebra) and phase
    targets[k] says what C is. A level whose C differs from the one that at least two of its neighbours
    (levels within NEIGHBOUR_SPAN vertebrae) agree on is moved to where v(z) reads its own index: the series
    head can slip by a vertebra where organs mislead it, its neighbours rarely all do. Levels with fewer than
    two agreeing neighbours stay where they are.
    """
    positions = np.asarray(positions, dtype=np.float64).copy()
    z_sorted, _, turns = _phase_track(z_mm, phase_outputs)  # turns: v(z) - C
    usable = np.isfinite(positions) & np.isfinite(spine)
    if len(z_sorted) < 3 or usable.sum() < 3:
        return positions
    counts = np.full(len(positions), np.nan)
    counts[usable] = spine[usable] + targets[usable] - np.interp(positions[usable], z_sorted, turns)
    rounded = np.round(counts)
    moved = positions.copy()
    for k in np.flatnonzero(usable):
        neighbours = usable & (np.abs(spine - spine[k]) <= NEIGHBOUR_SPAN) & (np.arange(len(spine)) != k)
        values, votes = np.unique(rounded[neighbours], return_counts=True)
        if not len(values) or votes.max() < 2 or values[np.argmax(votes)] == rounded[k]:
            continue
        if (votes == votes.max()).sum() > 1:  # the neighbours disagree among themselves
            continue
        wanted = spine[k] + targets[k] - values[np.argmax(votes)]  # turns(z) at the level's true place
        crossing = _nearest_crossing(z_sorted, turns - wanted, positions[k])
        if crossing is not None:
            moved[k] = crossing
    return moved


def _nearest_crossing(z_sorted: np.ndarray, values: np.ndarray, near_z: float) -> float | None:
    """The z (interpolated) nearest near_z where values changes sign, or None."""
    left = np.flatnonzero(np.sign(values[:-1]) != np.sign(values[1:]))
    if not len(left):
        return None
    a, b = values[left], values[left + 1]
    z = z_sorted[left] + (z_sorted[left + 1] - z_sorted[left]) * a / np.where(a != b, a - b, 1.0)
    return float(z[np.argmin(np.abs(z - near_z))])

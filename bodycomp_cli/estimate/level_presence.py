"""Whether a vertebral level lies inside a series' scanned z-range, from the selection model's per-slice outputs.

The outputs are sigmoid(offset / T) per slice, offset = z_slice - z_level (positive toward the head), so each
slice whose output is not saturated says where the level is: z_level = z - T * logit(p). In series-head mode
the outputs are made from the head's one predicted level, so they always cross 0.5 when that level lies inside
the scan and never when it lies outside; counting crossings cannot tell a chest CT from an abdomen, but the
predicted position can. A level predicted more than a margin (half a threshold) beyond the first or last slice
is not in the scan: it gets blank measures and a reason, never a chosen slice.

With a series head the level must be inside by every reading the run gives (level_presence_of_evidence): the
position the slice choice reads (the head's after the vertebral phase snapped it), the head's before the snap,
and the per-slice CNN's. The snap looks for the level's phase near the head's position, and from a level just
beyond an end it may land on the end's own vertebra: on held-out phantoms (issue 24) every level reported in
the scan while lying 27-45 mm beyond it had been moved 16-22 mm inward by the snap, or was seen beyond the end
by the CNN.

One test reads the pixels instead: a series whose every slice shows the rib cage (rib_cage.inside_rib_cage)
holds no vertebra below T12, whatever the model reads. Phantom-trained models read the real 38 mm chest series
of ../shared/realct as holding L3 with every reading; this rule reports it absent.

Two tests read how the names were counted. With every level from T12 up read above the scan, no rib anchors the
names and the model counted the lumbar levels up from the sacrum, one vertebra too low over a lumbarised S1: a
lumbar level then stays in the scan only if the vertebra above it does too (one_name_up_lies_beyond_the_top). Its
cost: an L5 in a pelvis scan that starts less than an adult's vertebra (36 mm) above it is blanked, present or not.
And four lumbar vertebrae counted with no sacrum in the scan below L5 cannot tell a sacralised L5 from an L4 named
"L5": that L5 is not in the scan (short_count_without_a_sacrum). A wrong number is worse than a missing one.

Where it fails: otherwise it trusts the model's readings. A model that never saw a series without the level may
place the level inside it with every reading where the ribs do not settle it (a pelvis read as holding L3, a
chest series with metal on a sampled slice); the review flags catch that, not this test.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from bodycomp_cli.core.vertebrae import nominal_step_mm, spine_index
from bodycomp_cli.estimate.rib_cage import below_rib_cage
from bodycomp_cli.estimate.vertebra_count import LUMBAR, is_lumbar, lumbar_count
from bodycomp_cli.tasks.slice_selection.evidence import SelectionEvidence

NOT_IN_SCAN = "not in scan"
# Outputs inside (INFORMATIVE, 1 - INFORMATIVE) are read as positions: |offset| <= T * logit(0.95) ~ 2.9 T.
# Further out the sigmoid is flat and a small error in p is a large error in mm.
INFORMATIVE = 0.05
# A level whose centre lies at an end of the scan is in it; one whose centre lies a threshold (T mm) beyond is not.
# The line between sits halfway, so that a position error under T/2 decides either one right. At one whole T a
# chest-only phantom's T12, 13 mm below the last slice and read 9 mm below it, was kept in the scan (issue 24).
MARGIN_THRESHOLDS = 0.5


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
    """Is the level inside [z_min - margin, z_max + margin]? margin defaults to half a threshold (MARGIN_THRESHOLDS):
    a level within it still gets the end slice, as the slice-choice rule gives.

    Example: level_presence(outputs[:, 0], volume.z_mm, 10.0).in_scan
    """
    margin = MARGIN_THRESHOLDS * threshold_mm if margin_mm is None else margin_mm
    level_z = predicted_level_z_mm(probabilities, z_mm, threshold_mm)
    z = np.asarray(z_mm, dtype=np.float64)
    inside = float(z.min()) - margin <= level_z <= float(z.max()) + margin
    return LevelPresence(in_scan=inside, level_z_mm=level_z, reason="" if inside else NOT_IN_SCAN)


def level_presence_of_evidence(
    columns: Sequence[np.ndarray | None], z_mm: np.ndarray, threshold_mm: float, margin_mm: float | None = None
) -> LevelPresence:
    """level_presence of the first column (what the slice choice reads), but not in the scan when any other
    column (the head's before the snap, the per-slice CNN's; None: the run has none) puts the level beyond it.

    Example: level_presence_of_evidence([outputs[:, k], head[:, k], cnn[:, k]], volume.z_mm, 10.0).in_scan
    """
    chosen = level_presence(columns[0], z_mm, threshold_mm, margin_mm)  # type: ignore[arg-type]
    if not chosen.in_scan:
        return chosen
    for column in columns[1:]:
        if column is not None and not level_presence(column, z_mm, threshold_mm, margin_mm).in_scan:
            return LevelPresence(in_scan=False, level_z_mm=chosen.level_z_mm, reason=NOT_IN_SCAN)
    return chosen


def pressed_against_an_end(
    level: str, level_z_mm: float, positions_mm: Mapping[str, float], z_mm: np.ndarray, threshold_mm: float
) -> bool:
    """Is a level found within one threshold of an end of the scan where its nearest vertebral neighbour on the
    inner side, at an average adult's spacing (core/vertebrae.nominal_step_mm), puts it more than one threshold
    beyond that end? Then the model squeezed a level that lies beyond the scan into it: on held-out phantoms
    such an L5 lay 17-18 mm per vertebra from L3 (an adult's ~36) and 27-29 mm below the last slice.

    Example: pressed_against_an_end("L5", -307.0, {"L3": -290.0, "L5": -307.0}, volume.z_mm, 10.0)
    """
    index = spine_index(level)
    if index is None:
        return False
    z = np.asarray(z_mm, dtype=np.float64)
    low, high = float(z.min()), float(z.max())
    named = [(spine_index(name), z_other) for name, z_other in positions_mm.items() if name != level]
    others = [(i, z_other) for i, z_other in named if i is not None]
    for at_bottom in (True, False):
        if (level_z_mm > low + threshold_mm) if at_bottom else (level_z_mm < high - threshold_mm):
            continue
        inner = [(i, z_other) for i, z_other in others if (i < index if at_bottom else i > index)]
        if not inner:
            continue
        other_index, other_z = min(inner, key=lambda item: abs(item[0] - index))
        span = sum(nominal_step_mm(k) for k in range(min(other_index, index), max(other_index, index)))
        if (other_z - span < low - threshold_mm) if at_bottom else (other_z + span > high + threshold_mm):
            return True
    return False


def positions_in_scan(presences: Mapping[str, LevelPresence]) -> dict[str, float]:
    """The predicted z of every level series_presence keeps in the scan: the neighbours the spacing cue and the
    lumbar count may read. A level it called absent (squeezed against an end, or beyond by the spine's order)
    is no neighbour, even where its own position lies inside.

    Example: positions_in_scan(series_presence(evidence, volume.z_mm, 10.0))  # {"L3": 48.0, ...}
    """
    return {level: p.level_z_mm for level, p in presences.items() if p.in_scan}


def counted_up_from_the_sacrum(presences: Mapping[str, LevelPresence], high_mm: float) -> bool:
    """Does the run read every level it has from T12 up (one at least) above the top of the scan? Then no rib in the
    scan anchors the names from above, and the model can only have named the lumbar levels by counting up from the
    sacrum, which a lumbarised S1 (six lumbar vertebrae) puts one vertebra too low.

    Example: counted_up_from_the_sacrum(presences, float(volume.z_mm.max()))
    """
    last_rib = spine_index("T12")
    indices = {level: spine_index(level) for level in presences}
    above = [p for level, p in presences.items() if indices[level] is not None and indices[level] <= last_rib]
    return bool(above) and all(not p.in_scan and p.level_z_mm > high_mm for p in above)


def one_name_up_lies_beyond_the_top(level: str, level_z_mm: float, high_mm: float, threshold_mm: float) -> bool:
    """Would a lumbar level lie beyond the scan (more than half a threshold above the top slice) if its name were one
    vertebra too low, as names counted up from the sacrum of a lumbarised S1 are? Its vertebra above, an adult's
    lumbar spacing higher, says. A pelvis that starts at L3 looks like one that starts at L4 over six lumbar
    vertebrae: on a held-out and a tuning pelvis-only phantom (issue 24) "L3" was the true L4, 2 and 12 mm below
    the top, with L3 32 and 29 mm above it. A wrong number is worse than a missing one, so counted from the
    sacrum alone a lumbar level is kept only where both counts put it in the scan.

    Example: one_name_up_lies_beyond_the_top("L3", 100.0, 116.0, 10.0)  # True: L3 would be near 136 mm
    """
    if not is_lumbar(level):
        return False
    index = spine_index(level)
    return level_z_mm + nominal_step_mm(index - 1) > high_mm + MARGIN_THRESHOLDS * threshold_mm  # type: ignore[operator]


def short_count_without_a_sacrum(
    evidence: SelectionEvidence, z_mm: np.ndarray, positions_mm: Mapping[str, float], threshold_mm: float
) -> bool:
    """Does the model count fewer than five lumbar vertebrae (vertebra_count.lumbar_count) while the scan ends
    less than one adult's vertebra (and a threshold) below its L5, before the sacrum? A sacralised L5 is told by the
    sacrum fused to it; with no sacrum in the scan, four lumbar vertebrae cannot be told from an L4 named "L5" with
    L5 below the scan, as on a held-out phantom with a cut field of view (issue 24): "L5" read inside, the true
    one 35 mm below.

    Example: short_count_without_a_sacrum(evidence, volume.z_mm, positions_in_scan(presences), 10.0)
    """
    if "L5" not in positions_mm:
        return False
    count = lumbar_count(z_mm, evidence.phase, positions_mm).count
    if count is None or count >= LUMBAR:
        return False
    sacrum_z = positions_mm["L5"] - nominal_step_mm(spine_index("L5"))  # type: ignore[arg-type]
    return sacrum_z < float(np.min(z_mm)) - threshold_mm


def series_presence(
    evidence: SelectionEvidence, z_mm: np.ndarray, threshold_mm: float, inside_rib_cage: bool = False
) -> dict[str, LevelPresence]:
    """Every output level's presence: level_presence_of_evidence, then pressed_against_an_end, then the naming
    tests (one_name_up_lies_beyond_the_top where counted_up_from_the_sacrum; short_count_without_a_sacrum), then
    the spine's order. A vertebra found beyond the bottom of the scan has every vertebra below it beyond as well,
    and one beyond the top every vertebra above it: a chest CT whose L1 lies below its last slice holds no L3, whatever
    L3's own readings say. A series with every slice inside the rib cage (rib_cage.inside_rib_cage) holds no
    vertebra below T12 (rib_cage.below_rib_cage), whatever the model reads.

    Example: series_presence(models.selection_evidence(volume.hu, volume.z_mm), volume.z_mm, 10.0)["L3"].in_scan
    """
    z = np.asarray(z_mm, dtype=np.float64)
    low, high = float(z.min()), float(z.max())
    presence = {}
    for k, level in enumerate(evidence.levels):
        head = None if evidence.head_outputs is None else evidence.head_outputs[:, k]
        readings = [evidence.outputs[:, k], head, evidence.cnn_outputs[:, k]]
        presence[level] = level_presence_of_evidence(readings, z, threshold_mm)
        if inside_rib_cage and below_rib_cage(level):
            presence[level] = LevelPresence(False, presence[level].level_z_mm, NOT_IN_SCAN)
    found = positions_in_scan(presence)
    for level, p in presence.items():
        if p.in_scan and pressed_against_an_end(level, p.level_z_mm, found, z, threshold_mm):
            presence[level] = LevelPresence(False, p.level_z_mm, NOT_IN_SCAN)
    if counted_up_from_the_sacrum(presence, high):
        for level, p in presence.items():
            if p.in_scan and one_name_up_lies_beyond_the_top(level, p.level_z_mm, high, threshold_mm):
                presence[level] = LevelPresence(False, p.level_z_mm, NOT_IN_SCAN)
    if short_count_without_a_sacrum(evidence, z, positions_in_scan(presence), threshold_mm):
        presence["L5"] = LevelPresence(False, presence["L5"].level_z_mm, NOT_IN_SCAN)
    absent = [(spine_index(level), p.level_z_mm) for level, p in presence.items() if not p.in_scan]
    below = [i for i, level_z in absent if i is not None and level_z < low]
    above = [i for i, level_z in absent if i is not None and level_z > high]
    for level, p in presence.items():
        index = spine_index(level)
        if p.in_scan and index is not None and (any(index > i for i in below) or any(index < i for i in above)):
            presence[level] = LevelPresence(False, p.level_z_mm, NOT_IN_SCAN)
    return presence

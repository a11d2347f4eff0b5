"""How many lumbar vertebrae the slice-selection model saw in a series, and whether that makes it transitional.

The series head names levels from the anatomy around them (the last ribs above L1, the iliac crests and the
sacrum below L5); the CNN's vertebral phase turns once per vertebra whatever the vertebrae are called
(core/vertebrae.py). So the phase turns counted between two predicted anchor levels, one at the top of the lumbar
spine (T12 or L1) and one at its bottom (L5 or S1), say how many vertebrae lie between them: with L1 and L5,
five lumbar vertebrae read four turns, six (a lumbarised S1, or a thirteenth rib-free T12) read five.

The count is left blank, with a reason, when the run outputs no phase (runs without a series head, or trained
on data with one labelled level), when the anchors are not both among its levels and inside the scan, or when
the phase cannot be read over a stretch longer than half a vertebra between them (the turns would be
ambiguous). A count other than five sets `transitional` and is a review reason for every lumbar level.
The names stay the model's: the count warns that they may be shifted, it does not rename them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from bodycomp_cli.core.vertebrae import MIN_PHASE_CONFIDENCE, phase_of, spine_index

LUMBAR = 5
TOP_ANCHORS = ("L1", "T12")  # in order of preference
BOTTOM_ANCHORS = ("L5", "S1")
LARGEST_GAP_MM = 18.0  # half a lumbar vertebra: a longer stretch without a readable phase may hide a turn
COUNT_COLUMNS = ("lumbar_vertebrae", "transitional", "lumbar_vertebrae_reason")


def is_lumbar(level: str) -> bool:
    """L1 to L5: the levels a lumbar count other than five may have misnamed."""
    index = spine_index(level)
    return index is not None and spine_index("L1") <= index <= spine_index("L5")  # type: ignore[operator]


@dataclass(frozen=True)
class LumbarCount:
    count: int | None
    reason: str  # why the count is blank ("" when there is one)

    @property
    def transitional(self) -> bool | None:
        return None if self.count is None else self.count != LUMBAR

    def cells(self) -> dict[str, object]:
        """The row's COUNT_COLUMNS."""
        return dict(zip(COUNT_COLUMNS, (self.count, self.transitional, self.reason), strict=True))

    @property
    def review_reason(self) -> str:
        """The reason every lumbar level gets when the count is not five."""
        if not self.transitional:
            return ""
        return f"the model counts {self.count} lumbar vertebrae: the level names may be shifted"


def lumbar_count(z_mm: np.ndarray, phase_outputs: np.ndarray | None, positions_mm: Mapping[str, float]) -> LumbarCount:
    """The lumbar count from the CNN's (cos, sin) phase per slice and the predicted z of the levels in the scan.

    Example: lumbar_count(volume.z_mm, evidence.phase, {"L1": 402.0, "L5": 260.0}).count  # 5
    """
    if phase_outputs is None:
        return LumbarCount(None, "the selection model gives no vertebral phase to count with")
    top = next((name for name in TOP_ANCHORS if name in positions_mm), None)
    bottom = next((name for name in BOTTOM_ANCHORS if name in positions_mm), None)
    if top is None or bottom is None:
        return LumbarCount(None, "needs T12 or L1 and L5 or S1 among the model's levels, inside the scan")
    z_top, z_bottom = positions_mm[top], positions_mm[bottom]
    if not z_bottom < z_top:
        return LumbarCount(None, f"{bottom} lies above {top}")
    z_mm = np.asarray(z_mm, dtype=np.float64)
    phase, confidence = phase_of(phase_outputs)
    order = np.argsort(z_mm)
    keep = order[confidence[order] > MIN_PHASE_CONFIDENCE]
    z_sure, turns = z_mm[keep], np.unwrap(2.0 * np.pi * phase[keep]) / (2.0 * np.pi)
    between = (z_sure >= z_bottom) & (z_sure <= z_top)
    stops = np.concatenate([[z_bottom], z_sure[between], [z_top]])
    if between.sum() < 2 or np.max(np.diff(stops)) > LARGEST_GAP_MM:
        return LumbarCount(None, f"the vertebral phase is unread over more than {LARGEST_GAP_MM:.0f} mm")
    # v grows toward the feet, the unwrapped phase falls as z rises: vertebrae between = turns(bottom) - turns(top).
    vertebrae = float(np.interp(z_bottom, z_sure, turns) - np.interp(z_top, z_sure, turns))
    named = spine_index(bottom) - spine_index(top)  # type: ignore[operator]
    return LumbarCount(LUMBAR + round(vertebrae) - named, "")

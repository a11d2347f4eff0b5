"""Which levels a reader should look at: review reasons in words and a confidence, from cues that fail apart.

In series-head runs the curve the slice choice reads is made from the head's one level position, so it always
crosses zero once and that count can never warn. The cues below each read something else:

- position: where the per-slice CNN's own outputs put the level (level_presence.predicted_level_z_mm) against
  the chosen slice; a CNN that sees no such level in the scan puts it beyond an end;
- snap: how far the vertebral phase moved the series head's level (a head half a vertebra off lands the snap
  on the neighbouring vertebra);
- sharpness: how far the CNN's outputs around the chosen slice lie from the ideal sigmoid of a level there
  (RMS over +-3 thresholds): a blurred or notched curve is a guess;
- spacing: the distance per vertebra from this level to its nearest predicted vertebral neighbours against an
  average adult's (core/vertebrae.nominal_step_mm), and a lumbar count other than five (vertebra_count.py);
- uncertainty: the share of tissue pixels whose top two class probabilities lie within MARGIN of each other;
- field of view: a tissue touching the edge (field_of_view.py), whose area is then too small;
- HU: a tissue's mean HU outside the range that tissue has, muscle -29..150 HU and fat -190..-30 HU
  (Mitsiopoulos N et al. J Appl Physiol 1998;85:115-122; muscle_quality.py holds the same ranges).

Each cue gives a ratio r (its measure over its tolerance; 1 for a yes/no cue that fires); r >= 1 is a reason.
The level's confidence is 1 / (1 + max r): 1 when every cue is silent, <= 0.5 exactly when a reason is given.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from bodycomp_cli.core.selection import ideal_curve
from bodycomp_cli.core.vertebrae import nominal_step_mm, spine_index
from bodycomp_cli.estimate.level_presence import predicted_level_z_mm
from bodycomp_cli.estimate.muscle_quality import FAT_HU, MUSCLE_HU
from bodycomp_cli.tasks.slice_selection.evidence import SelectionEvidence

MARGIN = 0.5  # a pixel is uncertain when its top class leads the next by less than this probability


@dataclass(frozen=True)
class Tolerances:
    """Where each cue starts to speak. Set by hand, not yet tuned: benchmarks/review_flag.py measures how they do
    (docs/performance.md), and on the small models measured so far they flag every right level too."""

    position_mm: float = 10.0  # the target: a level more than 10 mm off is wrong
    snap_mm: float = 12.0  # a third of a lumbar vertebra
    misfit: float = 0.2  # RMS of the CNN's outputs against the ideal sigmoid, within +-3 thresholds
    spacing_factor: float = 1.6  # distance per vertebra beyond [nominal / f, nominal * f]
    uncertain_share: float = 0.15  # tissue pixels with a margin below MARGIN


@dataclass(frozen=True)
class Segmentation:
    """The chosen slice's HU and labels, the model's classes, and (when the model gives it) the per-pixel
    margin between its top two class probabilities."""

    hu: np.ndarray
    labels: np.ndarray
    classes: Sequence[str]
    margin: np.ndarray | None = None
    touching_edge: Mapping[str, bool] = field(default_factory=dict)


@dataclass(frozen=True)
class Review:
    reasons: list[str]
    confidence: float

    @property
    def text(self) -> str:
        """The `<LEVEL>_review` cell: the reasons joined by '; ' ("" when none)."""
        return "; ".join(self.reasons)


def _words(tissue: str) -> str:
    return tissue.replace("_", " ")


def _selection_ratios(
    evidence: SelectionEvidence, level: str, z_mm: np.ndarray, threshold_mm: float, chosen_z_mm: float
) -> list[tuple[float, str]]:
    """The position, snap and sharpness cues of one level: (ratio, reason) each."""
    tol = Tolerances()
    k = evidence.levels.index(level)
    cnn = np.asarray(evidence.cnn_outputs[:, k], dtype=np.float64)
    cues = []
    cnn_z = predicted_level_z_mm(cnn, z_mm, threshold_mm)
    if cnn_z < z_mm.min() - threshold_mm or cnn_z > z_mm.max() + threshold_mm:
        cues.append((math.inf, f"the per-slice CNN sees no {level} in the scan"))
    else:
        apart = abs(cnn_z - chosen_z_mm)
        cues.append((apart / tol.position_mm, f"the per-slice CNN puts {level} {apart:.0f} mm from the chosen slice"))
    if evidence.head_outputs is not None:
        head_z = predicted_level_z_mm(evidence.head_outputs[:, k], z_mm, threshold_mm)
        moved = abs(head_z - chosen_z_mm)
        cues.append((moved / tol.snap_mm, f"the vertebral phase moved {level} {moved:.0f} mm from the series head's"))
    near = np.abs(z_mm - chosen_z_mm) <= 3.0 * threshold_mm
    if near.sum() >= 2:
        ideal = (ideal_curve(z_mm[near], chosen_z_mm, threshold_mm) + 1.0) / 2.0
        misfit = float(np.sqrt(np.mean((cnn[near] - ideal) ** 2)))
        cues.append((misfit / tol.misfit, f"the per-slice curve around {level} is not sharp (misfit {misfit:.2f})"))
    return cues


def _spacing_ratios(level: str, positions_mm: Mapping[str, float]) -> list[tuple[float, str]]:
    """Per vertebral neighbour found (nearest above and below), how its distance per vertebra compares."""
    index = spine_index(level)
    if index is None or level not in positions_mm:
        return []
    named = {name: spine_index(name) for name in positions_mm if name != level}
    others = sorted((i, positions_mm[name], name) for name, i in named.items() if i is not None)
    above = [item for item in others if item[0] < index][-1:]
    below = [item for item in others if item[0] > index][:1]
    factor = Tolerances().spacing_factor
    cues = []
    for other_index, other_z, name in above + below:
        steps = abs(other_index - index)
        nominal = float(np.mean([nominal_step_mm(i) for i in range(min(index, other_index), max(index, other_index))]))
        per_vertebra = (other_z - positions_mm[level]) / (index - other_index)  # > 0: z rises toward the head
        if per_vertebra <= 0:
            cues.append((math.inf, f"{level} lies on the wrong side of {name}"))
            continue
        ratio = abs(math.log(per_vertebra / nominal)) / math.log(factor)
        spacing = f"{per_vertebra:.0f} mm per vertebra from {name} over {steps} (an adult's: ~{nominal:.0f})"
        cues.append((ratio, f"{level} lies {spacing}"))
    return cues


def _segmentation_ratios(level: str, seg: Segmentation) -> list[tuple[float, str]]:
    cues = []
    tissue = np.asarray(seg.labels) > 0
    if seg.margin is not None and tissue.any():
        share = float(np.mean(np.asarray(seg.margin)[tissue] < MARGIN))
        cues.append(
            (share / Tolerances().uncertain_share, f"the segmentation is unsure of {100 * share:.0f} % of the tissue")
        )
    for name, touches in seg.touching_edge.items():
        if touches:
            cues.append((1.0, f"{_words(name)} touches the edge of the field of view"))
    for label, name in enumerate(seg.classes):
        bounds = MUSCLE_HU if "muscle" in name else FAT_HU if "fat" in name else None
        values = np.asarray(seg.hu)[np.asarray(seg.labels) == label]
        if label == 0 or bounds is None or values.size == 0:
            continue
        mean = float(values.mean())
        if not bounds[0] <= mean <= bounds[1]:
            cues.append((1.0, f"{_words(name)} mean {mean:.0f} HU lies outside {bounds[0]:.0f}..{bounds[1]:.0f} HU"))
    return cues


def review_reasons(
    evidence: SelectionEvidence | None,
    level: str,
    z_mm: np.ndarray,
    threshold_mm: float,
    chosen_z_mm: float,
    positions_mm: Mapping[str, float] | None = None,
    segmentation: Segmentation | None = None,
    count_reason: str = "",
) -> Review:
    """Why a reader should check LEVEL of one series (each cue's reason when it speaks) and its confidence.

    evidence: the selection run's outputs for the series (every output level; None when no model chose the
    slice, as in a one-slice series); chosen_z_mm: the chosen slice's
    z; positions_mm: the predicted z of every output level found in the scan (for the spacing cue);
    segmentation: the chosen slice's (for the uncertainty, field-of-view and HU cues); count_reason: a reason
    from the lumbar count (vertebra_count.py), "" when it is five or unknown.
    Example: review_reasons(evidence, "L3", volume.z_mm, 10.0, 312.0).text
    """
    z_mm = np.asarray(z_mm, dtype=np.float64)
    cues = [] if evidence is None else _selection_ratios(evidence, level, z_mm, threshold_mm, chosen_z_mm)
    cues += _spacing_ratios(level, positions_mm or {})
    if segmentation is not None:
        cues += _segmentation_ratios(level, segmentation)
    if count_reason:
        cues.append((1.0, count_reason))
    worst = max((ratio for ratio, _ in cues), default=0.0)
    return Review([reason for ratio, reason in cues if ratio >= 1.0], 1.0 / (1.0 + worst))


# A phrase each cue's reasons hold, and the cue's name: for counting which cues fire (benchmarks, corrections).
CUE_PHRASES = {
    "per-slice CNN": "position",
    "vertebral phase moved": "snap",
    "not sharp": "sharpness",
    "per vertebra from": "spacing",
    "wrong side of": "spacing",
    "lumbar vertebrae": "count",
    "segmentation is unsure": "uncertainty",
    "edge of the field of view": "field of view",
    "HU lies outside": "HU",
}


def cues_of(review_text: str) -> list[str]:
    """The cues behind a `<LEVEL>_review` cell, one per reason ("other" for a reason no cue here gives)."""
    reasons = [reason for reason in review_text.split("; ") if reason]
    return [next((cue for phrase, cue in CUE_PHRASES.items() if phrase in reason), "other") for reason in reasons]


def level_positions(evidence: SelectionEvidence, z_mm: np.ndarray, threshold_mm: float) -> dict[str, float]:
    """Every output level's predicted z (from the outputs the slice choice reads), for those inside the scan."""
    z_mm = np.asarray(z_mm, dtype=np.float64)
    positions = {}
    for k, level in enumerate(evidence.levels):
        z = predicted_level_z_mm(evidence.outputs[:, k], z_mm, threshold_mm)
        if z_mm.min() - threshold_mm <= z <= z_mm.max() + threshold_mm:
            positions[level] = z
    return positions

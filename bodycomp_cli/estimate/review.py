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
  average adult's (core/vertebrae.nominal_step_mm), the worst such distance between any two other consecutive
  predicted levels (a vertebra skipped higher up shifts every name below it), and a lumbar count other than
  five (vertebra_count.py);
- uncertainty: the Dice the segmentation expects of each tissue from its own probabilities (a soft Dice of
  its probabilities against its labels; segmentation/predictor.expected_dice);
- shift: the lowest tissue Dice between the labels and those of the same slice moved by 3 % of the image and
  moved back (segmentation/predictor.shift_agreement). Expected Dice reads only the softmax, and a model can be
  sure of wrong labels; a CNN is nearly shift-equivariant, so labels that change when the slice moves were not
  settled by the pixels. On tuning cohorts it caught a visceral fat Dice of 0.87 that expected more than 0.92;
  scaling it by 0.9 separated as well, flipping, scaling by 1.1 and rotating less (benchmarks/review_candidates.py);
- field of view: a tissue touching the edge (field_of_view.py), whose area is then too small;
- HU: a tissue's mean HU outside the range that tissue has, muscle -29..150 HU and fat -190..-30 HU
  (Mitsiopoulos N et al. J Appl Physiol 1998;85:115-122; muscle_quality.py holds the same ranges);
- metal: an implant on the chosen slice (metal.py), whose streaks change the HU and the labels around it. The
  segmentation can be sure of a streaked slice: on held-out phantoms a slice with pedicle screws and rods had
  visceral fat Dice 0.79 while the model expected more than 0.92.

Each cue gives a measure (written to `<LEVEL>_review_cues`) and a ratio r, its measure over its tolerance (1
for a yes/no cue that fires, 0 for one that does not); r >= 1 is a reason.
The level's confidence is 1 / (1 + max r): 1 when every cue is silent, <= 0.5 exactly when a reason is given.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from bodycomp_cli.core.selection import ideal_curve
from bodycomp_cli.core.vertebrae import nominal_step_mm, spine_index
from bodycomp_cli.estimate.level_presence import level_presence, predicted_level_z_mm
from bodycomp_cli.estimate.metal import METAL_AREA_MM2, METAL_HU, metal_area_mm2
from bodycomp_cli.estimate.muscle_quality import FAT_HU, MUSCLE_HU
from bodycomp_cli.tasks.slice_selection.evidence import SelectionEvidence


@dataclass(frozen=True)
class Tolerances:
    """Where each cue starts to speak (its ratio reaches 1). Set on a tuning cohort of phantoms and then
    measured on other cohorts (benchmarks/review_flag.py, docs/performance.md)."""

    # Set on the held-out phantom cohort of seed 1000 (benchmarks/review_flag.py --tune, docs/performance.md):
    # the selection cues at about the 97th-99th percentile of their measure on right levels (where the
    # phantom-trained per-slice CNN is 25 mm from a right head at its 95th percentile), the spacing where
    # five of six levels 12-24 mm off (T5 read half a vertebra from T8) exceed it; the segmentation's
    # expected Dice where it caught every L3 below Dice 0.90 there.
    position_mm: float = 35.0
    snap_mm: float = 15.0
    misfit: float = 0.45  # RMS of the CNN's outputs against the ideal sigmoid, within +-3 thresholds
    spacing_factor: float = 1.25  # distance per vertebra beyond [nominal / f, nominal * f]
    # Any two consecutive predicted levels elsewhere on the spine: set on tuning cohorts 1005-1008 (both training
    # seeds), where it caught the two L3s a vertebra off that every other cue missed (1.98 and 21.6) and flagged
    # one right, silent L3 of 119 with each seed (their 99th percentiles 1.70 and 1.56).
    chain_factor: float = 1.8
    expected_dice: float = 0.92  # tracks the true Dice (Spearman 0.65-0.93 per tissue), 0.001-0.02 above it
    # Set on tuning cohorts 1005-1008 with both training seeds' models (benchmarks/review_candidates.py): right
    # L3s the other cues left silent had 0.940 / 0.950 at their 1st percentile; a confident wrong slice 0.921.
    shift_agreement: float = 0.93


@dataclass(frozen=True)
class Segmentation:
    """The chosen slice's HU and labels, the model's classes, and (when the model gives it) the Dice it expects
    per class (SegmentationPredictor.segment_with_expected_dice; NaN for a class it did not find)."""

    hu: np.ndarray
    labels: np.ndarray
    classes: Sequence[str]
    expected_dice: Sequence[float] | None = None
    touching_edge: Mapping[str, bool] = field(default_factory=dict)
    pixel_spacing: tuple[float, float] | None = None  # None: no areas, so no metal cue
    shift_agreement: float | None = None  # lowest tissue Dice of the labels against the moved slice's (None: unread)


@dataclass(frozen=True)
class Cue:
    """One cue's measure: key names it in the `<LEVEL>_review_cues` cell (`position_mm`, `expected_dice_muscle`);
    its kind (the key's start, CUE_KINDS) says how value compares with the tolerance; yes/no cues are 1 or 0."""

    key: str
    value: float
    reason: str

    @property
    def kind(self) -> str:
        return next(kind for kind in CUE_KINDS if self.key.startswith(kind))

    def ratio(self, tolerances: Tolerances | None = None) -> float:
        """The measure over its tolerance: >= 1 is a reason."""
        tol = tolerances or Tolerances()
        kind, value = self.kind, self.value
        if kind in ("spacing_factor", "chain_factor"):
            return math.log(value) / math.log(getattr(tol, kind)) if value > 0 else math.inf
        if kind in ("expected_dice", "shift_agreement"):
            return (1.0 - value) / (1.0 - getattr(tol, kind))
        if kind in ("position_mm", "snap_mm", "misfit"):
            return value / getattr(tol, kind)
        return value  # yes/no cues


# Each kind of measure, and the cue it belongs to in the tables (benchmarks, corrections).
CUE_KINDS = {
    "absent_cnn": "position",
    "position_mm": "position",
    "snap_mm": "snap",
    "misfit": "sharpness",
    "spacing_factor": "spacing",
    "wrong_side": "spacing",
    "chain_factor": "spacing",
    "count": "count",
    "expected_dice": "uncertainty",
    "shift_agreement": "shift",
    "edge": "field of view",
    "hu": "HU",
    "metal": "metal",
}


@dataclass(frozen=True)
class Review:
    cues: list[Cue]
    tolerances: Tolerances = field(default_factory=Tolerances)

    @property
    def reasons(self) -> list[str]:
        return [cue.reason for cue in self.cues if cue.ratio(self.tolerances) >= 1.0]

    @property
    def confidence(self) -> float:
        """1 / (1 + the largest ratio): 1 when every cue is silent, <= 0.5 exactly when a reason is given."""
        return 1.0 / (1.0 + max((cue.ratio(self.tolerances) for cue in self.cues), default=0.0))

    @property
    def text(self) -> str:
        """The `<LEVEL>_review` cell: the reasons joined by '; ' ("" when none)."""
        return "; ".join(self.reasons)

    @property
    def measures(self) -> str:
        """The `<LEVEL>_review_cues` cell: every cue's measure, `key=value; ...`, whether it spoke or not, so that
        a lab can see how near each came and set its own tolerances (review_from_measures)."""
        return "; ".join(f"{cue.key}={cue.value:.4g}" for cue in self.cues)


def parse_measures(cell: str) -> list[Cue]:
    """The cues of a `<LEVEL>_review_cues` cell, with their measures (reasons are not stored: blank)."""
    items = filter(None, (part.strip() for part in cell.split(";")))
    return [Cue(key, float(value), "") for key, _, value in (item.partition("=") for item in items)]


def review_from_measures(cell: str, tolerances: Tolerances) -> list[str]:
    """The cues (CUE_KINDS' values) a `<LEVEL>_review_cues` cell gives reasons for under other tolerances."""
    return [CUE_KINDS[cue.kind] for cue in parse_measures(cell) if cue.ratio(tolerances) >= 1.0]


def _words(tissue: str) -> str:
    return tissue.replace("_", " ")


def _selection_cues(
    evidence: SelectionEvidence, level: str, z_mm: np.ndarray, threshold_mm: float, chosen_z_mm: float
) -> list[Cue]:
    """The position, snap and sharpness cues of one level."""
    k = evidence.levels.index(level)
    cnn = np.asarray(evidence.cnn_outputs[:, k], dtype=np.float64)
    cues = []
    seen = level_presence(cnn, z_mm, threshold_mm)  # beyond the scan's margin: the CNN sees no level here
    if not seen.in_scan:
        cues.append(Cue("absent_cnn", math.inf, f"the per-slice CNN sees no {level} in the scan"))
    else:
        apart = abs(seen.level_z_mm - chosen_z_mm)
        cues.append(Cue("position_mm", apart, f"the per-slice CNN puts {level} {apart:.0f} mm from the chosen slice"))
    if evidence.head_outputs is not None:
        head_z = predicted_level_z_mm(evidence.head_outputs[:, k], z_mm, threshold_mm)
        moved = abs(head_z - chosen_z_mm)
        cues.append(Cue("snap_mm", moved, f"the vertebral phase moved {level} {moved:.0f} mm from the series head's"))
    near = np.abs(z_mm - chosen_z_mm) <= 3.0 * threshold_mm
    if near.sum() >= 2:
        ideal = (ideal_curve(z_mm[near], chosen_z_mm, threshold_mm) + 1.0) / 2.0
        misfit = float(np.sqrt(np.mean((cnn[near] - ideal) ** 2)))
        cues.append(Cue("misfit", misfit, f"the per-slice curve around {level} is not sharp (misfit {misfit:.2f})"))
    return cues


def _spacing(index_a: int, z_a: float, index_b: int, z_b: float) -> tuple[float, float, float]:
    """Between two predicted vertebral levels: mm per vertebra (> 0 when z rises toward the head, as it must),
    an average adult's over the same vertebrae, and their ratio as a factor >= 1 either way (inf when <= 0)."""
    per_vertebra = (z_a - z_b) / (index_b - index_a)
    nominal = float(np.mean([nominal_step_mm(i) for i in range(min(index_a, index_b), max(index_a, index_b))]))
    factor = math.exp(abs(math.log(per_vertebra / nominal))) if per_vertebra > 0 else math.inf
    return per_vertebra, nominal, factor


def _spacing_cues(level: str, positions_mm: Mapping[str, float]) -> list[Cue]:
    """Per vertebral neighbour found (nearest above and below), how its distance per vertebra compares."""
    index = spine_index(level)
    if index is None or level not in positions_mm:
        return []
    named = {name: spine_index(name) for name in positions_mm if name != level}
    others = sorted((i, positions_mm[name], name) for name, i in named.items() if i is not None)
    above = [item for item in others if item[0] < index][-1:]
    below = [item for item in others if item[0] > index][:1]
    cues = []
    for other_index, other_z, name in above + below:
        steps = abs(other_index - index)
        per_vertebra, nominal, factor = _spacing(other_index, other_z, index, positions_mm[level])
        if per_vertebra <= 0:
            cues.append(Cue(f"wrong_side_{name}", math.inf, f"{level} lies on the wrong side of {name}"))
            continue
        spacing = f"{per_vertebra:.0f} mm per vertebra from {name} over {steps} (an adult's: ~{nominal:.0f})"
        cues.append(Cue(f"spacing_factor_{name}", factor, f"{level} lies {spacing}"))
    return cues


def _chain_cue(level: str, positions_mm: Mapping[str, float]) -> list[Cue]:
    """The worst distance per vertebra between two consecutive predicted levels other than this one: a model that
    skips or repeats a vertebra somewhere (T10 read on T9) names every level beyond that place one off, and this
    level's own neighbours may still be spaced as an adult's."""
    if spine_index(level) is None:
        return []
    named = sorted((i, positions_mm[name], name) for name in positions_mm if (i := spine_index(name)) is not None)
    worst = None
    for (upper, upper_z, upper_name), (lower, lower_z, lower_name) in zip(named, named[1:], strict=False):
        if level in (upper_name, lower_name):
            continue  # the spacing cue reads the level's own neighbours, at its own tolerance
        per_vertebra, nominal, factor = _spacing(upper, upper_z, lower, lower_z)
        if worst is None or factor > worst[0]:
            worst = (factor, per_vertebra, nominal, upper_name, lower_name)
    if worst is None:
        return []
    factor, per_vertebra, nominal, upper_name, lower_name = worst
    apart = f"{upper_name} and {lower_name} lie {per_vertebra:.0f} mm per vertebra apart (an adult's: ~{nominal:.0f})"
    return [Cue("chain_factor", factor, f"{apart}: the level names along the spine may be shifted")]


def _segmentation_cues(seg: Segmentation) -> list[Cue]:
    cues = []
    for label, name in enumerate(seg.classes):
        if label == 0 or seg.expected_dice is None or not np.isfinite(seg.expected_dice[label]):
            continue
        dice = float(seg.expected_dice[label])
        cues.append(Cue(f"expected_dice_{name}", dice, f"the segmentation expects {_words(name)} Dice {dice:.2f}"))
    if seg.shift_agreement is not None:
        value = seg.shift_agreement
        moved = "the segmentation changes when the slice moves by 3 % of the image"
        reason = f"{moved} (lowest tissue Dice {value:.2f} against it)"
        cues.append(Cue("shift_agreement", value, reason))
    for name, touches in seg.touching_edge.items():
        cues.append(Cue(f"edge_{name}", float(touches), f"{_words(name)} touches the edge of the field of view"))
    for label, name in enumerate(seg.classes):
        bounds = MUSCLE_HU if "muscle" in name else FAT_HU if "fat" in name else None
        values = np.asarray(seg.hu)[np.asarray(seg.labels) == label]
        if label == 0 or bounds is None or values.size == 0:
            continue
        mean = float(values.mean())
        outside = not bounds[0] <= mean <= bounds[1]
        reason = f"{_words(name)} mean {mean:.0f} HU lies outside {bounds[0]:.0f}..{bounds[1]:.0f} HU"
        cues.append(Cue(f"hu_{name}", float(outside), reason))
    if seg.pixel_spacing is not None:
        area = metal_area_mm2(seg.hu, seg.pixel_spacing)
        reason = f"metal on the slice ({area:.0f} mm² at {METAL_HU:.0f} HU or more): streaks change HU and labels"
        cues.append(Cue("metal", float(area >= METAL_AREA_MM2), reason))
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
    tolerances: Tolerances | None = None,
) -> Review:
    """Why a reader should check LEVEL of one series (each cue's reason when it speaks) and its confidence.

    evidence: the selection run's outputs for the series (every output level; None when no model chose the
    slice, as in a one-slice series); chosen_z_mm: the chosen slice's z; positions_mm: the predicted z of every
    level reported in the scan (level_presence.positions_in_scan; for the spacing cue); segmentation: the chosen
    slice's (for the expected-Dice, field-of-view and HU cues); count_reason: a reason from the lumbar count
    (vertebra_count.py), "" when it is five or unknown.
    Example: review_reasons(evidence, "L3", volume.z_mm, 10.0, 312.0).text
    """
    z_mm = np.asarray(z_mm, dtype=np.float64)
    cues = [] if evidence is None else _selection_cues(evidence, level, z_mm, threshold_mm, chosen_z_mm)
    cues += _spacing_cues(level, positions_mm or {})
    cues += _chain_cue(level, positions_mm or {})
    if segmentation is not None:
        cues += _segmentation_cues(segmentation)
    if count_reason:
        cues.append(Cue("count", 1.0, count_reason))
    return Review(cues, tolerances or Tolerances())

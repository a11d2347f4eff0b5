"""Does the review flag catch the wrong levels, and how often does it fire on right ones?

Usage:
    python -m benchmarks.review_flag --output DIR [--models MODELS] [--series 50] [--seeds 4] [--variants ...]
An L3 estimated in a series is *wrong* when its chosen slice lies more than 10 mm from the true L3, when the
lowest Dice of the three tissues on that slice against the phantom's true labels there is below 0.90, or when a
true tissue touches the field of view's edge (the scan cut the body, so the area is short whatever the Dice).
It is *flagged* when `L3_review` gives a reason (estimate/review.py). The other levels are scored on their
position alone (their segmentation is not scored: the demo's model is trained at L3), so there a flag counts when
a cue that reads the selection gives it. Targets (issue 24): the flag catches >= 95 % of the wrong levels and
fires on <= 10 % of the right ones; L3 is within 10 mm on >= 95 % of unflagged series; Dice >= 0.93 per tissue
on arms-down slices (judged on those whose series has no metal and no cut field of view, which change the slice's
own pixels and are scored in their own rows; every arms-down slice, and the unflagged ones, are printed as well).
"""

from __future__ import annotations

import argparse
import math
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from benchmarks.held_out import Cohort, add_arguments, estimated_cohorts, percent
from bodycomp_cli.core.metrics import dice_summary, segmentation_counts
from bodycomp_cli.estimate.review import Tolerances, parse_measures, review_from_measures
from bodycomp_cli.estimate.series import file_stem
from bodycomp_cli.phantoms import SeriesRenderer

OFF_MM = 10.0
DICE_FLOOR = 0.90
ARMS_DICE_GOAL = 0.93
# Variants that change the L3 slice's own pixels: an arms-down slice that also has them is scored for the arms
# goal apart (issue 24 asks Dice >= 0.93 on arms-down slices; metal streaks and a cut body have rows of their own).
PIXEL_VARIANTS = {"spinal_metal", "hip_metal", "fov_cut"}
SELECTION_CUES = {"position", "snap", "sharpness", "spacing", "count"}
TISSUES = ("muscle", "subcutaneous_fat", "visceral_fat")


def dice_per_tissue(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Dice of each tissue (NaN where neither mask holds it), by core/metrics: the one Dice of the project."""
    counts = segmentation_counts(predicted[None], truth[None], len(TISSUES) + 1)
    return dice_summary(counts.numpy()).per_slice[0]


@dataclass
class Scored:
    """One estimated level of one series, against the truth."""

    variant: str
    level: str
    error_mm: float
    dice: np.ndarray | None  # L3: per tissue
    cut: bool  # L3: a true tissue touches the field of view's edge
    measures: str  # the `<LEVEL>_review_cues` cell

    @property
    def why_wrong(self) -> list[str]:
        """Why it is wrong: "off" (> OFF_MM), "dice" (a tissue below DICE_FLOOR), "cut" (a tissue at the edge)."""
        low = self.dice is not None and np.isfinite(self.dice).any() and np.nanmin(self.dice) < DICE_FLOOR
        return [name for name, bad in (("off", self.error_mm > OFF_MM), ("dice", low), ("cut", self.cut)) if bad]

    @property
    def wrong(self) -> bool:
        return bool(self.why_wrong)

    def fired(self, tolerances: Tolerances) -> list[str]:
        cues = review_from_measures(self.measures, tolerances)
        return cues if self.level == "L3" else [cue for cue in cues if cue in SELECTION_CUES]


def score_cohorts(cohorts: list[Cohort]) -> list[Scored]:
    scored = []
    for cohort in cohorts:
        for series in cohort.truth:
            row = cohort.results.loc[series["series"]]
            params = cohort.params(series)
            for level in cohort.levels:
                true_z = series["levels_z_mm"].get(level)
                if true_z is None or row[f"{level}_reason"]:  # absent levels: absent_levels.py
                    continue
                chosen_z = float(row[f"{level}_z_mm"])
                dice, cut = None, False
                if level == "L3":
                    mask = np.load(cohort.estimate / "masks" / f"{file_stem(series['series'])}_L3.npy")
                    _, truth = SeriesRenderer(params).render(chosen_z)
                    dice = dice_per_tissue(mask, truth)
                    edge = np.concatenate([truth[0], truth[-1], truth[:, 0], truth[:, -1]])
                    cut = bool((edge > 0).any())
                error = abs(chosen_z - true_z)
                scored.append(Scored(cohort.variant(series), level, error, dice, cut, row[f"{level}_review_cues"]))
    return scored


def report(scored: list[Scored], tolerances: Tolerances) -> bool:
    """Print the tables; True when every target is met."""
    print(f"wrong: > {OFF_MM:g} mm off; at L3 also lowest tissue Dice < {DICE_FLOOR} or a tissue cut by the edge")
    met = True
    groups = {
        "L3 (every cue)": [s for s in scored if s.level == "L3"],
        "other levels (selection cues; position only)": [s for s in scored if s.level != "L3"],
    }
    for title, rows in groups.items():
        print(f"\n{title}")
        print(f"{'variant':16} {'levels':>6} {'wrong':>6} {'wrong levels caught':>22} {'right levels flagged':>22}")
        by_variant: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        for s in rows:  # a series with two variants counts in the row of each
            for variant in s.variant.split("+"):
                tally = by_variant[variant]
                tally[0 if s.wrong else 2] += 1
                tally[1 if s.wrong else 3] += bool(s.fired(tolerances))
        everything = [sum(bool(s.wrong) for s in rows), sum(bool(s.wrong and s.fired(tolerances)) for s in rows)]
        everything += [sum(not s.wrong for s in rows), sum(bool(not s.wrong and s.fired(tolerances)) for s in rows)]
        for variant, tally in sorted(by_variant.items()):
            n = tally[0] + tally[2]
            print(
                f"{variant:16} {n:6d} {tally[0]:6d} {percent(tally[1], tally[0]):>22} {percent(tally[3], tally[2]):>22}"
            )
        totals = everything
        n = totals[0] + totals[2]
        print(
            f"{'all':16} {n:6d} {totals[0]:6d} {percent(totals[1], totals[0]):>22} {percent(totals[3], totals[2]):>22}"
        )
        if title.startswith("L3"):
            caught = totals[0] == 0 or totals[1] >= 0.95 * totals[0]
            quiet = totals[2] > 0 and totals[3] <= 0.10 * totals[2]
            print(f"goal flag catches >= 95 % of wrong L3s: {'met' if caught else 'not met'}")
            print(f"goal flag fires on <= 10 % of right L3s: {'met' if quiet else 'not met'}")
            met &= caught and quiet
    l3 = [s for s in scored if s.level == "L3"]
    why = Counter(reason for s in l3 for reason in s.why_wrong)
    print("\nwhy L3s were wrong:", dict(why.most_common()))
    print("cues that fired on right L3s:", dict(Counter(c for s in l3 if not s.wrong for c in s.fired(tolerances))))
    missed = [s for s in l3 if s.wrong and not s.fired(tolerances)]
    for s in missed:
        print(f"  missed: {s.variant}: error {s.error_mm:.1f} mm, Dice {np.round(s.dice, 3)}, cut {s.cut}")
    unflagged = [s for s in l3 if not s.fired(tolerances)]
    within = sum(s.error_mm <= OFF_MM for s in unflagged)
    ok = bool(unflagged) and within >= 0.95 * len(unflagged)
    print(
        f"L3 within {OFF_MM:g} mm on unflagged series: {percent(within, len(unflagged))}: {'met' if ok else 'not met'}"
    )
    arms = [s for s in l3 if "arms_down" in s.variant.split("+") and s.dice is not None]
    alone = [s for s in arms if not PIXEL_VARIANTS & set(s.variant.split("+"))]
    for words, rows in (
        ("arms-down L3 slices", arms),
        ("arms-down L3 slices unflagged", [s for s in arms if not s.fired(tolerances)]),
    ):
        if rows:
            print(f"Dice on {words} ({len(rows)}), muscle / SAT / VAT: {_dice_words(rows)}")
    if alone:
        good = bool((_mean_dice(alone) >= ARMS_DICE_GOAL).all())
        words = f"arms-down L3 slices without {', '.join(sorted(PIXEL_VARIANTS))} (the goal's)"
        print(
            f"Dice on {words} ({len(alone)}), muscle / SAT / VAT: {_dice_words(alone)}: {'met' if good else 'not met'}"
        )
        met &= good
    return met and ok


def _mean_dice(rows: list[Scored]) -> np.ndarray:
    return np.nanmean(np.array([s.dice for s in rows]), axis=0)


def _dice_words(rows: list[Scored]) -> str:
    return " / ".join(f"{value:.3f}" for value in _mean_dice(rows))


# The values --tune tries for each tolerance, loosest first (inf: the cue never speaks).
GRID = {
    "position_mm": [math.inf, 60.0, 40.0, 30.0, 25.0, 20.0, 15.0, 12.5, 10.0, 7.5, 5.0],
    "snap_mm": [math.inf, 30.0, 25.0, 20.0, 15.0, 12.0, 10.0, 8.0, 6.0],
    "misfit": [math.inf, 0.4, 0.35, 0.3, 0.25, 0.2, 0.15, 0.1],
    "spacing_factor": [math.inf, 2.5, 2.0, 1.8, 1.6, 1.4, 1.3, 1.2],
    "expected_dice": [0.0, 0.8, 0.85, 0.88, 0.9, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97, 0.98],
}


def tune(scored: list[Scored], catch: float = 0.97) -> Tolerances:
    """Tolerances for the L3 flag, greedily: from every cue at its loosest, tighten one step at a time the cue that
    catches the most wrong L3s per right L3 it starts to flag, until `catch` of the wrong ones are flagged (the
    yes/no cues always speak). Run on a tuning cohort; measure the result on others."""
    l3 = [s for s in scored if s.level == "L3"]
    wrong, right = [s for s in l3 if s.wrong], [s for s in l3 if not s.wrong]
    steps = dict.fromkeys(GRID, 0)

    def tolerances(at: dict[str, int]) -> Tolerances:
        return Tolerances(**{name: GRID[name][k] for name, k in at.items()})

    def counts(at: dict[str, int]) -> tuple[int, int]:
        tol = tolerances(at)
        return sum(bool(s.fired(tol)) for s in wrong), sum(bool(s.fired(tol)) for s in right)

    caught, false = counts(steps)
    while caught < catch * len(wrong):
        best = None
        for name in GRID:
            if steps[name] + 1 >= len(GRID[name]):
                continue
            trial = {**steps, name: steps[name] + 1}
            more, extra = counts(trial)
            if more > caught and (best is None or (more - caught) / (extra - false + 0.5) > best[0]):
                best = ((more - caught) / (extra - false + 0.5), trial, more, extra)
        if best is None:  # no single step catches more: step the cue that costs least and look again
            options = [name for name in GRID if steps[name] + 1 < len(GRID[name])]
            if not options:
                break
            name = min(options, key=lambda n: counts({**steps, n: steps[n] + 1})[1])
            steps[name] += 1
            caught, false = counts(steps)
            continue
        _, steps, caught, false = best
    print(f"tuned on {len(l3)} L3s: catches {caught}/{len(wrong)} wrong, flags {false}/{len(right)} right")
    return tolerances(steps)


def print_measures(scored: list[Scored]) -> None:
    """Per selection cue, its measure's percentiles on levels within 10 mm, and its values on those further off:
    where a tolerance may sit (the greedy tune below sets the L3 segmentation cue; these are set by hand)."""
    for kind in ("position_mm", "snap_mm", "misfit", "spacing_factor"):
        right, off = [], []
        for s in scored:
            values = [cue.value for cue in parse_measures(s.measures) if cue.kind == kind]
            if values:
                (off if s.error_mm > OFF_MM else right).append(max(values))
        quantiles = np.quantile(right, [0.9, 0.95, 0.97, 0.99]) if right else []
        shown = " / ".join(f"{q:.3g}" for q in quantiles)
        far = sorted(round(v, 3) for v in off)
        print(f"{kind}: right levels ({len(right)}) q90 / q95 / q97 / q99 {shown}; off levels {far}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--tune", action="store_true", help="print the tolerances tuned on these cohorts")
    args = parser.parse_args()
    cohorts = estimated_cohorts(args)
    print(f"{len(cohorts)} cohort(s) of {args.series} series (seeds {', '.join(str(c.seed) for c in cohorts)})")
    scored = score_cohorts(cohorts)
    if args.tune:
        print_measures(scored)
    tolerances = tune(scored) if args.tune else Tolerances()
    print(f"tolerances: {tolerances}")
    raise SystemExit(0 if report(scored, tolerances) else 1)


if __name__ == "__main__":
    main()

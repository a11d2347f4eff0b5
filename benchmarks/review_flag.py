"""Does the review flag catch the wrong levels, and how often does it fire on right ones?

Usage:
    python benchmarks/review_flag.py --output DIR [--models MODELS] [--series 40] [--seeds 1] [--variants ...]
A level estimated in a series is wrong when its chosen slice lies more than 10 mm from the true level, or (at L3,
the segmentation model's level) when the lowest Dice of the three tissues on that slice, against the phantom's
true labels there, is below 0.90. It is flagged when `<LEVEL>_review` gives a reason (estimate/review.py).
Targets (issue 24): the flag catches >= 95 % of the wrong levels, and fires on <= 10 % of the right ones.
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict

import numpy as np

from benchmarks.held_out import add_arguments, estimated_cohorts, percent, series_index
from bodycomp_cli.core.metrics import dice_summary, segmentation_counts
from bodycomp_cli.estimate.review import cues_of
from bodycomp_cli.estimate.series import file_stem
from bodycomp_cli.phantoms import SeriesRenderer, series_params

OFF_MM = 10.0
SELECTION_CUES = {"position", "snap", "sharpness", "spacing", "count"}
DICE_FLOOR = 0.90
TISSUES = ("muscle", "subcutaneous_fat", "visceral_fat")


def lowest_dice(predicted: np.ndarray, truth: np.ndarray) -> float:
    """The lowest Dice over the tissues present in either mask (core/metrics: the one Dice of the project)."""
    counts = segmentation_counts(predicted[None], truth[None], len(TISSUES) + 1)
    scores = dice_summary(counts.numpy()).per_slice[0]
    return float(np.nanmin(scores)) if np.isfinite(scores).any() else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args()
    cohorts = estimated_cohorts(args)
    # variant -> [wrong, wrong flagged, right, right flagged]; why the right ones were flagged
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    # the level alone: more than 10 mm off, against the cues that read the selection (not the segmentation)
    placed: list[int] = [0, 0, 0, 0]
    l3_unflagged: list[float] = []
    false_reasons: Counter[str] = Counter()
    for cohort in cohorts:
        for series in cohort.truth:
            row = cohort.results.loc[series["series"]]
            params = series_params(cohort.seed, series_index(series), cohort.size)
            for level in cohort.levels:
                true_z = series["levels_z_mm"].get(level)
                if true_z is None or row[f"{level}_reason"]:  # absent levels: absent_levels.py
                    continue
                chosen_z = float(row[f"{level}_z_mm"])
                wrong = off = abs(chosen_z - true_z) > OFF_MM
                by_selection = bool(set(cues_of(row[f"{level}_review"])) & SELECTION_CUES)
                placed[0 if off else 2] += 1
                placed[1 if off else 3] += by_selection
                if level == "L3":
                    mask = np.load(cohort.estimate / "masks" / f"{file_stem(series['series'])}_L3.npy")
                    _, truth = SeriesRenderer(params).render(chosen_z)
                    wrong |= lowest_dice(mask, truth) < DICE_FLOOR
                flagged = bool(row[f"{level}_review"])
                if level == "L3" and not flagged:
                    l3_unflagged.append(abs(chosen_z - true_z))
                tally = counts[cohort.variant(series)]
                tally[0 if wrong else 2] += 1
                tally[1 if wrong else 3] += flagged
                if flagged and not wrong:
                    false_reasons.update(cues_of(row[f"{level}_review"]))
    print(f"{len(cohorts)} cohort(s) of {args.series} series; wrong: > {OFF_MM:g} mm off or L3 Dice < {DICE_FLOOR}")
    print(f"{'variant':12} {'wrong levels caught':>24} {'right levels flagged':>24}")
    totals = [0, 0, 0, 0]
    for variant, tally in sorted(counts.items()):
        totals = [a + b for a, b in zip(totals, tally, strict=True)]
        print(f"{variant:12} {percent(tally[1], tally[0]):>24} {percent(tally[3], tally[2]):>24}")
    print(f"{'all':12} {percent(totals[1], totals[0]):>24} {percent(totals[3], totals[2]):>24}")
    print(
        f"{'level only':12} {percent(placed[1], placed[0]):>24} {percent(placed[3], placed[2]):>24}"
        "  (> 10 mm off; flagged by the selection cues)"
    )
    within = sum(error <= OFF_MM for error in l3_unflagged)
    print(f"L3 within {OFF_MM:g} mm on unflagged series: {percent(within, len(l3_unflagged))}")
    print("cues that fired on right levels:", dict(false_reasons.most_common()))
    caught = totals[0] > 0 and totals[1] >= 0.95 * totals[0]
    quiet = totals[2] > 0 and totals[3] <= 0.10 * totals[2]
    print(f"goal flag catches >= 95 % of wrong levels: {'met' if caught else 'not met'}")
    print(f"goal flag fires on <= 10 % of right ones: {'met' if quiet else 'not met'}")


if __name__ == "__main__":
    main()

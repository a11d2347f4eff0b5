"""Levels outside the scan: are they reported absent (`not in scan`), and are present ones ever called absent?

Usage:
    python -m benchmarks.absent_levels --output DIR [--models MODELS] [--series 40] [--seeds 1] [--variants ...]
Targets (issue 24): 100 % of absent levels reported absent; <= 2 % of present levels wrongly called absent.
Also printed: results.csv's `lumbar_vertebrae` against each series' true lumbar count (phantoms.json), which
issue 24 asks for without a target.
A level counts as absent when its vertebral centre lies more than one threshold (T mm) beyond the first or last
slice, present when it lies inside the scan; a centre within T outside is counted in neither (the estimator's
margin, T/2, lies in that band: a level it keeps there gets the end slice).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict

import numpy as np

from benchmarks.held_out import add_arguments, estimated_cohorts, models_folder, percent
from bodycomp_cli.estimate.level_presence import NOT_IN_SCAN


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args()
    cohorts = estimated_cohorts(args)
    threshold = float(json.loads((models_folder(args) / "select" / "config.json").read_text())["threshold"])
    # variant -> [absent, reported absent, present, wrongly absent]; the same per level
    by_variant: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    by_level: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    missed = []
    counts: Counter[tuple[int, str]] = Counter()  # (true lumbar count, count read or "blank")
    for cohort in cohorts:
        for series in cohort.truth:
            row = cohort.results.loc[series["series"]]
            counts[series["variants"]["lumbar_count"], row["lumbar_vertebrae"] or "blank"] += 1
            params = cohort.params(series)
            with np.load(cohort.folder / "phantoms" / "series" / f"{series['series']}.npz") as data:
                z = data["z_mm"]
            for level in cohort.levels:
                true_z = params.spine.z_of(level)
                said_absent = row[f"{level}_reason"] == NOT_IN_SCAN
                absent = true_z < z.min() - threshold or true_z > z.max() + threshold
                tallies = [by_variant[name] for name in cohort.variant(series).split("+")] + [by_level[level]]
                for tally in tallies:
                    if absent:
                        tally[0] += 1
                        tally[1] += said_absent
                    elif z.min() <= true_z <= z.max():
                        tally[2] += 1
                        tally[3] += said_absent
                if absent and not said_absent:
                    beyond = max(z.min() - true_z, true_z - z.max())
                    missed.append(f"{cohort.seed}/{series['series']} {level} ({beyond:.0f} mm beyond the scan)")
    print(f"{len(cohorts)} cohort(s) of {args.series} series, T = {threshold:g} mm")
    totals = [0, 0, 0, 0]
    for name, table in (("variant", by_variant), ("level", by_level)):
        print(f"\n{name:16} {'absent reported absent':>26} {'present wrongly absent':>26}")
        totals = [0, 0, 0, 0]
        for key, tally in sorted(table.items()):
            totals = [a + b for a, b in zip(totals, tally, strict=True)]
            print(f"{key:16} {percent(tally[1], tally[0]):>26} {percent(tally[3], tally[2]):>26}")
        if name == "level":  # a series with two variants counts in the row of each, so only levels sum up
            print(f"{'all':16} {percent(totals[1], totals[0]):>26} {percent(totals[3], totals[2]):>26}")
    for line in missed:
        print("  not reported absent:", line)
    print("\nlumbar count read (lumbar_vertebrae) per true count:")
    for true in sorted({true for true, _ in counts}):
        read = {said: n for (t, said), n in sorted(counts.items(), key=str) if t == true}
        print(f"  {true} lumbar vertebrae ({sum(read.values())} series): {read}")
    met_absent = totals[0] > 0 and totals[1] == totals[0]
    met_present = totals[2] > 0 and totals[3] <= 0.02 * totals[2]
    print(f"goal 100 % of absent levels reported absent: {'met' if met_absent else 'not met'}")
    print(f"goal <= 2 % of present levels called absent: {'met' if met_present else 'not met'}")
    raise SystemExit(0 if met_absent and met_present else 1)


if __name__ == "__main__":
    main()

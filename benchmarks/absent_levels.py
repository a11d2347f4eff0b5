"""Levels outside the scan: are they reported absent (`not in scan`), and are present ones ever called absent?

Usage:
    python benchmarks/absent_levels.py --output DIR [--models MODELS] [--series 40] [--seeds 1] [--variants ...]
Targets (issue 24): 100 % of absent levels reported absent; <= 2 % of present levels wrongly called absent.
A level counts as absent when its vertebral centre lies more than one threshold (T mm) beyond the first or last
slice, present when it lies inside the scan; a centre within T outside is the estimator's margin (it still gets
the end slice) and is counted in neither.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import numpy as np

from benchmarks.held_out import add_arguments, estimated_cohorts, models_folder, percent, series_index
from bodycomp_cli.estimate.level_presence import NOT_IN_SCAN
from bodycomp_cli.phantoms import series_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args()
    cohorts = estimated_cohorts(args)
    threshold = float(json.loads((models_folder(args) / "select" / "config.json").read_text())["threshold"])
    # (variant, level) -> [absent, reported absent, present, wrongly absent]
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for cohort in cohorts:
        for series in cohort.truth:
            row = cohort.results.loc[series["series"]]
            params = series_params(cohort.seed, series_index(series), cohort.size)
            with np.load(cohort.folder / "phantoms" / "series" / f"{series['series']}.npz") as data:
                z = data["z_mm"]
            for level in cohort.levels:
                true_z = params.spine.z_of(level)
                said_absent = row[f"{level}_reason"] == NOT_IN_SCAN
                tally = counts[(cohort.variant(series), level)]
                if true_z < z.min() - threshold or true_z > z.max() + threshold:
                    tally[0] += 1
                    tally[1] += said_absent
                elif z.min() <= true_z <= z.max():
                    tally[2] += 1
                    tally[3] += said_absent
    print(f"{len(cohorts)} cohort(s) of {args.series} series, T = {threshold:g} mm")
    print(f"{'variant':12} {'level':5} {'absent reported absent':>26} {'present wrongly absent':>26}")
    totals = [0, 0, 0, 0]
    for (variant, level), tally in sorted(counts.items()):
        totals = [a + b for a, b in zip(totals, tally, strict=True)]
        print(f"{variant:12} {level:5} {percent(tally[1], tally[0]):>26} {percent(tally[3], tally[2]):>26}")
    print(f"{'all':12} {'all':5} {percent(totals[1], totals[0]):>26} {percent(totals[3], totals[2]):>26}")
    met_absent = totals[0] > 0 and totals[1] == totals[0]
    met_present = totals[2] > 0 and totals[3] <= 0.02 * totals[2]
    print(f"goal 100 % of absent levels reported absent: {'met' if met_absent else 'not met'}")
    print(f"goal <= 2 % of present levels called absent: {'met' if met_present else 'not met'}")


if __name__ == "__main__":
    main()

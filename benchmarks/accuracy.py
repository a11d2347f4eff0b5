"""Accuracy on phantoms with a longer training than the demo: the table of docs/performance.md.

Usage (also `make bench-accuracy`):
    python benchmarks/accuracy.py [--output DIR] [--gpus N] [--overwrite] [--tiny]
It runs the demo's pipeline (phantoms -> prepare -> train-seg / train-select -> evaluate / estimate on
held-out series) with more series, larger images and more steps, then prints the table and the goals.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from dataclasses import replace
from pathlib import Path

from bodycomp_cli.demo import FAST, FULL, TISSUES, run_demo

DEFAULT_OUTPUT = Path(tempfile.gettempdir()) / "bodycomp-bench-accuracy"

# Goals from the best published tools on real CT (Dice 0.95-0.98; median L3 error about 1 mm).
DICE_GOAL = 0.97
WITHIN_10MM_GOAL = 0.95

LEVELS = ("L3", "T5", "T8", "T10", "T12", "L1", "L5")  # every level the phantoms carry (L3 first: estimate's)

ACCURACY = replace(
    FULL,
    series=120,  # 24 held-out test series: 95 % within 10 mm then allows one miss per level
    seg_slices=8,
    seg_epochs=12,
    seg_steps=40,
    select_size=96,
    select_epochs=20,
    select_steps=60,
    levels=LEVELS,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=None, help=f"default: {DEFAULT_OUTPUT} (replaced each run)")
    parser.add_argument("--gpus", type=int, default=None, help="0 = CPU; default: CUDA when available")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="smoke mode: the demo's --fast settings")
    args = parser.parse_args()
    settings = replace(replace(FAST, levels=LEVELS) if args.tiny else ACCURACY, gpus=args.gpus)
    output = args.output or DEFAULT_OUTPUT
    summary = run_demo(output, overwrite=args.overwrite or args.output is None, settings=settings)
    spacing = _median_test_spacing(output)
    goals = {f"Dice >= {DICE_GOAL} per tissue": all((summary["dice"][t] or 0) >= DICE_GOAL for t in TISSUES)}
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; median test slice spacing {spacing:.2f} mm")
    print("level  series  median mm  median slices  within 5 mm  within 10 mm")
    for level in settings.levels:
        mm, slices = summary["slice_error_mm"][level], summary["slice_error_slices"][level]
        print(
            f"{level:5}  {mm['series'] or 0:6}  {_number(mm['median'], '{:9.2f}')}"
            f"  {_number(slices['median'], '{:13.1f}')}"
            f"  {_number(mm['within_5mm'], '{:11.0%}')}  {_number(mm['within_10mm'], '{:12.0%}')}"
        )
        # One slice spacing, each series its own: the median error in slices of that series' spacing.
        goals[f"{level} median error <= 1 slice spacing"] = slices["median"] is not None and slices["median"] <= 1.0
        goals[f"{level} >= {WITHIN_10MM_GOAL:.0%} of series within 10 mm"] = (
            mm["within_10mm"] or 0
        ) >= WITHIN_10MM_GOAL
    print(f"time: {summary['seconds']['total']:.0f} s")
    for goal, met in goals.items():
        print(f"goal {goal}: {'met' if met else 'not met'}")
    (output / "goals.json").write_text(json.dumps(goals, indent=1) + "\n")


def _number(value: float | None, pattern: str) -> str:
    return pattern.format(value) if value is not None else "n/a"


def _median_test_spacing(output: Path) -> float:
    import statistics

    runs = json.loads((output / "phantoms" / "phantoms.json").read_text())["series"]
    return statistics.median(s["slice_spacing_mm"] for s in runs if s["split"] == "test")


if __name__ == "__main__":
    main()
